"""`META-INF/signatures.xml`: the XAdES signature over every file of the package (DIGEST 4.3).

The layout copies the official example `eksempler/post.asice.zip` element for element: the
same Ids (`Signature`, `ID_<n>`, `SignedProperties`), the same default namespaces and the
JAXB-style `ns2` prefix for ds inside QualifyingProperties. Ids are positional, never random,
and RSA PKCS#1 v1.5 is deterministic, so equal inputs give byte-identical output.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from lxml import etree

from sdp import xmldsig as ds
from sdp.certificates import validate_path
from sdp.errors import (
    DigestMismatchError,
    InputError,
    ReferenceMismatchError,
    SigningCertificateError,
)
from sdp.keys import SigningIdentity
from sdp.package.entries import SignedEntry
from sdp.xmldsig import SignatureProfileError
from sdp.xmlparse import parse

#: `ds:Reference/@Type` of the SignedProperties reference (XAdES 1.3.2).
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
SIGNATURES_XML = "META-INF/signatures.xml"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>'
#: RFC 3986 pchar plus "/", minus ":" (a colon in the first segment would read as a scheme).
_URI_SAFE = "/!$&'()*+,;=@-._~"
_SIGNATURE_ID = "Signature"
_SIGNED_PROPERTIES_ID = "SignedProperties"


def _x(local: str) -> str:
    return f"{{{ds.XADES_NS}}}{local}"


def _d(local: str) -> str:
    return f"{{{ds.DS_NS}}}{local}"


def entry_uri(name: str) -> str:
    """The Reference URI for a zip entry name, percent-encoded where needed (DIGEST 15 item 22)."""
    return quote(name, safe=_URI_SAFE)


def issuer_name(name: x509.Name) -> str:
    """RFC 2253 style with ", " separators, as the example writes X509IssuerName (DIGEST 4.3)."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def _signing_time_text(when: dt.datetime) -> str:
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def sign(entries: Sequence[SignedEntry], signer: SigningIdentity, signing_time: dt.datetime,
         *, signed_info_c14n: str = ds.C14N11,
         extra_certificates: Sequence[x509.Certificate] = ()) -> bytes:
    """Build `META-INF/signatures.xml` for the package files `entries` (DIGEST 4.3).

    KeyInfo carries `signer.certificates` (leaf, then intermediates) followed by
    `extra_certificates`: pass the root there to include "every certificate up to and
    including a trusted root" as DIGEST 4.3 (6.2.1) asks.
    """
    if signed_info_c14n not in (ds.C14N11, ds.C14N10):
        raise InputError("SignedInfo canonicalization must be C14N 1.1 or 1.0 (DIGEST 4.3)",
                         subject=signed_info_c14n)
    if signing_time.tzinfo is None:
        raise InputError("must be timezone-aware", subject="signing_time")
    if not entries:
        raise InputError("nothing to sign", subject=SIGNATURES_XML)
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise InputError("file listed twice", subject=entry.name)
        if entry.name.startswith("META-INF/"):
            raise InputError("files in META-INF/ are not signed (DIGEST 4.1)", subject=entry.name)
        if len(entry.sha256) != 32:
            raise InputError("sha256 must be 32 bytes", subject=entry.name)
        seen.add(entry.name)

    root = etree.Element(f"{{{ds.ASIC_NS}}}XAdESSignatures", nsmap=ds.ns_map({None: ds.ASIC_NS}))
    sig = ds.new_signature(root, id=_SIGNATURE_ID)
    signed_info = ds.add_signed_info(sig, c14n=ds.Transform(signed_info_c14n))
    for i, entry in enumerate(entries):
        # DIGEST 4.3 (6.2.4): file references have no transforms; digest of the raw bytes.
        ds.add_reference(signed_info, uri=entry_uri(entry.name), digest_value=entry.sha256,
                         id=f"ID_{i}")
    ds.add_key_info(sig, [*signer.certificates, *extra_certificates])

    obj = etree.SubElement(sig, _d("Object"))
    qp = etree.SubElement(obj, _x("QualifyingProperties"),
                          nsmap=ds.ns_map({None: ds.XADES_NS, "ns2": ds.DS_NS}))
    qp.set("Target", f"#{_SIGNATURE_ID}")
    sp = etree.SubElement(qp, _x("SignedProperties"), Id=_SIGNED_PROPERTIES_ID)
    ssp = etree.SubElement(sp, _x("SignedSignatureProperties"))
    etree.SubElement(ssp, _x("SigningTime")).text = _signing_time_text(signing_time)
    cert_el = etree.SubElement(etree.SubElement(ssp, _x("SigningCertificate")), _x("Cert"))
    cert_digest = etree.SubElement(cert_el, _x("CertDigest"))
    # DIGEST 0.2 / 4.3 (5.1): CertDigest is SHA-1, the one place SHA-1 is allowed.
    etree.SubElement(cert_digest, _d("DigestMethod"), Algorithm=ds.SHA1)
    etree.SubElement(cert_digest, _d("DigestValue")).text = ds.b64(ds.digest(
        signer.certificate.public_bytes(serialization.Encoding.DER), ds.SHA1))
    issuer_serial = etree.SubElement(cert_el, _x("IssuerSerial"))
    etree.SubElement(issuer_serial, _d("X509IssuerName")).text = issuer_name(
        signer.certificate.issuer)
    etree.SubElement(issuer_serial, _d("X509SerialNumber")).text = str(
        signer.certificate.serial_number)
    sdop = etree.SubElement(sp, _x("SignedDataObjectProperties"))
    for i, entry in enumerate(entries):
        # DIGEST 4.3 (6.3.3): only MimeType and @ObjectReference.
        dof = etree.SubElement(sdop, _x("DataObjectFormat"), ObjectReference=f"#ID_{i}")
        etree.SubElement(dof, _x("MimeType")).text = entry.mime_type

    # DIGEST 4.3 (6.2.4) / 4.4: inclusive C14N 1.0 of SignedProperties in its context.
    sp_transforms = (ds.Transform(ds.C14N10),)
    template = ds.Reference(f"#{_SIGNED_PROPERTIES_ID}", ds.SHA256, b"", sp_transforms)
    ds.add_reference(signed_info, uri=f"#{_SIGNED_PROPERTIES_ID}", type=SIGNED_PROPERTIES_TYPE,
                     transforms=sp_transforms,
                     digest_value=ds.reference_digest(template, sp, signature=sig))
    ds.add_signature_value(sig, signer.key)
    return _XML_DECLARATION + etree.tostring(root, encoding="UTF-8", xml_declaration=False)


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class XadesReference:
    """One signed file as the verified signature describes it."""

    name: str
    uri: str
    id: str | None
    mime_type: str
    sha256: bytes


@dataclass(frozen=True)
class XadesResult:
    """What a verified signatures.xml says, for the caller's own checks (orgnr, time)."""

    signer: x509.Certificate
    #: Every certificate in KeyInfo, in document order (the signer first).
    certificates: tuple[x509.Certificate, ...]
    #: The validated path signer -> trust anchor; None when no trust store was given.
    chain: tuple[x509.Certificate, ...] | None
    signing_time: dt.datetime
    references: tuple[XadesReference, ...]
    canonicalization: str


def verify(signatures_xml: bytes, entries: Mapping[str, bytes], *,
           at: dt.datetime | None = None,
           trust: Sequence[x509.Certificate] | None = None,
           intermediates: Sequence[x509.Certificate] = ()) -> XadesResult:
    """Verify `META-INF/signatures.xml` against the package's files.

    `entries` maps each zip entry name to the SHA-256 of its content; names under META-INF/
    are ignored. With `trust`, the signer's path (KeyInfo certificates plus `intermediates`)
    must reach one of those anchors at `at` (default: now); without it only the signature
    itself is checked and the caller must decide about the signer.
    """
    root = parse(signatures_xml, what=SIGNATURES_XML)
    if root.tag != f"{{{ds.ASIC_NS}}}XAdESSignatures":
        raise SignatureProfileError(f"root is {root.tag}, not asic:XAdESSignatures",
                                    subject=SIGNATURES_XML)
    sigs = [c for c in root if isinstance(c.tag, str)]
    if len(sigs) != 1 or sigs[0].tag != _d("Signature"):
        # DIGEST 4.1 (8.3.1): exactly one signature.
        raise SignatureProfileError("must hold exactly one ds:Signature", subject=SIGNATURES_XML)
    sig = sigs[0]
    info = ds.parse_signed_info(sig, ds.XADES_PROFILE)

    certs = ds.certificates_from_key_info(sig)
    if not certs:
        raise SignatureProfileError("no X509Certificate in KeyInfo", subject="ds:KeyInfo")
    # ASiC/XAdES convention, and the example: the signing certificate comes first. The
    # SigningCertificate property, checked below, must then describe exactly this one.
    leaf = certs[0]
    ds.verify_signature_value(sig, info, leaf.public_key())

    sp_refs = [r for r in info.references if r.type == SIGNED_PROPERTIES_TYPE]
    if len(sp_refs) != 1:
        raise SignatureProfileError(f"{len(sp_refs)} SignedProperties references, expected 1",
                                    subject="ds:SignedInfo")
    file_refs = [r for r in info.references if r.type != SIGNED_PROPERTIES_TYPE]
    names = _match_references(file_refs, entries)

    for ref, name in zip(file_refs, names, strict=True):
        if ref.transforms:
            raise SignatureProfileError("file references must have no transforms "
                                        "(DIGEST 4.3)", subject=ref.name)
        if ref.digest_value != entries[name]:
            raise DigestMismatchError("content does not match the signed SHA-256", subject=name)

    sp = _signed_properties(root, sig, sp_refs[0])
    ds.verify_reference(sp_refs[0], sp, signature=sig, subject="xades:SignedProperties")

    signing_time = _signing_time(sp)
    _check_signing_certificate(sp, leaf)
    mime_types = _mime_types(sp)
    references = []
    for ref, name in zip(file_refs, names, strict=True):
        key = f"#{ref.id}" if ref.id else None
        if key is None or key not in mime_types:
            raise SignatureProfileError("no DataObjectFormat for this reference", subject=ref.name)
        references.append(XadesReference(name, ref.uri or "", ref.id, mime_types.pop(key),
                                         ref.digest_value))
    if mime_types:
        raise SignatureProfileError("DataObjectFormat points at no file reference",
                                    subject=next(iter(mime_types)))

    chain = None
    if trust is not None:
        when = at or dt.datetime.now(dt.UTC)
        chain = validate_path(leaf, [*certs[1:], *intermediates], trust, when)
    return XadesResult(leaf, tuple(certs), chain, signing_time, tuple(references),
                       info.canonicalization.algorithm)


def _match_references(refs: Sequence[ds.Reference], entries: Mapping[str, bytes]) -> list[str]:
    """Entry name per file reference; every package file exactly once (DIGEST 4.1 8.2, 4.3)."""
    expected = {n for n in entries if not n.startswith("META-INF/")}
    names: list[str] = []
    for ref in refs:
        uri = ref.uri or ""
        name = uri if uri in entries else unquote(uri)
        if name.startswith("META-INF/"):
            raise ReferenceMismatchError("references a file inside META-INF/", subject=ref.name)
        if name not in expected:
            raise ReferenceMismatchError("points at nothing in the package", subject=ref.name)
        if name in names:
            raise ReferenceMismatchError("file is referenced more than once", subject=name)
        names.append(name)
    missing = sorted(expected.difference(names))
    if missing:
        raise ReferenceMismatchError("file in the package is not signed", subject=missing[0])
    return names


def _signed_properties(root: etree._Element, sig: etree._Element,
                       ref: ds.Reference) -> etree._Element:
    """The SignedProperties the reference points at, which must be this signature's own."""
    uri = ref.uri or ""
    if not uri.startswith("#"):
        raise SignatureProfileError("SignedProperties must be referenced by #Id", subject=ref.name)
    sp = ds.find_by_id(root, uri[1:])
    qp = sp.getparent()
    obj = qp.getparent() if qp is not None else None
    if (sp.tag != _x("SignedProperties") or qp is None or qp.tag != _x("QualifyingProperties")
            or obj is None or obj.tag != _d("Object") or obj.getparent() is not sig):
        raise SignatureProfileError("does not point at this signature's xades:SignedProperties",
                                    subject=ref.name)
    target = qp.get("Target")
    if sig.get("Id") is None or target != f"#{sig.get('Id')}":
        raise SignatureProfileError(f"Target {target!r} is not this signature",
                                    subject="xades:QualifyingProperties")
    return sp


def _one(parent: etree._Element, path: str, what: str) -> etree._Element:
    found = parent.find(path)
    if found is None:
        raise SignatureProfileError("missing", subject=what)
    return found


def _signing_time(sp: etree._Element) -> dt.datetime:
    el = _one(sp, f"{_x('SignedSignatureProperties')}/{_x('SigningTime')}", "xades:SigningTime")
    try:
        when = dt.datetime.fromisoformat((el.text or "").strip())
    except ValueError:
        raise SignatureProfileError(f"not a dateTime: {el.text!r}",
                                    subject="xades:SigningTime") from None
    if when.tzinfo is None:
        raise SignatureProfileError("has no time zone", subject="xades:SigningTime")
    return when


_NAME_OVERRIDES = {
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "ORGANIZATIONIDENTIFIER": NameOID.ORGANIZATION_IDENTIFIER,
}


def _same_name(text: str, name: x509.Name) -> bool:
    """Does an X509IssuerName string denote `name`? Tolerates ", " versus "," separators."""
    text = text.strip()
    if text in (issuer_name(name), name.rfc4514_string()):
        return True
    try:
        parsed = x509.Name.from_rfc4514_string(re.sub(r"(?<!\\),\s+", ",", text),
                                               _NAME_OVERRIDES)
    except ValueError:
        return False
    return parsed == name


def _check_signing_certificate(sp: etree._Element, leaf: x509.Certificate) -> None:
    """XAdES SigningCertificate must describe the KeyInfo leaf: digest and issuer/serial."""
    path = f"{_x('SignedSignatureProperties')}/{_x('SigningCertificate')}/{_x('Cert')}"
    cert = _one(sp, path, "xades:SigningCertificate/Cert")
    method_el = _one(cert, f"{_x('CertDigest')}/{_d('DigestMethod')}", "xades:CertDigest")
    value_el = _one(cert, f"{_x('CertDigest')}/{_d('DigestValue')}", "xades:CertDigest")
    method = method_el.get("Algorithm", "")
    if method not in (ds.SHA1, ds.SHA256):
        raise ds.AlgorithmNotAllowedError(f"algorithm {method} is not allowed",
                                          subject="xades:CertDigest")
    expected = ds.digest(leaf.public_bytes(serialization.Encoding.DER), method)
    if ds.b64decode(value_el.text, subject="xades:CertDigest") != expected:
        raise SigningCertificateError("CertDigest does not match the KeyInfo certificate",
                                      subject="xades:SigningCertificate")
    issuer_el = _one(cert, f"{_x('IssuerSerial')}/{_d('X509IssuerName')}", "xades:IssuerSerial")
    serial_el = _one(cert, f"{_x('IssuerSerial')}/{_d('X509SerialNumber')}", "xades:IssuerSerial")
    try:
        serial = int((serial_el.text or "").strip())
    except ValueError:
        raise SignatureProfileError("X509SerialNumber is not an integer",
                                    subject="xades:IssuerSerial") from None
    if serial != leaf.serial_number:
        raise SigningCertificateError(f"serial {serial} is not the KeyInfo certificate's",
                                      subject="xades:IssuerSerial")
    if not _same_name(issuer_el.text or "", leaf.issuer):
        raise SigningCertificateError(f"issuer {issuer_el.text!r} is not the KeyInfo "
                                      "certificate's", subject="xades:IssuerSerial")


def _mime_types(sp: etree._Element) -> dict[str, str]:
    """ObjectReference -> MimeType of every DataObjectFormat."""
    result: dict[str, str] = {}
    path = f"{_x('SignedDataObjectProperties')}/{_x('DataObjectFormat')}"
    for dof in sp.iterfind(path):
        ref = dof.get("ObjectReference")
        mime = dof.find(_x("MimeType"))
        if ref is None or mime is None or not (mime.text or "").strip():
            raise SignatureProfileError("needs ObjectReference and MimeType",
                                        subject="xades:DataObjectFormat")
        if ref in result:
            raise SignatureProfileError("two DataObjectFormats for one reference", subject=ref)
        result[ref] = (mime.text or "").strip()
    return result
