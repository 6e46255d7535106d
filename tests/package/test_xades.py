"""META-INF/signatures.xml: building, verifying, the official example, tampering, signxml."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidDigest
from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier

from sdp import devpki
from sdp import xmldsig as ds
from sdp.certificates import orgnr_of
from sdp.errors import (
    CertificateChainError,
    DigestMismatchError,
    InputError,
    ReferenceMismatchError,
    SdpError,
    SignatureValueError,
    SigningCertificateError,
)
from sdp.package import xades
from sdp.package.entries import SignedEntry

SIGNING_TIME = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
#: A moment when every certificate of the official example was valid.
EXAMPLE_TIME = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)

FILES = {
    "vedtak.pdf": (b"%PDF-1.4 not really a pdf", "application/pdf"),
    "vedlegg med mellomrom og æøå.txt": ("Hei på deg\n".encode(), "text/plain"),
    "manifest.xml": (b"<manifest xmlns='http://begrep.difi.no/sdp/schema_v10'/>",
                     "application/xml"),
}


def _entries(files: dict[str, tuple[bytes, str]] = FILES) -> list[SignedEntry]:
    return [SignedEntry(n, mime, hashlib.sha256(c).digest()) for n, (c, mime) in files.items()]


def _digests(files: dict[str, tuple[bytes, str]] = FILES) -> dict[str, bytes]:
    return {n: hashlib.sha256(c).digest() for n, (c, _) in files.items()}


# --- the official example ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(spec: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(spec / "eksempler" / "post.asice.zip") as z:
        return {name: z.read(name) for name in z.namelist()}


@pytest.fixture(scope="module")
def buypass_test_root(spec: Path) -> x509.Certificate:
    der = (spec / "sikkerhet" / "sertifikater" / "test" / "Buypass_Class_3_Test4_Root_CA.cer")
    return x509.load_der_x509_certificate(der.read_bytes())


def _sha(entries: dict[str, bytes]) -> dict[str, bytes]:
    return {n: hashlib.sha256(c).digest() for n, c in entries.items()}


def test_example_verifies(example: dict[str, bytes], buypass_test_root: x509.Certificate) -> None:
    result = xades.verify(example["META-INF/signatures.xml"], _sha(example),
                          at=EXAMPLE_TIME, trust=[buypass_test_root])
    assert result.canonicalization == ds.C14N11
    assert result.signing_time == dt.datetime(2014, 8, 26, 10, 53, 5, 260000, tzinfo=dt.UTC)
    assert orgnr_of(result.signer) == "991825827"
    assert len(result.certificates) == 3  # leaf, Test4 CA 3 and the Test4 root itself
    assert result.chain is not None
    assert [c.subject.rfc4514_string() for c in result.chain[1:]] == [
        "CN=Buypass Class 3 Test4 CA 3,O=Buypass AS-983163327,C=NO",
        "CN=Buypass Class 3 Test4 Root CA,O=Buypass AS-983163327,C=NO",
    ]
    assert [(r.name, r.id, r.mime_type) for r in result.references] == [
        ("hoveddokument.txt", "ID_0", "text/plain"),
        ("ts_103174v020201p.pdf", "ID_1", "application/pdf"),
        ("ts_102918v010301p.pdf", "ID_2", "application/pdf"),
        ("ts_103171v020101p.pdf", "ID_3", "application/pdf"),
        ("ts_101903v010402p.pdf", "ID_4", "application/pdf"),
        ("manifest.xml", "ID_5", "application/xml"),
    ]


def test_example_chain_has_expired_today(example: dict[str, bytes],
                                         buypass_test_root: x509.Certificate) -> None:
    with pytest.raises(CertificateChainError, match=r"991825827.*expired at 20"):
        xades.verify(example["META-INF/signatures.xml"], _sha(example), trust=[buypass_test_root])


def test_example_untrusted_anchor(example: dict[str, bytes], ca: devpki.Identity) -> None:
    with pytest.raises(CertificateChainError, match="not a trust anchor"):
        xades.verify(example["META-INF/signatures.xml"], _sha(example), at=EXAMPLE_TIME,
                     trust=[ca.certificate])


def test_example_every_file_byte_flip_is_detected(example: dict[str, bytes]) -> None:
    """First, middle and last byte of every signed file, one at a time."""
    signatures = example["META-INF/signatures.xml"]
    digests = _sha(example)
    files = [n for n in example if not n.startswith("META-INF/")]
    assert len(files) == 6
    for name in files:
        content = example[name]
        for pos in {0, len(content) // 2, len(content) - 1}:
            tampered = bytearray(content)
            tampered[pos] ^= 0x01
            with pytest.raises(DigestMismatchError) as err:
                xades.verify(signatures, {**digests, name: hashlib.sha256(tampered).digest()})
            assert err.value.subject == name


def test_example_every_signatures_xml_byte_flip(example: dict[str, bytes],
                                                buypass_test_root: x509.Certificate) -> None:
    """Flip each byte of signatures.xml: a typed error, or a result identical to the original.

    Unsigned bytes exist (the XML declaration, the intermediate and root certificates in
    KeyInfo); flipping them must then not change the signer, chain, time or references.
    """
    signatures = example["META-INF/signatures.xml"]
    digests = _sha(example)

    def run(data: bytes) -> tuple[object, ...]:
        r = xades.verify(data, digests, at=EXAMPLE_TIME, trust=[buypass_test_root])
        return r.signer, r.chain, r.signing_time, r.references

    baseline = run(signatures)
    signed_start = signatures.index(b"<SignedInfo>")
    signed_end = signatures.index(b"</SignatureValue>")
    sp_start = signatures.index(b"<QualifyingProperties")
    undetected_in_signed_parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about some corrupted names
        for pos in range(len(signatures)):
            tampered = bytearray(signatures)
            tampered[pos] ^= 0x01
            try:
                outcome = run(bytes(tampered))
            except SdpError:
                continue
            assert outcome == baseline, f"byte {pos} changed the verified result"
            if signed_start <= pos < signed_end or pos >= sp_start:
                undetected_in_signed_parts.append(pos)
    # Inside SignedInfo, SignatureValue and from QualifyingProperties on, every flip is caught.
    assert undetected_in_signed_parts == []


def test_example_signature_value_tamper(example: dict[str, bytes]) -> None:
    signatures = example["META-INF/signatures.xml"]
    tampered = signatures.replace(b"<SignatureValue>oK0w", b"<SignatureValue>oK1w")
    assert tampered != signatures
    with pytest.raises(SignatureValueError):
        xades.verify(tampered, _sha(example))


def test_example_signed_info_digest_tamper_is_a_signature_error(
        example: dict[str, bytes]) -> None:
    signatures = example["META-INF/signatures.xml"]
    tampered = signatures.replace(b"p3Ud4Dymo", b"p3Ud4Dymp")
    with pytest.raises(SignatureValueError):
        xades.verify(tampered, _sha(example))


def test_example_signed_properties_tamper(example: dict[str, bytes]) -> None:
    signatures = example["META-INF/signatures.xml"]
    for old, new in [(b"2014-08-26T10:53:05.260Z", b"2014-08-26T10:53:06.260Z"),
                     (b"<MimeType>text/plain<", b"<MimeType>text/html<")]:
        with pytest.raises(DigestMismatchError) as err:
            xades.verify(signatures.replace(old, new), _sha(example))
        assert err.value.subject == "xades:SignedProperties"


def test_example_extra_and_missing_entries(example: dict[str, bytes]) -> None:
    signatures = example["META-INF/signatures.xml"]
    digests = _sha(example)
    with pytest.raises(ReferenceMismatchError) as err:
        xades.verify(signatures, {**digests, "extra.pdf": b"\0" * 32})
    assert err.value.subject == "extra.pdf"
    missing = {n: d for n, d in digests.items() if n != "ts_103171v020101p.pdf"}
    with pytest.raises(ReferenceMismatchError, match=r"ts_103171v020101p\.pdf"):
        xades.verify(signatures, missing)
    # META-INF entries are not signed objects and are ignored (DIGEST 4.1).
    result = xades.verify(signatures, {**digests, "META-INF/manifest.xml": b"\0" * 32})
    assert len(result.references) == 6


def test_example_verified_by_signxml(example: dict[str, bytes]) -> None:
    """signxml checks SignedInfo, SignatureValue, all 7 reference digests and CertDigest.

    libxml2 2.14 adds stray xmlns="" to sub-element c14n (DIGEST 4.4); signxml's opt-in
    `excise_empty_xmlns_declarations` removes them, which is exact for this document.
    """
    verifier = XAdESVerifier()
    verifier.excise_empty_xmlns_declarations = True
    signatures = example["META-INF/signatures.xml"]
    leaf = ds.certificates_from_key_info(etree.fromstring(signatures)[0])[0]
    config = XAdESSignatureConfiguration(
        expect_references=7, location="./", verification_time=EXAMPLE_TIME,
        signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}))
    results = verifier.verify(signatures, x509_cert=leaf, expect_config=config,
                              uri_resolver=lambda uri: example[uri])
    assert [len(r.signed_data) for r in results[:6]] == [
        len(example[n]) for n in example if not n.startswith("META-INF/")]
    assert results[6].signed_xml is not None
    assert results[6].signed_xml.tag == f"{{{ds.XADES_NS}}}SignedProperties"


# --- our own signatures -----------------------------------------------------------------------


def test_sign_is_reproducible(sender: devpki.Identity) -> None:
    first = xades.sign(_entries(), sender, SIGNING_TIME)
    assert xades.sign(_entries(), sender, SIGNING_TIME) == first
    later = xades.sign(_entries(), sender, SIGNING_TIME + dt.timedelta(seconds=1))
    assert later != first
    assert first.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>'
                            b'<XAdESSignatures xmlns="http://uri.etsi.org/2918/v1.2.1#">')
    assert b"<SigningTime>2024-05-01T12:00:00.123Z</SigningTime>" in first


@pytest.mark.parametrize("c14n", [ds.C14N11, ds.C14N10])
def test_round_trip(sender: devpki.Identity, ca: devpki.Identity, c14n: str) -> None:
    xml = xades.sign(_entries(), sender, SIGNING_TIME, signed_info_c14n=c14n)
    result = xades.verify(xml, _digests(), trust=[ca.certificate])
    assert result.canonicalization == c14n
    assert result.signer == sender.certificate
    assert result.chain == (sender.certificate, *sender.chain, ca.certificate)
    assert result.signing_time == dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    assert [(r.name, r.mime_type) for r in result.references] == [
        (n, mime) for n, (_, mime) in FILES.items()]


def test_names_are_percent_encoded(sender: devpki.Identity) -> None:
    xml = xades.sign(_entries(), sender, SIGNING_TIME)
    assert b'URI="vedlegg%20med%20mellomrom%20og%20%C3%A6%C3%B8%C3%A5.txt"' in xml
    assert xades.entry_uri("a:b/c d.pdf") == "a%3Ab/c%20d.pdf"
    result = xades.verify(xml, _digests())
    assert result.references[1].name == "vedlegg med mellomrom og æøå.txt"


def test_layout_matches_the_official_example(example: dict[str, bytes],
                                             sender: devpki.Identity,
                                             ca: devpki.Identity) -> None:
    """Same elements, order, attributes, Ids and prefixes as eksempler/post.asice.zip."""
    mime = {"hoveddokument.txt": "text/plain", "manifest.xml": "application/xml"}
    entries = [SignedEntry(n, mime.get(n, "application/pdf"), hashlib.sha256(c).digest())
               for n, c in example.items() if not n.startswith("META-INF/")]
    ours = xades.sign(entries, sender, SIGNING_TIME, extra_certificates=[ca.certificate])

    def skeleton(xml: bytes) -> list[tuple[str, str | None, list[str], dict[str, str]]]:
        root = etree.fromstring(xml)
        return [(str(el.tag), el.prefix, list(el.attrib),
                 {k: v for k, v in el.attrib.items() if k in ("Id", "URI", "ObjectReference",
                                                              "Target", "Type", "Algorithm")})
                for el in root.iter()]

    assert skeleton(ours) == skeleton(example["META-INF/signatures.xml"])


def test_signxml_verifies_our_signature(sender: devpki.Identity) -> None:
    """Independent check of SignedInfo c14n 1.1, SignedProperties c14n 1.0, every digest."""
    xml = xades.sign(_entries(), sender, SIGNING_TIME)
    verifier = XAdESVerifier()
    verifier.excise_empty_xmlns_declarations = True
    by_uri = {xades.entry_uri(n): c for n, (c, _) in FILES.items()}
    config = XAdESSignatureConfiguration(
        expect_references=len(FILES) + 1, location="./",
        signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}))
    results = verifier.verify(xml, x509_cert=sender.certificate, expect_config=config,
                              uri_resolver=lambda uri: by_uri[uri])
    assert results[0].signed_data == FILES["vedtak.pdf"][0]
    by_uri[xades.entry_uri("manifest.xml")] = b"<tampered/>"
    with pytest.raises(InvalidDigest):
        verifier.verify(xml, x509_cert=sender.certificate, expect_config=config,
                        uri_resolver=lambda uri: by_uri[uri])


def test_untrusted_and_expired(sender: devpki.Identity) -> None:
    xml = xades.sign(_entries(), sender, SIGNING_TIME)
    stranger = devpki.make_ca("Someone Else Root CA")
    with pytest.raises(CertificateChainError, match="unknown issuer"):
        xades.verify(xml, _digests(), trust=[stranger.certificate])
    root = sender.chain[-1]
    assert root.issuer != root.subject  # the chain holds the intermediate, not the root
    with pytest.raises(CertificateChainError, match="expired at"):
        xades.verify(xml, _digests(), trust=[sender.chain[0]],
                     at=sender.certificate.not_valid_after_utc + dt.timedelta(seconds=1))


def test_sign_refuses_bad_input(sender: devpki.Identity) -> None:
    entries = _entries()
    with pytest.raises(InputError, match="signing_time"):
        xades.sign(entries, sender, dt.datetime(2024, 1, 1))
    with pytest.raises(InputError):
        xades.sign(entries, sender, SIGNING_TIME, signed_info_c14n=ds.EXC_C14N)
    with pytest.raises(InputError, match=r"vedtak\.pdf"):
        xades.sign([*entries, entries[0]], sender, SIGNING_TIME)
    with pytest.raises(InputError, match="META-INF"):
        xades.sign([SignedEntry("META-INF/x.xml", "application/xml", b"\0" * 32)], sender,
                   SIGNING_TIME)
    with pytest.raises(InputError):
        xades.sign([], sender, SIGNING_TIME)


# --- re-signed variants: structurally valid signatures that break one XAdES rule --------------


def _resign(xml: bytes, identity: devpki.Identity,
            mutate: Callable[[etree._Element], None]) -> bytes:
    """Mutate the document, then recompute the SignedProperties digest and the signature."""
    root = etree.fromstring(xml)
    mutate(root)
    sig = root[0]
    sp = root.find(f".//{{{ds.XADES_NS}}}SignedProperties")
    assert sp is not None
    sp_ref = sig[0][-1]
    sp_ref.find(f"{{{ds.DS_NS}}}DigestValue").text = ds.b64(  # type: ignore[union-attr]
        hashlib.sha256(ds.canonicalize(sp, ds.C14N10)).digest())
    old = sig.find(f"{{{ds.DS_NS}}}SignatureValue")
    assert old is not None
    sig.remove(old)
    ds.add_signature_value(sig, identity.key)
    return etree.tostring(root)


def _text(path: str, value: str) -> Callable[[etree._Element], None]:
    ns = {"ds": ds.DS_NS, "x": ds.XADES_NS}

    def mutate(root: etree._Element) -> None:
        el = root.find(path, ns)
        assert el is not None
        el.text = value
    return mutate


def test_resign_helper_keeps_signature_valid(sender: devpki.Identity) -> None:
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, lambda root: None)
    assert xades.verify(xml, _digests()).signer == sender.certificate


@pytest.mark.parametrize(("path", "value", "match"), [
    (".//x:CertDigest/ds:DigestValue", ds.b64(b"\1" * 20), "CertDigest"),
    (".//x:IssuerSerial/ds:X509SerialNumber", "12345", "serial"),
    (".//x:IssuerSerial/ds:X509IssuerName", "CN=Other CA, C=NO", "issuer"),
])
def test_signing_certificate_mismatch(sender: devpki.Identity, path: str, value: str,
                                      match: str) -> None:
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, _text(path, value))
    with pytest.raises(SigningCertificateError, match=match):
        xades.verify(xml, _digests())


def test_issuer_name_without_spaces_is_accepted(sender: devpki.Identity) -> None:
    compact = sender.certificate.issuer.rfc4514_string()
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender,
                  _text(".//x:IssuerSerial/ds:X509IssuerName", compact))
    assert xades.verify(xml, _digests()).signer == sender.certificate


def test_leaf_swapped_in_key_info(sender: devpki.Identity, mailbox: devpki.Identity) -> None:
    """Signed by another key of the same CA, with its cert in KeyInfo: CertDigest catches it."""
    def swap(root: etree._Element) -> None:
        first = root.find(f".//{{{ds.DS_NS}}}X509Certificate")
        assert first is not None
        first.text = ds.b64(mailbox.certificate.public_bytes(Encoding.DER))
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), mailbox, swap)
    with pytest.raises(SigningCertificateError, match="CertDigest"):
        xades.verify(xml, _digests())


def test_reference_outside_the_package(sender: devpki.Identity) -> None:
    def point_outside(root: etree._Element) -> None:
        root[0][0][2].set("URI", "../../etc/passwd")
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, point_outside)
    with pytest.raises(ReferenceMismatchError, match="passwd"):
        xades.verify(xml, _digests())

    def into_meta_inf(root: etree._Element) -> None:
        root[0][0][2].set("URI", "META-INF/signatures.xml")
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, into_meta_inf)
    with pytest.raises(ReferenceMismatchError, match="META-INF"):
        xades.verify(xml, {**_digests(), "META-INF/signatures.xml": b"\0" * 32})


def test_file_referenced_twice(sender: devpki.Identity) -> None:
    def duplicate(root: etree._Element) -> None:
        root[0][0][3].set("URI", root[0][0][2].get("URI"))
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, duplicate)
    with pytest.raises(ReferenceMismatchError, match="more than once"):
        xades.verify(xml, _digests())


def test_missing_data_object_format(sender: devpki.Identity) -> None:
    def drop(root: etree._Element) -> None:
        dof = root.find(f".//{{{ds.XADES_NS}}}DataObjectFormat")
        assert dof is not None
        dof.getparent().remove(dof)  # type: ignore[union-attr]
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, drop)
    with pytest.raises(ds.SignatureProfileError, match="DataObjectFormat"):
        xades.verify(xml, _digests())


def test_wrapped_signed_properties_is_refused(sender: devpki.Identity) -> None:
    """A second element with Id="SignedProperties" makes the reference ambiguous."""
    xml = xades.sign(_entries(), sender, SIGNING_TIME)
    wrapped = xml.replace(b"</Object>", b'</Object><Object><x Id="SignedProperties"/></Object>')
    with pytest.raises(ds.SignatureProfileError, match="SignedProperties"):
        xades.verify(wrapped, _digests())


@pytest.mark.parametrize(("old", "new"), [
    (ds.RSA_SHA256, "http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
    (ds.SHA256, "http://www.w3.org/2001/04/xmldsig-more#md5"),
    (ds.C14N11, ds.EXC_C14N),
])
def test_wrong_algorithm_refused(sender: devpki.Identity, old: str, new: str) -> None:
    xml = xades.sign(_entries(), sender, SIGNING_TIME).replace(old.encode(), new.encode(), 1)
    with pytest.raises(ds.AlgorithmNotAllowedError):
        xades.verify(xml, _digests())


def test_file_reference_with_transform_refused(sender: devpki.Identity) -> None:
    def add_transform(root: etree._Element) -> None:
        ref = root[0][0][2]
        transforms = etree.Element(f"{{{ds.DS_NS}}}Transforms")
        etree.SubElement(transforms, f"{{{ds.DS_NS}}}Transform", Algorithm=ds.C14N10)
        ref.insert(0, transforms)
    xml = _resign(xades.sign(_entries(), sender, SIGNING_TIME), sender, add_transform)
    with pytest.raises(ds.SignatureProfileError, match="no transforms"):
        xades.verify(xml, _digests())


def test_not_a_signatures_document() -> None:
    with pytest.raises(ds.SignatureProfileError, match="XAdESSignatures"):
        xades.verify(b"<foo/>", {})
    with pytest.raises(SdpError):
        xades.verify(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", {})
