"""WS-Security header: signing, strict verification, the spec's SOAP examples, hostile variants."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.exceptions import InvalidDigest

from sdp import devpki
from sdp import wssecurity as wss
from sdp import xmldsig as ds
from sdp.errors import (
    CertificateChainError,
    DigestMismatchError,
    InputError,
    ReferenceMismatchError,
    SignatureValueError,
)
from sdp.keys import SigningIdentity
from sdp.xmlparse import parse
from tests.conftest import EXAMPLES, MAILBOX_ORGNR, SENDER_ORGNR

SOAP = wss.SOAP12_NS
EB = wss.EB_NS
NS = {"env": SOAP, "eb": EB, "wsse": ds.WSSE_NS, "wsu": ds.WSU_NS, "ds": ds.DS_NS,
      "ec": ds.EC_NS}
WSU_ID = f"{{{ds.WSU_NS}}}Id"
SOAP_DIR = EXAMPLES / "soap"
#: Signing time: now (the development certificates are fresh), with sub-millisecond digits.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=123456)
CID = "d6f0f811-69c4-4e03-a5a3-5ef02c4dfc11@meldingsformidler.sdp.difi.no"
CID2 = "0b7c3e1a-0000-4000-8000-000000000002@meldingsformidler.sdp.difi.no"
PACKAGE = b"\x30\x82\x01\x00 pretend CMS EnvelopedData \x00\xff" * 50

ENVELOPE = f"""<env:Envelope xmlns:env="{SOAP}"><env:Header><eb:Messaging xmlns:eb="{EB}"
 xmlns:wsu="{ds.WSU_NS}" env:mustUnderstand="true" wsu:Id="id-messaging"><eb:UserMessage
 mpc="urn:normal"><eb:MessageInfo><eb:Timestamp>2025-03-01T13:00:00.000+01:00</eb:Timestamp>
<eb:MessageId>627c8082-6394-47a6-9107-a91e52240af2</eb:MessageId></eb:MessageInfo>
</eb:UserMessage></eb:Messaging></env:Header><env:Body xmlns:wsu="{ds.WSU_NS}" wsu:Id="soapBody"
><sbd:StandardBusinessDocument xmlns:sbd="urn:test:sbd"><sbd:Content Id="inner">Brev til deg
</sbd:Content></sbd:StandardBusinessDocument></env:Body></env:Envelope>""".encode()


# --- helpers ----------------------------------------------------------------------------------


def envelope() -> etree._Element:
    """A hand-made SOAP 1.2 envelope shaped as sdp.ebms builds it."""
    return parse(ENVELOPE)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def strip_pretty_print(root: etree._Element) -> etree._Element:
    """Remove whitespace-only text between elements (added when the examples were indented)."""
    for el in root.iter():
        if len(el) and el.text is not None and not el.text.strip():
            el.text = None
        if el.getparent() is not None and el.tail is not None and not el.tail.strip():
            el.tail = None
    return root


def example(name: str) -> etree._Element:
    return strip_pretty_print(parse((SOAP_DIR / name).read_bytes(), what=name))


def created_of(root: etree._Element) -> dt.datetime:
    return dt.datetime.fromisoformat(str(root.findtext(".//wsu:Created", namespaces=NS)))


def resign(root: etree._Element, signer: SigningIdentity) -> None:
    """Re-sign SignedInfo after a test edited it: the signer itself wrote the hostile shape."""
    signature = root.find(".//wsse:Security/ds:Signature", NS)
    assert signature is not None
    value = signature.find("ds:SignatureValue", NS)
    assert value is not None
    signature.remove(value)
    ds.add_signature_value(signature, signer.key)


def redigest(root: etree._Element, element: etree._Element, signer: SigningIdentity) -> None:
    """Recompute the digest of the reference to `element` and re-sign: a signer's own output."""
    ref_el = reference(root, f"#{element.get(WSU_ID)}")
    (parsed,) = [r for r in wss.signed_references(root) if r.element is ref_el]
    value = ref_el.find("ds:DigestValue", NS)
    assert value is not None
    value.text = ds.b64(ds.reference_digest(parsed, element))
    resign(root, signer)


def reference(root: etree._Element, uri: str) -> etree._Element:
    found = root.find(f".//ds:SignedInfo/ds:Reference[@URI='{uri}']", NS)
    assert found is not None, uri
    return found


def messaging_of(root: etree._Element) -> etree._Element:
    found = root.find("env:Header/eb:Messaging", NS)
    assert found is not None
    return found


def body_of(root: etree._Element) -> etree._Element:
    found = root.find("env:Body", NS)
    assert found is not None
    return found


@pytest.fixture
def signed(sender: SigningIdentity) -> etree._Element:
    root = envelope()
    wss.sign(root, sender, attachments={CID: sha256(PACKAGE)}, now=NOW)
    return root


def check(root: etree._Element, **kwargs: object) -> wss.WssResult:
    options: dict[str, object] = {"attachments": {CID: PACKAGE}, "trust": None, "at": NOW}
    options.update(kwargs)
    return wss.verify(root, **options)  # type: ignore[arg-type]


# --- signing ----------------------------------------------------------------------------------


def test_round_trip_with_trust_and_orgnr(signed: etree._Element, ca: SigningIdentity,
                                         intermediate: SigningIdentity,
                                         sender: SigningIdentity) -> None:
    result = check(signed, trust=[ca.certificate], intermediates=[intermediate.certificate],
                   expected_orgnr=SENDER_ORGNR)
    assert result.certificate == sender.certificate
    assert result.orgnr == SENDER_ORGNR
    assert result.chain == (sender.certificate, intermediate.certificate, ca.certificate)
    assert [r.target for r in result.references] == ["body", "timestamp", "messaging",
                                                      "attachment"]
    assert all(r.ok for r in result.references)
    assert result.attachment_references[CID].digest_value == sha256(PACKAGE)
    assert result.reference_for("body").uri == "#soapBody"
    assert result.created == NOW.replace(microsecond=123000)
    assert result.expires - result.created == dt.timedelta(seconds=120)


def test_attachment_digest_computed_by_the_caller(signed: etree._Element) -> None:
    result = check(signed, attachments={CID: wss.attachment_digest(PACKAGE)})
    assert result.attachment_references[CID].ok


def test_sign_returns_references_for_non_repudiation(sender: SigningIdentity) -> None:
    root = envelope()
    out = wss.sign(root, sender, attachments={CID: sha256(PACKAGE)}, now=NOW)
    assert [r.uri for r in out.references] == [
        "#soapBody", f"#{root.find('.//wsu:Timestamp', NS).get(WSU_ID)}",  # type: ignore[union-attr]
        "#id-messaging", f"cid:{CID}"]
    assert out.digests[f"cid:{CID}"] == sha256(PACKAGE)
    assert out.created == NOW.replace(microsecond=123000)
    assert out.expires == out.created + wss.DEFAULT_TTL
    assert wss.signed_references(root) == out.references
    assert wss.signed_references(out.signature) == out.references
    # The verifier reports the same digests as the signer returned.
    result = check(root)
    assert {r.uri: r.digest_value for r in result.references} == out.digests


def test_header_layout_matches_the_request_example(signed: etree._Element) -> None:
    """Element order, prefixes, attributes and PrefixLists as in 1_request (DIGEST 7.8)."""
    ex = example("1_request_forretningsmelding_fra_postavsender_til_meldingsformidler.xml")

    def shape(root: etree._Element) -> list[tuple[str, list[str]]]:
        security = root.find("env:Header/wsse:Security", NS)
        assert security is not None
        out = []
        for el in security.iter():
            if el.tag == f"{{{ds.EC_NS}}}InclusiveNamespaces" and not el.get("PrefixList"):
                continue  # WSS4J's PrefixList="" (invalid XSD, DIGEST 15 #32): we omit it
            qname = f"{el.prefix}:{etree.QName(el).localname}"
            attrs = [etree.QName(a).localname if "}" in a else a for a in el.attrib]
            out.append((qname, attrs))
        return out

    assert shape(signed) == shape(ex)
    header = signed.find("env:Header", NS)
    assert header is not None and header[0].tag == f"{{{ds.WSSE_NS}}}Security"
    assert header[0].get(f"{{{SOAP}}}mustUnderstand") == "true"
    text = etree.tostring(signed).decode()
    assert 'env:mustUnderstand="true"' in text
    assert 'PrefixList=""' not in text
    lists = [el.get("PrefixList") for el in signed.iterfind(".//ec:InclusiveNamespaces", NS)]
    assert lists == ["env", "wsse env"]  # SignedInfo, Timestamp reference
    created = NOW.strftime("%Y-%m-%dT%H:%M:%S.123Z")
    expires = (NOW + dt.timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%S.123Z")
    assert signed.findtext(".//wsu:Created", namespaces=NS) == created
    assert signed.findtext(".//wsu:Expires", namespaces=NS) == expires
    token = signed.find(".//wsse:BinarySecurityToken", NS)
    assert token is not None
    assert token.get("ValueType") == wss.X509V3 and token.get("EncodingType") == wss.BASE64_BINARY
    assert signed.find(".//wsse:SecurityTokenReference/wsse:Reference", NS).get(  # type: ignore[union-attr]
        "URI") == f"#{token.get(WSU_ID)}"


def test_sign_the_example_request_again(sender: SigningIdentity) -> None:
    """1_request with its wsse:Security removed, signed by us, verifies (also after a reparse)."""
    root = example("1_request_forretningsmelding_fra_postavsender_til_meldingsformidler.xml")
    old = root.find("env:Header/wsse:Security", NS)
    assert old is not None
    old.getparent().remove(old)  # type: ignore[union-attr]
    fingerprint = ds.b64decode("kZLCW3NPy62+MtrcKAicYNsOOfkMwgzi5XM/VyYazAw=", subject="test")
    wss.sign(root, sender, attachments={CID: fingerprint}, now=NOW)
    reparsed = parse(etree.tostring(root))
    result = wss.verify(reparsed, attachments={CID: wss.AttachmentDigest(fingerprint)},
                        trust=None, at=NOW)
    assert result.reference_for("body").uri == "#soapBody"


def test_other_soap_prefix_goes_into_the_prefix_lists(sender: SigningIdentity) -> None:
    root = parse(ENVELOPE.replace(b"env:", b"S12:").replace(b"xmlns:env", b"xmlns:S12"))
    wss.sign(root, sender, now=NOW)
    lists = [el.get("PrefixList") for el in root.iterfind(".//ec:InclusiveNamespaces", NS)]
    assert lists == ["S12", "wsse S12"]
    check(root, attachments={})


@pytest.mark.parametrize("problem", ["security", "no-id", "bad-cid", "short-digest", "naive"])
def test_sign_refuses_bad_input(sender: SigningIdentity, problem: str) -> None:
    root = envelope()
    kwargs: dict[str, object] = {"now": NOW}
    if problem == "security":
        wss.sign(root, sender, now=NOW)
    elif problem == "no-id":
        del body_of(root).attrib[WSU_ID]
    elif problem == "bad-cid":
        kwargs["attachments"] = {f"<{CID}>": sha256(PACKAGE)}
    elif problem == "short-digest":
        kwargs["attachments"] = {CID: b"\x00" * 20}
    else:
        kwargs["now"] = dt.datetime(2025, 1, 1)
    with pytest.raises(InputError):
        wss.sign(root, sender, **kwargs)  # type: ignore[arg-type]


# --- independent verification with signxml ----------------------------------------------------


def signxml_verify(root: etree._Element, cert: x509.Certificate, *, references: int,
                   attachments: dict[str, bytes], at: dt.datetime) -> object:
    """signxml with the token's certificate (it does not read SecurityTokenReference KeyInfo).

    signxml passes `cid:` URIs to `uri_resolver`; the SwA Attachment-Content transform is not
    a canonicalization it knows, so it leaves the octets as they are, which is exactly what
    that transform means: the digest over the raw attachment bytes. Schema validation is off
    because signxml's XSD does not accept `ec:InclusiveNamespaces` inside Transform.
    """
    def resolve(uri: str) -> bytes:
        assert uri.startswith("cid:")
        return attachments.get(uri[4:], b"attachment not available")

    config = SignatureConfiguration(
        expect_references=references, verification_time=at,
        location=f"./{{{SOAP}}}Header/{{{ds.WSSE_NS}}}Security/")
    return XMLVerifier().verify(root, x509_cert=cert, uri_resolver=resolve,
                                expect_config=config, validate_schema=False)


def test_signxml_verifies_our_signature(signed: etree._Element,
                                        sender: SigningIdentity) -> None:
    results = signxml_verify(parse(etree.tostring(signed)), sender.certificate, references=4,
                             attachments={CID: PACKAGE}, at=NOW)
    assert isinstance(results, list) and len(results) == 4


def test_signxml_rejects_a_wrong_attachment(signed: etree._Element,
                                            sender: SigningIdentity) -> None:
    with pytest.raises(InvalidDigest, match="reference 3"):
        signxml_verify(signed, sender.certificate, references=4,
                       attachments={CID: PACKAGE + b"x"}, at=NOW)


# --- the spec's SOAP examples -----------------------------------------------------------------

SIGNED_EXAMPLES = [
    "1_request_forretningsmelding_fra_postavsender_til_meldingsformidler.xml",
    "1_response_kvittering_for_mottatt_forretningsmelding_fra_meldingsformidler_til_postavsender.xml",
    "3_request_forretningsmelding_fra_meldingsformidler_til_postkasse.xml",
    "3_response_kvittering_for_mottatt_forretningsmelding_fra_postkasse_til_meldingsformidler.xml",
    "5_request_forespoersel_om_forretningskvittering_fra_postavsender_til_meldingsformidler.xml",
    "5_request_transportkvittering_fra_postavsender_til_meldingsformidler.xml",
    "5_response_forretningskvittering_fra_meldingsformidler_til_postavsender.xml",
    "6_request_forespoersel_om_forretningskvittering_fra_postavsender_til_meldingsformidler.xml",
    "6_response_error_fra_meldingsformidler_til_postavsender.xml",
]
#: DIGEST 7.10, 15 #27: the Body was edited after signing.
EDITED_EXAMPLE = (
    "7_request_forretningsmelding_fra_postavsender_til_meldingsformidler_fysisk_post.xml")
#: No WS-Security signature at all: body only, an unsigned receipt, and the fault template.
UNSIGNED_EXAMPLES = [
    "4_request_forretningsmelding_fra_postkasse_til_meldingsformidler.xml",
    "4_response_kvittering_for_mottatt_forretningsmelding_fra_meldingsformidler_til_postkasse.xml",
    "eksempel_soap_fault_med_ebms_error.xml",
]


def test_every_example_is_classified(spec: Path) -> None:
    names = {p.name for p in SOAP_DIR.glob("*.xml")}
    assert names == {*SIGNED_EXAMPLES, EDITED_EXAMPLE, *UNSIGNED_EXAMPLES}


def example_attachments(root: etree._Element) -> dict[str, bytes | wss.AttachmentDigest]:
    """The attachments are not in the examples: stand in the signed digest for the cid: part.

    That checks only the XML references; the cid: reference's structure is checked by
    `verify` (SwA transform, SHA-256, signed exactly once), its digest cannot be.
    """
    return {r.uri[4:]: wss.AttachmentDigest(r.digest_value)
            for r in wss.signed_references(root) if r.uri and r.uri.startswith("cid:")}


@pytest.fixture(autouse=True)
def _negative_serials() -> Iterator[None]:
    # The Digipost test CA's certificates have negative serial numbers (DIGEST 15 #27); signxml
    # and cryptography warn about them when the tests load them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parsed a serial number which wasn't")
        yield


@pytest.mark.parametrize("name", SIGNED_EXAMPLES)
def test_example_verifies(spec: Path, name: str) -> None:
    root = example(name)
    at = created_of(root) + dt.timedelta(seconds=5)
    result = wss.verify(root, attachments=example_attachments(root), trust=None, at=at)
    assert all(r.ok for r in result.references)
    assert result.expires - result.created == dt.timedelta(minutes=5)  # examples: 300 s
    cn = result.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn in {"889640782", "123456789", "984661185"}
    cids = [r for r in result.references if r.target == "attachment"]
    if name.startswith(("1_request", "3_request")):
        (ref,) = cids
        assert [t.algorithm for t in ref.reference.transforms] == [ds.SWA_ATTACHMENT_CONTENT]
        assert ref.digest_method == ds.SHA256
    else:
        assert cids == []


def test_example_request_attachment_digest_is_the_package_fingerprint(spec: Path) -> None:
    """DIGEST 7.8: the cid: digest equals the dokumentpakkefingeravtrykk in the signed Body."""
    root = example(SIGNED_EXAMPLES[0])
    fingerprint = root.findtext(".//{*}dokumentpakkefingeravtrykk/{*}DigestValue")
    (ref,) = [r for r in wss.signed_references(root) if r.uri and r.uri.startswith("cid:")]
    assert ds.b64(ref.digest_value) == fingerprint


def test_example_without_the_whitespace_fix_fails(spec: Path) -> None:
    root = parse((SOAP_DIR / SIGNED_EXAMPLES[1]).read_bytes())
    with pytest.raises((SignatureValueError, DigestMismatchError)):
        wss.verify(root, trust=None, at=created_of(root))


def test_edited_example_fails_on_the_body_only(spec: Path) -> None:
    root = example(EDITED_EXAMPLE)
    at = created_of(root)
    with pytest.raises(wss.WssDigestMismatchError, match="#soapBody") as caught:
        wss.verify(root, attachments=example_attachments(root), trust=None, at=at)
    assert isinstance(caught.value, DigestMismatchError)
    outcome = {r.target: r.ok for r in caught.value.references}
    assert outcome == {"body": False, "timestamp": True, "messaging": True, "attachment": True}


@pytest.mark.parametrize("name", UNSIGNED_EXAMPLES)
def test_unsigned_examples_are_refused(spec: Path, name: str) -> None:
    with pytest.raises(wss.SecurityHeaderError):
        wss.verify(example(name), trust=None, at=NOW)


def test_example_certificates_are_not_trusted_by_ours(spec: Path, ca: SigningIdentity) -> None:
    root = example(SIGNED_EXAMPLES[4])
    with pytest.raises(CertificateChainError):
        wss.verify(root, trust=[ca.certificate], at=created_of(root))


@pytest.mark.parametrize("name", [*SIGNED_EXAMPLES, EDITED_EXAMPLE])
def test_signxml_agrees_on_the_examples(spec: Path, name: str) -> None:
    """signxml checks SignatureValue first, then the references in order.

    Examples 1 and 3 carry a cid: reference whose attachment is not available: signxml must
    fail there (index 3) and only there, so the SignatureValue and the three XML references
    verified. Example 7 fails at the Body (index 0).
    """
    root = example(name)
    refs = wss.signed_references(root)
    token = root.find(".//wsse:BinarySecurityToken", NS)
    assert token is not None
    cert = x509.load_der_x509_certificate(ds.b64decode(token.text, subject="token"))
    run: Callable[[], object] = lambda: signxml_verify(  # noqa: E731
        root, cert, references=len(refs), attachments={}, at=created_of(root))
    if name == EDITED_EXAMPLE:
        with pytest.raises(InvalidDigest, match="reference 0"):
            run()
    elif len(refs) == 4:
        with pytest.raises(InvalidDigest, match="reference 3 \\(cid:"):
            run()
    else:
        assert len(run()) == 3  # type: ignore[arg-type]


# --- hostile variants -------------------------------------------------------------------------


def test_duplicated_wsu_id(signed: etree._Element) -> None:
    content = body_of(signed)[0]
    decoy = etree.SubElement(content, "{urn:test:sbd}Decoy")
    decoy.set(WSU_ID, "id-messaging")
    with pytest.raises(wss.SignatureWrappingError, match="#id-messaging"):
        check(signed)


def test_duplicated_plain_id_of_a_referenced_element(signed: etree._Element) -> None:
    etree.SubElement(body_of(signed)[0], "{urn:test:sbd}Decoy", Id="soapBody")
    with pytest.raises(wss.SignatureWrappingError, match="#soapBody"):
        check(signed)


def test_second_body(signed: etree._Element) -> None:
    signed.append(etree.Element(f"{{{SOAP}}}Body"))
    with pytest.raises(wss.SignatureWrappingError, match="env:Body"):
        check(signed)


def test_body_nested_in_body(signed: etree._Element) -> None:
    etree.SubElement(body_of(signed)[0], f"{{{SOAP}}}Body")
    with pytest.raises(wss.SignatureWrappingError, match="2 env:Body"):
        check(signed)


def test_second_messaging(signed: etree._Element) -> None:
    forged = copy.deepcopy(messaging_of(signed))
    forged.set(WSU_ID, "id-forged")
    signed.find("env:Header", NS).append(forged)  # type: ignore[union-attr]
    with pytest.raises(wss.SignatureWrappingError, match="2 eb:Messaging"):
        check(signed)


def test_messaging_moved_into_body(signed: etree._Element) -> None:
    """Classic wrapping: the signed header hidden in the Body, an unsigned one in its place."""
    header = signed.find("env:Header", NS)
    assert header is not None
    original = messaging_of(signed)
    forged = copy.deepcopy(original)
    forged.set(WSU_ID, "id-forged")
    forged.find(".//eb:MessageId", NS).text = "evil"  # type: ignore[union-attr]
    wrapper = etree.SubElement(body_of(signed)[0], "{urn:test:sbd}Wrapper")
    wrapper.append(original)
    header.append(forged)
    with pytest.raises(wss.SignatureWrappingError):
        check(signed)


def test_messaging_moved_into_body_alone(signed: etree._Element) -> None:
    body_of(signed)[0].append(messaging_of(signed))
    with pytest.raises(wss.SignatureWrappingError, match="not a child of env:Header"):
        check(signed)


def test_body_content_swapped(signed: etree._Element) -> None:
    content = signed.find(".//{urn:test:sbd}Content")
    assert content is not None
    content.text = "Betal 10 000 kr til konto 1234"
    with pytest.raises(wss.WssDigestMismatchError, match="#soapBody") as caught:
        check(signed)
    assert [r.target for r in caught.value.references if not r.ok] == ["body"]


def test_reference_to_an_element_outside_header_and_body(signed: etree._Element,
                                                         sender: SigningIdentity) -> None:
    inner = signed.find(".//{urn:test:sbd}Content")
    assert inner is not None
    inner.set(WSU_ID, "id-inner")
    reference(signed, "#soapBody").set("URI", "#id-inner")
    resign(signed, sender)
    with pytest.raises(wss.SignatureWrappingError, match="not env:Body"):
        check(signed)


def test_reference_to_the_token(signed: etree._Element, sender: SigningIdentity) -> None:
    token = signed.find(".//wsse:BinarySecurityToken", NS)
    assert token is not None
    reference(signed, "#id-messaging").set("URI", f"#{token.get(WSU_ID)}")
    resign(signed, sender)
    with pytest.raises(wss.SignatureWrappingError):
        check(signed)


def test_timestamp_copied_elsewhere(signed: etree._Element) -> None:
    stamp = signed.find(".//wsu:Timestamp", NS)
    assert stamp is not None
    extra = copy.deepcopy(stamp)
    del extra.attrib[WSU_ID]
    signed.find("env:Header", NS).append(extra)  # type: ignore[union-attr]
    with pytest.raises(wss.SignatureWrappingError, match="wsu:Timestamp"):
        check(signed)


def test_body_signed_twice_instead_of_messaging(signed: etree._Element,
                                                sender: SigningIdentity) -> None:
    reference(signed, "#id-messaging").set("URI", "#soapBody")
    resign(signed, sender)
    with pytest.raises(ReferenceMismatchError, match="twice"):
        check(signed)


def test_unsigned_timestamp(signed: etree._Element, sender: SigningIdentity) -> None:
    stamp = signed.find(".//wsu:Timestamp", NS)
    assert stamp is not None
    ref = reference(signed, f"#{stamp.get(WSU_ID)}")
    ref.getparent().remove(ref)  # type: ignore[union-attr]
    resign(signed, sender)
    with pytest.raises(ReferenceMismatchError, match="timestamp is not signed"):
        check(signed)


def test_sha1_digest(signed: etree._Element, sender: SigningIdentity) -> None:
    method = reference(signed, "#soapBody").find("ds:DigestMethod", NS)
    assert method is not None
    method.set("Algorithm", ds.SHA1)
    resign(signed, sender)
    with pytest.raises(ds.AlgorithmNotAllowedError, match="sha1"):
        check(signed)


def test_hmac_signature_method(signed: etree._Element) -> None:
    method = signed.find(".//ds:SignatureMethod", NS)
    assert method is not None
    method.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#hmac-sha1")
    with pytest.raises(ds.AlgorithmNotAllowedError, match="hmac"):
        check(signed)


def test_inclusive_c14n_transform(signed: etree._Element, sender: SigningIdentity) -> None:
    transform = reference(signed, "#soapBody").find("ds:Transforms/ds:Transform", NS)
    assert transform is not None
    transform.set("Algorithm", ds.C14N10)
    resign(signed, sender)
    with pytest.raises(ds.AlgorithmNotAllowedError):
        check(signed)


def test_missing_timestamp(signed: etree._Element) -> None:
    stamp = signed.find(".//wsu:Timestamp", NS)
    assert stamp is not None
    stamp.getparent().remove(stamp)  # type: ignore[union-attr]
    with pytest.raises(wss.TimestampError, match="0 wsu:Timestamp"):
        check(signed)


def test_expired_timestamp(signed: etree._Element) -> None:
    check(signed, at=NOW + dt.timedelta(seconds=120 + 59))  # within the skew
    with pytest.raises(wss.TimestampError, match="expired"):
        check(signed, at=NOW + dt.timedelta(seconds=120 + 61))


def test_future_timestamp(signed: etree._Element) -> None:
    check(signed, at=NOW - dt.timedelta(seconds=59))
    with pytest.raises(wss.TimestampError, match="future"):
        check(signed, at=NOW - dt.timedelta(seconds=61))
    with pytest.raises(wss.TimestampError, match="future"):
        check(signed, at=NOW - dt.timedelta(seconds=10), clock_skew=dt.timedelta(0))


@pytest.mark.parametrize(("created", "expires", "message"), [
    ("2025-03-01T12:00:00", None, "time zone"),
    ("not a time", None, "xs:dateTime"),
    (None, "2000-01-01T00:00:00Z", "before Created"),
])
def test_malformed_timestamp_signed_as_such(signed: etree._Element, sender: SigningIdentity,
                                            created: str | None, expires: str | None,
                                            message: str) -> None:
    stamp = signed.find(".//wsu:Timestamp", NS)
    assert stamp is not None
    if created is not None:
        stamp[0].text = created
    if expires is not None:
        stamp[1].text = expires
    redigest(signed, stamp, sender)
    with pytest.raises(wss.TimestampError, match=message):
        check(signed)


def test_timestamp_without_expires(signed: etree._Element, sender: SigningIdentity) -> None:
    stamp = signed.find(".//wsu:Timestamp", NS)
    assert stamp is not None
    stamp.remove(stamp[1])
    redigest(signed, stamp, sender)
    with pytest.raises(wss.TimestampError, match="Expires"):
        check(signed)


def test_untrusted_chain(signed: etree._Element, intermediate: SigningIdentity) -> None:
    other = devpki.make_ca("Some Other Root CA")
    with pytest.raises(CertificateChainError):
        check(signed, trust=[other.certificate], intermediates=[intermediate.certificate])
    with pytest.raises(CertificateChainError):
        check(signed, trust=[other.certificate])


def test_chain_checked_at_the_given_time(signed: etree._Element, ca: SigningIdentity,
                                         intermediate: SigningIdentity) -> None:
    late = NOW + dt.timedelta(days=3 * 365)  # the sender certificate is valid for two years
    with pytest.raises(CertificateChainError, match="expired"):
        check(signed, at=late, clock_skew=dt.timedelta(days=4 * 365), trust=[ca.certificate],
              intermediates=[intermediate.certificate])


def test_wrong_orgnr(signed: etree._Element) -> None:
    with pytest.raises(wss.SignerIdentityError, match=MAILBOX_ORGNR):
        check(signed, expected_orgnr=MAILBOX_ORGNR)


def test_token_swapped_for_another_certificate(signed: etree._Element,
                                               mailbox: SigningIdentity) -> None:
    token = signed.find(".//wsse:BinarySecurityToken", NS)
    assert token is not None
    token.text = ds.b64(mailbox.certificate.public_bytes(ds.serialization.Encoding.DER))
    with pytest.raises(SignatureValueError):
        check(signed)


def test_signed_info_tampered(signed: etree._Element) -> None:
    value = reference(signed, "#soapBody").find("ds:DigestValue", NS)
    assert value is not None
    value.text = ds.b64(b"\x00" * 32)
    with pytest.raises(SignatureValueError):
        check(signed)


def test_key_info_must_point_at_the_token(signed: etree._Element) -> None:
    ref = signed.find(".//wsse:SecurityTokenReference/wsse:Reference", NS)
    assert ref is not None
    ref.set("URI", "#X509-elsewhere")
    with pytest.raises(wss.SecurityHeaderError, match="SecurityTokenReference"):
        check(signed)


def test_key_info_with_x509_data_is_refused(signed: etree._Element,
                                            sender: SigningIdentity) -> None:
    signature = signed.find(".//ds:Signature", NS)
    key_info = signature.find("ds:KeyInfo", NS)  # type: ignore[union-attr]
    signature.remove(key_info)  # type: ignore[union-attr, arg-type]
    ds.add_key_info(signature, [sender.certificate])  # type: ignore[arg-type]
    with pytest.raises(wss.SecurityHeaderError, match="KeyInfo"):
        check(signed)


def test_second_security_header(signed: etree._Element) -> None:
    header = signed.find("env:Header", NS)
    assert header is not None
    header.append(etree.Element(f"{{{ds.WSSE_NS}}}Security"))
    with pytest.raises(wss.SecurityHeaderError, match="2 wsse:Security"):
        check(signed)


def test_missing_attachment(signed: etree._Element) -> None:
    with pytest.raises(ReferenceMismatchError, match="not received"):
        check(signed, attachments={})


def test_unsigned_attachment(signed: etree._Element) -> None:
    with pytest.raises(ReferenceMismatchError, match="not covered"):
        check(signed, attachments={CID: PACKAGE, CID2: b"smuggled"})


def test_extra_cid_reference(sender: SigningIdentity) -> None:
    root = envelope()
    wss.sign(root, sender, attachments={CID: sha256(PACKAGE), CID2: sha256(b"other")}, now=NOW)
    check(root, attachments={CID: PACKAGE, CID2: b"other"})
    with pytest.raises(ReferenceMismatchError, match=CID2):
        check(root, attachments={CID: PACKAGE})


def test_wrong_attachment_bytes(signed: etree._Element) -> None:
    with pytest.raises(wss.WssDigestMismatchError, match=f"cid:{CID}"):
        check(signed, attachments={CID: PACKAGE[:-1]})
    with pytest.raises(DigestMismatchError):
        check(signed, attachments={CID: wss.attachment_digest(b"other")})


def test_cid_reference_needs_the_swa_transform(signed: etree._Element,
                                               sender: SigningIdentity) -> None:
    transforms = reference(signed, f"cid:{CID}").find("ds:Transforms", NS)
    assert transforms is not None
    transforms.getparent().remove(transforms)  # type: ignore[union-attr]
    resign(signed, sender)
    with pytest.raises(ds.SignatureProfileError, match="SwA"):
        check(signed)


def test_no_wss_header_at_all() -> None:
    with pytest.raises(wss.SecurityHeaderError, match="not signed"):
        check(envelope(), attachments={})
