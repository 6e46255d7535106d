"""The official artifacts on disk, and validation against the official XSDs.

The XSDs and CA certificates are pinned in `schemas/lock.toml` and fetched by
`python codegen.py sync`; they are never committed. `artifact()` is the one place that finds
them, so a missing file always produces the same error with the same remedy.

Validation uses libxml2 (through lxml) with every schema compiled once per process into a
single combined schema, and without network access. libxml2 rather than a strict XSD 1.0
engine because the broker's own envelopes carry `ec:InclusiveNamespaces PrefixList=""`, an
empty NMTOKENS list that strict engines reject and libxml2 accepts (DIGEST 15 item 32); we
accept it on input and never emit it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from lxml import etree

from sdp import xmlparse
from sdp.errors import SchemaMissingError, SchemaValidationError

_CHECKOUT_DIR = Path(__file__).resolve().parents[1] / "schemas" / "official"

#: Namespaces (DIGEST 0.1).
NS_SDP = "http://begrep.difi.no/sdp/schema_v10"
NS_LENKE = "http://begrep.difi.no/sdp/utvidelser/lenke"
NS_BEVIS = "http://begrep.difi.no/sdp/utvidelser/bevis"
NS_ARRANGEMENT = "http://begrep.difi.no/sdp/utvidelser/arrangement"
NS_SBDH = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_EBMS = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"
NS_EBBP = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0"
NS_ASIC = "http://uri.etsi.org/2918/v1.2.1#"
NS_XADES = "http://uri.etsi.org/01903/v1.3.2#"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XENC = "http://www.w3.org/2001/04/xmlenc#"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_EC = "http://www.w3.org/2001/10/xml-exc-c14n#"
NS_XLINK = "http://www.w3.org/1999/xlink"

#: The prefixes we write. `ds` for xmldsig as every SDP example does.
NS_MAP: dict[str, str] = {
    "sdp": NS_SDP,
    "lenke": NS_LENKE,
    "bevis": NS_BEVIS,
    "arrangement": NS_ARRANGEMENT,
    "sbdh": NS_SBDH,
    "env": NS_SOAP12,
    "eb": NS_EBMS,
    "ebbp": NS_EBBP,
    "asic": NS_ASIC,
    "xades": NS_XADES,
    "ds": NS_DS,
    "xenc": NS_XENC,
    "wsse": NS_WSSE,
    "wsu": NS_WSU,
    "ec": NS_EC,
    "xlink": NS_XLINK,
}

#: Every schema the combined validator imports (paths relative to the spec root).
_VALIDATION_SOURCES: dict[str, str] = {
    NS_SDP: "xsd/sdp.xsd",
    NS_LENKE: "xsd/utvidelser/lenke.xsd",
    NS_BEVIS: "xsd/utvidelser/bevis.xsd",
    NS_ARRANGEMENT: "xsd/utvidelser/arrangement.xsd",
    NS_SBDH: "xsd/SBDH20040506-02/StandardBusinessDocumentHeader.xsd",
    NS_SOAP12: "xsd/w3/soap-envelope.xsd",
    NS_EBMS: "xsd/ebxml/ebms-header-3_0-200704.xsd",
    NS_EBBP: "xsd/ebxml/ebbp-signals-2.0.xsd",
    NS_ASIC: "xsd/asic-e/ts_102918v010201.xsd",
    NS_XADES: "xsd/etsi/XAdES.xsd",
    NS_WSSE: "xsd/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    NS_WSU: "xsd/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    NS_EC: "xsd/w3/exc-c14n.xsd",
    NS_DS: "xsd/w3/xmldsig-core-schema.xsd",
}

#: Root elements we recognise as documents, and the name of the schema they belong to.
DOCUMENT_ROOTS: dict[tuple[str, str], str] = {
    (NS_SDP, "digitalPost"): "sdp.xsd",
    (NS_SDP, "flyttetDigitalPost"): "sdp.xsd",
    (NS_SDP, "kvittering"): "sdp.xsd",
    (NS_SDP, "feil"): "sdp.xsd",
    (NS_SDP, "manifest"): "sdp.xsd",
    (NS_LENKE, "lenke"): "utvidelser/lenke.xsd",
    (NS_BEVIS, "bevis"): "utvidelser/bevis.xsd",
    (NS_ARRANGEMENT, "arrangement"): "utvidelser/arrangement.xsd",
    (NS_SBDH, "StandardBusinessDocument"): "SBDH 2004-05-06 (+ sdp.xsd payload)",
    (NS_SBDH, "StandardBusinessDocumentHeader"): "SBDH 2004-05-06",
    (NS_SOAP12, "Envelope"): "SOAP 1.2 + ebMS 3.0 + WS-Security (+ SBD payload)",
    (NS_EBMS, "Messaging"): "ebMS 3.0 header",
    (NS_ASIC, "XAdESSignatures"): "ASiC ts_102918 + XAdES 1.3.2",
    (NS_ASIC, "ASiCManifest"): "ASiC ts_102918",
}


def schema_dir() -> Path:
    """Where the synced official artifacts live: $SDP_SCHEMA_DIR or schemas/official."""
    env = os.environ.get("SDP_SCHEMA_DIR")
    return Path(env) if env else _CHECKOUT_DIR


def artifact(relative_path: str) -> Path:
    """The synced copy of an official file, by its path relative to the spec root.

    Raises `SchemaMissingError` (with the command that fixes it) if it is not there.
    """
    path = schema_dir() / relative_path
    if not path.is_file():
        raise SchemaMissingError(
            f"not found at {path}; run `python codegen.py sync` (or set SDP_SCHEMA_DIR)",
            subject=relative_path,
        )
    return path


@functools.cache
def _combined_schema() -> etree.XMLSchema:
    imports = "\n".join(
        f'  <xsd:import namespace="{ns}" schemaLocation="{artifact(path).as_uri()}"/>'
        for ns, path in _VALIDATION_SOURCES.items()
    )
    driver = (
        '<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'targetNamespace="urn:sdp:validation:driver">\n' + imports + "\n</xsd:schema>"
    )
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.fromstring(driver.encode(), parser))


_PREFIXES = {ns: prefix for prefix, ns in NS_MAP.items()}


def _readable_path(root: etree._Element, path: str | None) -> str | None:
    """Turn libxml2's `/*/*[2]` into `/sdp:digitalPost/sdp:mottaker` for humans."""
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return path
    if not isinstance(found, list) or not found or not isinstance(found[0], etree._Element):
        return path
    steps: list[str] = []
    node: etree._Element | None = found[0]
    while node is not None:
        qn = etree.QName(node)
        prefix = _PREFIXES.get(qn.namespace or "")
        name = f"{prefix}:{qn.localname}" if prefix else qn.localname
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/" + "/".join(reversed(steps))


@dataclass(frozen=True)
class ValidDocument:
    """What `validate` found: the root element and the schema it conforms to."""

    namespace: str
    local_name: str
    schema: str

    @property
    def root(self) -> str:
        return f"{{{self.namespace}}}{self.local_name}"


def validate(
    xml: bytes | str | Path | IO[bytes] | etree._Element, *, what: str | None = None
) -> ValidDocument:
    """Validate a document against the official schema its root belongs to.

    Accepts bytes, a path, a binary file, or an already parsed element. Raises
    `SchemaValidationError` listing every violation with its element path; untrusted bytes go
    through the safe parser first (no DTD, no entities, no network).
    """
    if isinstance(xml, etree._Element):
        root = xml
        what = what or "XML document"
    elif isinstance(xml, Path):
        what = what or str(xml)
        root = xmlparse.parse(xml.read_bytes(), what=what)
    else:
        what = what or "XML document"
        root = xmlparse.parse(xml, what=what)
    qname = etree.QName(root)
    key = (qname.namespace or "", qname.localname)
    schema_name = DOCUMENT_ROOTS.get(key)
    if schema_name is None:
        raise SchemaValidationError(
            f"root element {root.tag} is not a document of any SDP schema",
            subject=what,
            violations=[(f"/{root.tag}", "unknown root element")],
        )
    schema = _combined_schema()
    if not schema.validate(root):
        violations = [
            (_readable_path(root, entry.path) or f"line {entry.line}",
             f"line {entry.line}: {entry.message}")
            for entry in cast("list[etree._LogEntry]", list(schema.error_log))  # type: ignore[call-overload]
        ]
        summary = "; ".join(f"{p}: {m}" for p, m in violations[:3])
        more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
        raise SchemaValidationError(
            f"invalid against {schema_name}: {summary}{more}",
            subject=what,
            violations=violations,
        )
    return ValidDocument(key[0], key[1], schema_name)
