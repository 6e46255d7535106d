"""Safe parsing of XML that came from outside: no DTDs, no entities, no network.

Every byte that arrives from the network, a file or a package goes through `parse`. lxml is
configured so that a DOCTYPE is refused outright (which rules out external entities and
entity-expansion bombs), nothing is fetched, and documents are bounded in size and depth.
"""

from __future__ import annotations

from typing import IO

from lxml import etree

from sdp.errors import XmlSecurityError

#: Larger documents are refused before parsing. A business message or receipt is a few KB;
#: a SOAP envelope without its attachment stays far below this.
MAX_XML_BYTES = 16 * 1024 * 1024
#: Deepest element nesting accepted; SDP documents nest fewer than 15 levels.
MAX_DEPTH = 64


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
        collect_ids=False,
    )


def parse(source: bytes | str | IO[bytes], *, what: str = "XML document",
          max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse untrusted XML and return its root element, or raise `XmlSecurityError`.

    `what` names the input in error messages ("transport receipt", "manifest.xml", ...).
    """
    if isinstance(source, str):
        data = source.encode("utf-8")
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise XmlSecurityError(f"larger than the limit of {max_bytes} bytes", subject=what)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlSecurityError(f"not well-formed XML: {exc}", subject=what) from exc
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.system_url or tree.docinfo.public_id:
        raise XmlSecurityError("a DOCTYPE is not allowed", subject=what)
    for node in root.iter():
        if isinstance(node, etree._Entity):
            raise XmlSecurityError("entity references are not allowed", subject=what)
    _check_depth(root, what)
    return root


def _check_depth(root: etree._Element, what: str) -> None:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise XmlSecurityError(f"nested deeper than {MAX_DEPTH} elements", subject=what)
        stack.extend((child, depth + 1) for child in node)
