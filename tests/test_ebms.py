"""The ebMS layer: constants, builders, envelope assembly and parsing of the spec's examples."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import uuid
from pathlib import Path

import pytest
from lxml import etree

from sdp import ebms, xmlparse
from sdp.errors import (
    EbmsError,
    EmptyQueueError,
    InputError,
    ProtocolError,
    XmlSecurityError,
)
from sdp.schemas import NS_DS, NS_EBMS, NS_SBDH, NS_SDP, NS_SOAP12, NS_WSU, validate
from sdp_bindings import ebms as bindings
from tests.conftest import EXAMPLES, MF_ORGNR, PROCESSOR_ORGNR, SENDER_ORGNR

SOAP = EXAMPLES / "soap"
TS = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
EB = f"{{{NS_EBMS}}}"
ENV = f"{{{NS_SOAP12}}}"
WSU_ID = f"{{{NS_WSU}}}Id"
CID = "d6f0f811-69c4-4e03-a5a3-5ef02c4dfc11@meldingsformidler.sdp.difi.no"


def example(prefix: str) -> bytes:
    (path,) = [p for p in SOAP.glob("*.xml") if p.name.startswith(prefix)]
    return path.read_bytes()


def parsed(prefix: str) -> ebms.ParsedEnvelope:
    return ebms.parse_envelope(example(prefix))


def example_sbd(prefix: str) -> bytes:
    """A standalone SBD as a sender would have it: the Body child of an example."""
    root = xmlparse.parse(example(prefix))
    (sbd,) = root.iter(f"{{{NS_SBDH}}}StandardBusinessDocument")
    return etree.tostring(sbd)


def post_messaging(**overrides: object) -> bindings.Messaging:
    args: dict[str, object] = dict(
        message_id=ebms.new_message_id(), timestamp=TS, from_orgnr=SENDER_ORGNR,
        to_orgnr=MF_ORGNR, action=ebms.ACTION_FORMIDLE_DIGITAL_POST,
        conversation_id=str(uuid.uuid4()), mpc=ebms.mpc(False), attachment_cid=CID,
    )
    args.update(overrides)
    return ebms.user_message(**args)  # type: ignore[arg-type]


def roundtrip(envelope: etree._Element) -> ebms.ParsedEnvelope:
    """What the other side sees: the envelope serialized, then parsed from bytes."""
    return ebms.parse_envelope(etree.tostring(envelope))


# --- constants (DIGEST 0.3) ------------------------------------------------------------------


def test_constants_are_the_digest_table_values() -> None:
    assert ebms.SERVICE == "SDP"
    assert ebms.SERVICE_PMODE == "urn:sdp:service:sdp"
    assert ebms.ACTION_FORMIDLE_DIGITAL_POST == "FormidleDigitalPost"
    assert ebms.ACTION_FORMIDLE_FYSISK_POST == "FormidleFysiskPost"
    assert ebms.ACTION_KVITTERINGSFORESPOERSEL == "KvitteringsForespoersel"
    base = "http://begrep.difi.no/SikkerDigitalPost/1.0/transportlag/Meldingsutveksling/"
    assert ebms.AGREEMENT_FORMIDLE_DIGITAL_POST == base + "FormidleDigitalPostForsendelse"
    assert ebms.AGREEMENT_FORMIDLE_FYSISK_POST == base + "FormidleFysiskPostForsendelse"
    assert ebms.AGREEMENT_KVITTERINGSFORESPOERSEL == base + "KvitteringsForespoersel"
    assert ebms.ROLE_AVSENDER == "urn:sdp:avsender"
    assert ebms.ROLE_MELDINGSFORMIDLER == "urn:sdp:meldingsformidler"
    assert ebms.PARTY_ID_TYPE == "urn:oasis:names:tc:ebcore:partyid-type:iso6523:9908"
    assert (ebms.MPC_NORMAL, ebms.MPC_PRIORITERT) == ("urn:normal", "urn:prioritert")
    assert ebms.EBMS_ERRORS["EBMS:0006"] == ebms.EbmsErrorCode(
        "EBMS:0006", "EmptyMessagePartitionChannel", "Communication", "warning"
    )


# --- identifiers -----------------------------------------------------------------------------


def test_party_id_writes_9908_and_checks_mod11() -> None:
    assert ebms.party_id(SENDER_ORGNR) == f"9908:{SENDER_ORGNR}"
    with pytest.raises(InputError):
        ebms.party_id("123456789")  # the examples' broker number fails mod-11


@pytest.mark.parametrize(
    ("value", "orgnr"),
    [("9908:984661185", "984661185"), ("0192:984661185", "984661185"),
     ("9908:123456789", "123456789")],  # shape only: the spec's own example fails mod-11
)
def test_orgnr_from_party_id(value: str, orgnr: str) -> None:
    assert ebms.orgnr_from_party_id(value) == orgnr


@pytest.mark.parametrize(
    "value", ["984661185", "9908:98466118", "0088:984661185", "9908:98466118X", "iso6523:x", ""]
)
def test_orgnr_from_party_id_rejects(value: str) -> None:
    with pytest.raises(ProtocolError):
        ebms.orgnr_from_party_id(value)


def test_message_and_wsu_ids_are_fresh_uuids() -> None:
    a, b = ebms.new_message_id(), ebms.new_message_id()
    assert a != b
    assert str(uuid.UUID(a)) == a
    wid = ebms.new_wsu_id()
    assert wid.startswith("id-")
    assert uuid.UUID(wid[3:]).version == 4


# --- MPC (DIGEST 7.6) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "mpc_id", "value"),
    [
        (False, None, "urn:normal"),
        (True, None, "urn:prioritert"),
        (False, "b4dc0fba-58b7-4c9f-8693-14189a3d92a1",
         "urn:normal:b4dc0fba-58b7-4c9f-8693-14189a3d92a1"),
        (True, "avd_2.oslo~x", "urn:prioritert:avd_2.oslo~x"),
    ],
)
def test_mpc_format_and_parse(priority: bool, mpc_id: str | None, value: str) -> None:
    assert ebms.mpc(priority, mpc_id) == value
    assert ebms.parse_mpc(value) == ebms.Mpc(priority, mpc_id)
    assert str(ebms.parse_mpc(value)) == value


@pytest.mark.parametrize("mpc_id", ["", "a b", "a:b", "a/b", "a#b", "kø", "x" * 101, "a%20"])
def test_mpc_rejects_unsafe_ids(mpc_id: str) -> None:
    with pytest.raises(InputError):
        ebms.mpc(False, mpc_id)


@pytest.mark.parametrize(
    "value", ["normal:", "urn:normal:", "urn:hast", "urn:normal:a:b", "URN:NORMAL", "urn:normalx"]
)
def test_parse_mpc_rejects(value: str) -> None:
    with pytest.raises(ProtocolError):
        ebms.parse_mpc(value)


# --- building: user message ------------------------------------------------------------------


def test_user_message_envelope_is_valid_and_has_the_sdp_values() -> None:
    conversation = str(uuid.uuid4())
    messaging = post_messaging(conversation_id=conversation,
                               mpc=ebms.mpc(False, "b4dc0fba-58b7-4c9f-8693-14189a3d92a1"))
    envelope = ebms.build_envelope(messaging, example_sbd("1_request"))
    assert validate(envelope).local_name == "Envelope"

    (m,) = envelope.iter(f"{EB}Messaging")
    parent = m.getparent()
    assert parent is not None and parent.tag == f"{ENV}Header"
    assert m.get(f"{ENV}mustUnderstand") == "true"
    ids = ebms.envelope_ids(envelope)
    assert m.get(WSU_ID) == ids.messaging
    body = envelope.find(f"{ENV}Body")
    assert body is not None and body.get(WSU_ID) == ids.body
    assert ids.messaging != ids.body and ids.body.startswith("id-")

    um = m.find(f"{EB}UserMessage")
    assert um is not None
    assert um.get("mpc") == "urn:normal:b4dc0fba-58b7-4c9f-8693-14189a3d92a1"
    info = um.find(f"{EB}MessageInfo")
    assert info is not None
    assert info.findtext(f"{EB}Timestamp") == "2024-05-06T07:08:09.123+02:00"
    assert info.find(f"{EB}RefToMessageId") is None
    (frm,) = um.iter(f"{EB}From")
    (to,) = um.iter(f"{EB}To")
    assert frm.findtext(f"{EB}PartyId") == f"9908:{SENDER_ORGNR}"
    assert [p.get("type") for p in um.iter(f"{EB}PartyId")] == [ebms.PARTY_ID_TYPE] * 2
    assert frm.findtext(f"{EB}Role") == "urn:sdp:avsender"
    assert to.findtext(f"{EB}PartyId") == f"9908:{MF_ORGNR}"
    assert to.findtext(f"{EB}Role") == "urn:sdp:meldingsformidler"
    ci = um.find(f"{EB}CollaborationInfo")
    assert [c.text for c in ci] == [  # type: ignore[union-attr]
        ebms.AGREEMENT_FORMIDLE_DIGITAL_POST, "SDP", "FormidleDigitalPost", conversation
    ]
    # PartInfo shapes as in example 1: the Body part is empty, the package part is cid: with
    # MimeType and Content properties.
    body_part, package_part = um.find(f"{EB}PayloadInfo")  # type: ignore[misc]
    assert body_part.attrib == {} and len(body_part) == 0
    assert package_part.get("href") == f"cid:{CID}"
    props = {p.get("name"): p.text for p in package_part.iter(f"{EB}Property")}
    assert props == {"MimeType": "application/cms", "Content": "sdp:Dokumentpakke"}


def test_user_message_round_trips_through_parse() -> None:
    messaging = post_messaging(message_id="m-1", conversation_id="c-1")
    got = ebms.classify(roundtrip(ebms.build_envelope(messaging, example_sbd("1_request"))))
    assert isinstance(got, ebms.PulledUserMessage)
    assert (got.message_id, got.conversation_id, got.timestamp) == ("m-1", "c-1", TS)
    assert got.from_party.orgnr == SENDER_ORGNR and got.to_party.orgnr == MF_ORGNR
    assert [a.content_id for a in got.attachments] == [CID]
    assert got.sbd is not None and got.sbd.tag == f"{{{NS_SBDH}}}StandardBusinessDocument"


def test_physical_post_uses_its_action_and_agreement() -> None:
    messaging = post_messaging(action=ebms.ACTION_FORMIDLE_FYSISK_POST)
    ci = messaging.user_message[0].collaboration_info
    assert ci.action == "FormidleFysiskPost"
    assert ci.agreement_ref is not None
    assert ci.agreement_ref.value == ebms.AGREEMENT_FORMIDLE_FYSISK_POST


@pytest.mark.parametrize("cid", [CID, f"cid:{CID}", f"<{CID}>", f"cid:<{CID}>"])
def test_attachment_cid_is_written_without_brackets(cid: str) -> None:
    part = post_messaging(attachment_cid=cid).user_message[0].payload_info.part_info[1]  # type: ignore[union-attr]
    assert part.href == f"cid:{CID}"


def test_body_href_when_asked() -> None:
    messaging = post_messaging(body_href="#soapBody")
    env = ebms.build_envelope(messaging, example_sbd("1_request"), body_id="soapBody")
    validate(env)
    assert ebms.classify(roundtrip(env)).parts[0].href == "#soapBody"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"timestamp": dt.datetime(2024, 1, 1)}, "timezone"),  # naive on purpose
        ({"mpc": "normal:"}, "mpc"),
        ({"from_orgnr": "123456789"}, "mod-11"),
        ({"message_id": ""}, "message_id"),
        ({"conversation_id": "a b"}, "conversation_id"),
        ({"attachment_cid": "cid:"}, "attachment_cid"),
    ],
)
def test_user_message_rejects_bad_input(override: dict[str, object], error: str) -> None:
    with pytest.raises(InputError, match=error):
        post_messaging(**override)


# --- building: signals -----------------------------------------------------------------------


def test_pull_request_envelope() -> None:
    env = ebms.build_envelope(
        ebms.pull_request(message_id="pull-1", timestamp=TS, mpc=ebms.mpc(True, "q1")), None
    )
    validate(env)
    body = env.find(f"{ENV}Body")
    assert body is not None and len(body) == 0
    (pr,) = env.iter(f"{EB}PullRequest")
    assert pr.get("mpc") == "urn:prioritert:q1"
    assert next(env.iter(f"{EB}RefToMessageId"), None) is None
    got = ebms.classify(roundtrip(env))
    assert got == ebms.PullRequestSignal("pull-1", TS, "urn:prioritert:q1")


def _body_reference_of(prefix: str) -> ebms.NonRepudiationReference:
    """The WS-Security ds:Reference over the Body in an example's signature."""
    root = xmlparse.parse(example(prefix))
    body_id = root.find(f"{ENV}Body").get(WSU_ID)  # type: ignore[union-attr]
    (ref,) = [r for r in root.iter(f"{{{NS_DS}}}Reference") if r.get("URI") == f"#{body_id}"]
    return ebms.NonRepudiationReference.from_element(ref)


def test_receipt_for_a_pulled_message_matches_example_5() -> None:
    # The sender confirms 5_response by copying its Body reference (DIGEST 8.1).
    ref = _body_reference_of("5_response")
    env = ebms.build_envelope(
        ebms.receipt_signal(message_id="r-1", timestamp=TS,
                            ref_to_message_id="bc908c3b-e978-4b2e-88b0-4058a894b58a",
                            references=[ref]),
        None,
    )
    validate(env)
    # PrefixList="" is what the broker sends but invalid under strict XSD: never written.
    assert b'PrefixList=""' not in etree.tostring(env)
    (part,) = env.iter("{http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0}"
                       "MessagePartNRInformation")
    assert part[0].tag == f"{{{NS_DS}}}Reference"
    ours = ebms.classify(roundtrip(env))
    theirs = ebms.classify(parsed("5_request_transportkvittering"))
    assert isinstance(ours, ebms.ReceiptSignal) and isinstance(theirs, ebms.ReceiptSignal)
    assert ours.ref_to_message_id == theirs.ref_to_message_id
    strip = [(r.uri, r.digest_method, r.digest_value,
              tuple(t.algorithm for t in r.transforms)) for r in ours.references]
    assert strip == [(r.uri, r.digest_method, r.digest_value,
                      tuple(t.algorithm for t in r.transforms)) for r in theirs.references]


def test_receipt_keeps_nonempty_inclusive_prefixes() -> None:
    ref = ebms.NonRepudiationReference(
        "#TS-1", "http://www.w3.org/2001/04/xmlenc#sha256", b"\x01" * 32,
        (ebms.ReferenceTransform("http://www.w3.org/2001/10/xml-exc-c14n#", ("wsse", "env")),),
    )
    env = ebms.build_envelope(
        ebms.receipt_signal(message_id="r-2", timestamp=TS, ref_to_message_id="x",
                            references=[ref]), None)
    validate(env)
    got = ebms.classify(roundtrip(env))
    assert isinstance(got, ebms.ReceiptSignal)
    assert got.references == (ref,)


def test_receipt_needs_references() -> None:
    with pytest.raises(InputError):
        ebms.receipt_signal(message_id="r", timestamp=TS, ref_to_message_id="x", references=[])


def test_empty_queue_error_has_the_shape_of_example_6() -> None:
    messaging = ebms.error_signal(
        message_id="e-1", timestamp=TS, ref_to_message_id="pull-9", code="EBMS:0006",
        description="There is no message available for pulling from this MPC at this moment.",
    )
    env = ebms.build_envelope(messaging, None)
    validate(env)
    (ours,) = env.iter(f"{EB}Error")
    (theirs,) = xmlparse.parse(example("6_response")).iter(f"{EB}Error")
    keys = ("category", "errorCode", "origin", "severity", "shortDescription")
    assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}
    assert ours.get("refToMessageInError") == "pull-9"
    desc = ours.find(f"{EB}Description")
    assert desc is not None and desc.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    got = ebms.classify(roundtrip(env))
    assert isinstance(got, ebms.ErrorSignal) and got.is_empty_queue
    with pytest.raises(EmptyQueueError) as exc:
        ebms.raise_for_error(got, authenticated=True)
    assert exc.value.authenticated is True and exc.value.ref_to_message_id == "pull-9"


def test_error_signal_defaults_and_overrides() -> None:
    m = ebms.error_signal(message_id="e", timestamp=TS, ref_to_message_id="x",
                          code="EBMS:0101", detail="SignatureValidation")
    (err,) = m.signal_message[0].error
    assert (err.severity, err.category, err.short_description, err.error_detail) == (
        "failure", "Processing", "FailedAuthentication", "SignatureValidation")
    validate(ebms.build_envelope(m, None))
    custom = ebms.error_signal(message_id="e", timestamp=TS, ref_to_message_id=None,
                               code="EBMS:0999", severity="warning", category="Content")
    assert custom.signal_message[0].error[0].short_description is None
    with pytest.raises(InputError):
        ebms.error_signal(message_id="e", timestamp=TS, ref_to_message_id=None, code="0006")
    with pytest.raises(InputError):
        ebms.error_signal(message_id="e", timestamp=TS, ref_to_message_id=None,
                          code="EBMS:0004", severity="error")


def test_combined_receipt_and_pull_request() -> None:
    receipt = ebms.receipt_signal(message_id="r-1", timestamp=TS, ref_to_message_id="um-1",
                                  references=[_body_reference_of("5_response")])
    pull = ebms.pull_request(message_id="p-1", timestamp=TS, mpc="urn:normal")
    env = ebms.build_envelope(ebms.combine_signals(receipt, pull), None)
    validate(env)
    (m,) = env.iter(f"{EB}Messaging")
    assert [len(list(s.iter(f"{EB}Receipt"))) for s in m] == [1, 0]
    got = ebms.messages(roundtrip(env))
    assert [type(g) for g in got] == [ebms.ReceiptSignal, ebms.PullRequestSignal]
    assert got[0].ref_to_message_id == "um-1"  # type: ignore[union-attr]
    with pytest.raises(ProtocolError):
        ebms.classify(roundtrip(env))  # one response message was expected


def test_combine_signals_rejects() -> None:
    pull = ebms.pull_request(message_id="p-1", timestamp=TS, mpc="urn:normal")
    with pytest.raises(InputError):
        ebms.combine_signals(pull)
    with pytest.raises(InputError):
        ebms.combine_signals(pull, pull)  # same MessageId twice
    with pytest.raises(InputError):
        ebms.combine_signals(pull, post_messaging())


def test_soap_fault_with_ebms_error_round_trip() -> None:
    messaging = ebms.error_signal(message_id="e-2", timestamp=TS, ref_to_message_id="m-7",
                                  code="EBMS:0103", description="wrong algorithm")
    env = ebms.build_envelope(messaging, ebms.soap_fault("Sender", "Policy"))
    validate(env)
    got = ebms.classify(roundtrip(env))
    assert isinstance(got, ebms.SoapFault)
    assert got.code == "env:Sender" and got.reason == "Policy"
    err = got.exception()
    assert type(err) is EbmsError
    assert (err.code, err.category, err.severity, err.origin, err.description,
            err.ref_to_message_id, err.authenticated) == (
        "EBMS:0103", "Processing", "failure", "ebMS", "wrong algorithm", "m-7", False)
    with pytest.raises(InputError):
        ebms.soap_fault("Client", "SOAP 1.1 code")


def test_envelope_ids_can_be_chosen_and_are_unique_by_default() -> None:
    pull = ebms.pull_request(message_id="p", timestamp=TS, mpc="urn:normal")
    env = ebms.build_envelope(pull, None, messaging_id="id-m", body_id="soapBody")
    assert ebms.envelope_ids(env) == ebms.EnvelopeIds("id-m", "soapBody")
    a, b = ebms.build_envelope(pull, None), ebms.build_envelope(pull, None)
    assert ebms.envelope_ids(a) != ebms.envelope_ids(b)
    with pytest.raises(InputError):
        ebms.build_envelope(pull, None, messaging_id="same", body_id="same")
    # The caller's object is not modified by the envelope's attributes.
    assert pull.other_attributes == {} and not pull.w3_org_2003_05_soap_envelope_must_understand


# --- embedding the SBD (DIGEST 6.5) ----------------------------------------------------------

#: An SBD that tempts every namespace-rewriting bug: it redeclares the envelope's own `env` and
#: `wsu` prefixes, uses a default namespace, odd whitespace, a comment and a CDATA section.
TRICKY_SBD = (
    '<sbdh:StandardBusinessDocument xmlns:sbdh="' + NS_SBDH + '"\n'
    '    xmlns:env="' + NS_SOAP12 + '" xmlns:wsu="' + NS_WSU + '" xmlns="' + NS_SDP + '"\n'
    '    xmlns:unused="urn:example:unused">\n'
    '  <sbdh:StandardBusinessDocumentHeader>\t<!-- note -->\n'
    '    <sbdh:HeaderVersion>1.0</sbdh:HeaderVersion>\r\n'
    '  </sbdh:StandardBusinessDocumentHeader>\n'
    '  <digitalPost b="2"   a="1"><tittel><![CDATA[a < b & c]]></tittel>  </digitalPost>\n'
    '</sbdh:StandardBusinessDocument>'
).encode()


def _extracted_sbd(env: etree._Element) -> etree._Element:
    """The SBD as the receiver extracts it after transmission: bytes, parse, take Body child."""
    body = ebms.parse_envelope(etree.tostring(env)).body_children
    assert len(body) == 1
    return copy.deepcopy(body[0])


@pytest.mark.parametrize("sbd", [TRICKY_SBD, None], ids=["tricky", "example-1"])
def test_sbd_is_embedded_c14n_identically(sbd: bytes | None) -> None:
    data = sbd or example_sbd("1_request")
    standalone = xmlparse.parse(data)
    env = ebms.build_envelope(post_messaging(), data)
    embedded = env.find(f"{ENV}Body")[0]  # type: ignore[index]
    # Inclusive C14N of the extracted SBD equals the original: nothing was dropped or added.
    assert etree.tostring(_extracted_sbd(env), method="c14n") == etree.tostring(
        standalone, method="c14n")
    # Exclusive C14N (what the SBD signature uses) even in place inside the envelope.
    assert etree.tostring(embedded, method="c14n", exclusive=True) == etree.tostring(
        standalone, method="c14n", exclusive=True)
    # The SBD root keeps its own declarations, including those the envelope repeats.
    assert embedded.nsmap.items() >= standalone.nsmap.items()


def test_sbd_element_and_bytes_give_the_same_envelope_body() -> None:
    element = xmlparse.parse(TRICKY_SBD)
    pull = post_messaging()
    from_bytes = ebms.build_envelope(pull, TRICKY_SBD, body_id="b", messaging_id="m")
    from_element = ebms.build_envelope(pull, element, body_id="b", messaging_id="m")
    assert etree.tostring(from_bytes) == etree.tostring(from_element)
    assert element.getparent() is None  # the caller's element stays where it was


def test_embedded_signed_sbd_still_verifies(sender: object) -> None:
    signxml = pytest.importorskip("signxml")
    from cryptography.hazmat.primitives import serialization

    key = sender.key  # type: ignore[attr-defined]
    cert_pem = sender.certificate.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]
    signer = signxml.XMLSigner(
        method=signxml.methods.enveloped,
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    signed = etree.tostring(signer.sign(xmlparse.parse(TRICKY_SBD), key=key, cert=[cert_pem]))
    env = ebms.build_envelope(post_messaging(), signed)
    extracted = etree.tostring(_extracted_sbd(env))
    # The verifier raises on any digest or signature mismatch.
    signxml.XMLVerifier().verify(extracted, x509_cert=cert_pem)
    tampered = extracted.replace(b"a &lt; b", b"a &lt; c")
    assert tampered != extracted
    with pytest.raises(signxml.exceptions.InvalidSignature):
        signxml.XMLVerifier().verify(tampered, x509_cert=cert_pem)


def test_body_must_be_xml() -> None:
    with pytest.raises(XmlSecurityError):
        ebms.build_envelope(post_messaging(), b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
    with pytest.raises(InputError):
        ebms.build_envelope(post_messaging(), "<x/>")  # type: ignore[arg-type]


# --- parsing the spec's examples (DIGEST 7.10) -----------------------------------------------

EXPECTED = {
    "1_request": ebms.PulledUserMessage,
    "1_response": ebms.ReceiptSignal,
    "3_request": ebms.PulledUserMessage,
    "3_response": ebms.ReceiptSignal,
    "4_response": ebms.ReceiptSignal,
    "5_request_forespoersel": ebms.PullRequestSignal,
    "5_request_transportkvittering": ebms.ReceiptSignal,
    "5_response": ebms.PulledUserMessage,
    "6_request": ebms.PullRequestSignal,
    "6_response": ebms.ErrorSignal,
    "7_request": ebms.PulledUserMessage,
    "eksempel_soap_fault": ebms.SoapFault,
}


@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_every_example_is_classified(spec: Path, prefix: str) -> None:
    assert type(ebms.classify(parsed(prefix))) is EXPECTED[prefix]


def test_all_examples_are_covered(spec: Path) -> None:
    names = {p.name for p in SOAP.glob("*.xml")}
    covered = {n for n in names for p in EXPECTED if n.startswith(p)}
    assert names - covered == {
        "4_request_forretningsmelding_fra_postkasse_til_meldingsformidler.xml"}


def test_example_1_request(spec: Path) -> None:
    env = parsed("1_request")
    got = ebms.classify(env)
    assert isinstance(got, ebms.PulledUserMessage)
    assert got.message_id == "627c8082-6394-47a6-9107-a91e52240af2"
    assert got.mpc == "urn:normal" and got.ref_to_message_id is None
    assert (got.service, got.action, got.agreement_ref) == (
        "SDP", "FormidleDigitalPost", ebms.AGREEMENT_FORMIDLE_DIGITAL_POST)
    assert got.conversation_id == "2e0858c6-4662-4ba5-8d52-af813262d8ce"
    assert got.from_party == ebms.Party(f"9908:{PROCESSOR_ORGNR}", ebms.PARTY_ID_TYPE,
                                        "urn:sdp:avsender")
    assert got.to_party.orgnr == "123456789"
    assert got.parts[0].href is None
    (att,) = got.attachments
    assert att.content_id == CID
    assert att.properties == {"MimeType": "application/cms", "Content": "sdp:Dokumentpakke"}
    assert env.body_id == "soapBody"
    assert env.messaging_id == "id-e3c99cd1-6aca-4d71-8063-68b360a2df38"


def test_example_1_response_is_the_transport_receipt(spec: Path) -> None:
    request = ebms.classify(parsed("1_request"))
    got = ebms.classify(parsed("1_response"))
    assert isinstance(got, ebms.ReceiptSignal)
    assert got.ref_to_message_id == request.message_id
    assert got.message_id == "ef86727d-d10b-499a-b9c3-e6683187951a"
    attachment, body = got.references
    assert attachment.uri == f"cid:{CID}"
    assert attachment.transforms == (ebms.ReferenceTransform(
        "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1"
        "#Attachment-Content-Signature-Transform"),)
    assert attachment.digest_method == "http://www.w3.org/2001/04/xmlenc#sha256"
    # The attachment digest is the package fingerprint (DIGEST 7.8)...
    assert attachment.digest_value == base64.b64decode(
        "kZLCW3NPy62+MtrcKAicYNsOOfkMwgzi5XM/VyYazAw=")
    # ...and the Body reference is a copy of the one the sender signed in 1_request.
    signed = _body_reference_of("1_request")
    assert (body.uri, body.digest_method, body.digest_value) == (
        signed.uri, signed.digest_method, signed.digest_value)
    assert body.uri == "#soapBody"
    assert body.transforms[0].inclusive_prefixes == ()  # PrefixList="" read as empty


def test_example_5_response_is_a_pulled_receipt(spec: Path) -> None:
    pull = ebms.classify(parsed("5_request_forespoersel"))
    env = parsed("5_response")
    got = ebms.classify(env)
    assert isinstance(got, ebms.PulledUserMessage) and isinstance(pull, ebms.PullRequestSignal)
    assert got.ref_to_message_id == pull.message_id == "a60d4434-63cf-4a2a-9a79-6ef801084dd5"
    assert got.mpc == pull.mpc == "urn:normal"
    assert got.action == ebms.ACTION_KVITTERINGSFORESPOERSEL
    assert got.agreement_ref == ebms.AGREEMENT_FORMIDLE_DIGITAL_POST  # DIGEST 15 #4
    assert got.conversation_id == "b1cf9df9-587c-4c85-89bc-9262063c1be9"
    assert got.from_party.role == ebms.ROLE_MELDINGSFORMIDLER
    assert got.to_party == ebms.Party(f"9908:{PROCESSOR_ORGNR}", ebms.PARTY_ID_TYPE,
                                      ebms.ROLE_AVSENDER)
    assert got.attachments == () and len(got.parts) == 1
    assert got.sbd is not None
    assert got.sbd.find(f"{{{NS_SDP}}}kvittering") is not None
    # The sender's confirmation (5_request_transportkvittering) acknowledges exactly this.
    confirm = ebms.classify(parsed("5_request_transportkvittering"))
    assert isinstance(confirm, ebms.ReceiptSignal)
    assert confirm.ref_to_message_id == got.message_id
    (ref,) = confirm.references
    signed = _body_reference_of("5_response")
    assert (ref.uri, ref.digest_value) == (f"#{env.body_id}", signed.digest_value)
    assert ref.digest_value == base64.b64decode("Powp7jaV+Gm+Z78+dAYA7ihxPFYl/zcF0WU0fPPMAFA=")


def test_example_6_response_is_an_empty_queue(spec: Path) -> None:
    pull = ebms.classify(parsed("6_request"))
    got = ebms.classify(parsed("6_response"))
    assert isinstance(got, ebms.ErrorSignal) and got.is_empty_queue
    (e,) = got.errors
    assert e == ebms.EbmsErrorInfo(
        code="EBMS:0006", severity="warning", category="Communication", origin="ebMS",
        short_description="EmptyMessagePartitionChannel",
        description="There is no message available for pulling from this MPC at this moment.",
        detail=None, ref_to_message_in_error=pull.message_id,
    )
    err = got.exception()
    assert isinstance(err, EmptyQueueError)
    assert (err.code, err.severity, err.category, err.origin, err.authenticated) == (
        "EBMS:0006", "warning", "Communication", "ebMS", False)
    assert err.ref_to_message_id == "cad56089-3ad2-4f79-928a-12f733557f54"


def test_example_7_mpc_with_id_and_3_mailbox_role(spec: Path) -> None:
    seven = ebms.classify(parsed("7_request"))
    assert isinstance(seven, ebms.PulledUserMessage)
    assert seven.mpc is not None
    assert ebms.parse_mpc(seven.mpc) == ebms.Mpc(False, "b4dc0fba-58b7-4c9f-8693-14189a3d92a1")
    assert (seven.action, seven.agreement_ref) == (
        "FormidleFysiskPost", ebms.AGREEMENT_FORMIDLE_FYSISK_POST)
    three = ebms.classify(parsed("3_request"))
    assert three.to_party.role == ebms.ROLE_POSTKASSELEVERANDOER  # type: ignore[union-attr]


def test_fault_template_becomes_an_unauthenticated_error(spec: Path) -> None:
    env = parsed("eksempel_soap_fault")
    assert env.messaging is None  # the bindings refuse its eb:Error (DIGEST 15 #30)
    got = ebms.classify(env)
    assert isinstance(got, ebms.SoapFault)
    assert got.code == "S12:Sender"
    assert got.message_id == "UUID-6@sender.example.com"
    assert got.ref_to_message_id == "UUID-4@receiver.example.com"
    (e,) = got.errors
    assert (e.code, e.severity, e.description, e.detail) == ("EBMS:xxxx", "error", "....", "...")
    with pytest.raises(EbmsError) as exc:
        ebms.raise_for_error(got)
    assert not isinstance(exc.value, EmptyQueueError)
    assert exc.value.authenticated is False
    assert exc.value.ref_to_message_id == "UUID-4@receiver.example.com"


def test_plain_soap_fault_without_messaging() -> None:
    xml = (
        f'<env:Envelope xmlns:env="{NS_SOAP12}"><env:Body><env:Fault>'
        "<env:Code><env:Value>env:Receiver</env:Value></env:Code>"
        '<env:Reason><env:Text xml:lang="en">down</env:Text></env:Reason>'
        "</env:Fault></env:Body></env:Envelope>"
    ).encode()
    got = ebms.classify(ebms.parse_envelope(xml, validate=True))
    assert isinstance(got, ebms.SoapFault) and got.errors == ()
    err = got.exception()
    assert (err.code, err.description, err.authenticated) == ("env:Receiver", "down", False)


def test_example_4_request_has_no_messaging(spec: Path) -> None:
    with pytest.raises(ProtocolError, match="eb:Messaging"):
        parsed("4_request")


# --- structural errors -----------------------------------------------------------------------


def _mutated(change: str) -> bytes:
    env = ebms.build_envelope(post_messaging(), example_sbd("1_request"))
    header, body = env.find(f"{ENV}Header"), env.find(f"{ENV}Body")
    assert header is not None and body is not None
    if change == "second body":
        env.append(copy.deepcopy(body))
    elif change == "second header":
        env.insert(0, copy.deepcopy(header))
    elif change == "second messaging":
        header.append(copy.deepcopy(header[0]))
    elif change == "body first":
        env.remove(header)
        env.append(header)
    elif change == "no body":
        env.remove(body)
    elif change == "two sbds":
        body.append(copy.deepcopy(body[0]))
    elif change == "empty body":
        body.remove(body[0])
    elif change == "must understand":
        extra = etree.SubElement(header, "{urn:x}Extra")
        extra.set(f"{ENV}mustUnderstand", "true")
    elif change == "unknown href":
        next(env.iter(f"{EB}PartInfo")).set("href", "#elsewhere")
    elif change == "soap 1.1":
        env.tag = "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    elif change == "stray child":
        env.append(etree.Element("{urn:x}Trailer"))
    return etree.tostring(env)


@pytest.mark.parametrize(
    "change",
    ["second body", "second header", "second messaging", "body first", "no body", "two sbds",
     "empty body", "must understand", "unknown href", "soap 1.1", "stray child"],
)
def test_malformed_envelopes_are_protocol_errors(change: str) -> None:
    with pytest.raises(ProtocolError):
        ebms.messages(ebms.parse_envelope(_mutated(change)))


def test_unknown_optional_header_is_ignored() -> None:
    env = ebms.build_envelope(post_messaging(), example_sbd("1_request"))
    etree.SubElement(env.find(f"{ENV}Header"), "{urn:x}Extra")  # type: ignore[arg-type]
    assert isinstance(ebms.classify(roundtrip(env)), ebms.PulledUserMessage)


def test_signal_with_body_content_is_refused() -> None:
    pull = ebms.pull_request(message_id="p", timestamp=TS, mpc="urn:normal")
    env = ebms.build_envelope(pull, b"<x/>")
    with pytest.raises(ProtocolError, match="empty env:Body"):
        ebms.messages(roundtrip(env))


def test_user_message_mixed_with_a_signal_is_refused() -> None:
    mixed = post_messaging()
    mixed.signal_message.append(
        ebms.pull_request(message_id="p", timestamp=TS, mpc="urn:normal").signal_message[0])
    with pytest.raises(ProtocolError, match="alone"):
        ebms.messages(roundtrip(ebms.build_envelope(mixed, example_sbd("1_request"))))


def test_signal_with_two_kinds_is_refused() -> None:
    m = ebms.pull_request(message_id="p", timestamp=TS, mpc="urn:normal")
    m.signal_message[0].error.append(ebms.error_signal(
        message_id="e", timestamp=TS, ref_to_message_id=None, code="EBMS:0004"
    ).signal_message[0].error[0])
    with pytest.raises(ProtocolError, match="exactly one of"):
        ebms.messages(roundtrip(ebms.build_envelope(m, None)))


def test_schema_invalid_messaging_is_refused() -> None:
    xml = example("6_response").replace(b"<ns6:MessageId>", b"<ns6:MessageIdX>", 1)
    xml = xml.replace(b"</ns6:MessageId>", b"</ns6:MessageIdX>", 1)
    with pytest.raises(Exception, match="MessageId"):
        ebms.parse_envelope(xml)


def test_parse_is_safe() -> None:
    with pytest.raises(XmlSecurityError):
        ebms.parse_envelope(b'<!DOCTYPE e [<!ENTITY x "y">]><e>&x;</e>')


def test_parsing_leaves_the_tree_intact_for_signature_checks(spec: Path) -> None:
    # The WS-Security verifier runs on the same tree after classification.
    xml = example("1_response")
    env = ebms.parse_envelope(xml)
    ebms.classify(env)
    refs = list(env.root.iter(f"{{{NS_DS}}}Reference"))
    for ref in refs:
        ebms.NonRepudiationReference.from_element(ref)
    pristine = xmlparse.parse(xml)
    assert etree.tostring(env.root, method="c14n") == etree.tostring(pristine, method="c14n")
    assert len(refs) == 5  # 3 in the signature, 2 in the receipt
