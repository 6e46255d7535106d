"""Business message + SBD: built from the bindings, schema-valid, signed as DIGEST 3.11 says."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from pathlib import Path

import pytest
from lxml import etree

from sdp import devpki, ebms
from sdp.consignment import (
    Forsendelse,
    digital_post_info,
    fysisk_post_info,
    norsk_adresse,
)
from sdp.errors import CertificateChainError, DigestMismatchError, SchemaValidationError
from sdp.message import (
    SignerIdentityError,
    build_digital_post_sbd,
    build_sbd,
    digital_post,
    header,
    verify_sbd,
)
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.schemas import NS_SBDH, validate
from sdp_bindings import sdp as s
from tests.conftest import EXAMPLES, MAILBOX_ORGNR, MF_ORGNR, PROCESSOR_ORGNR, SENDER_ORGNR

FINGERPRINT = hashlib.sha256(b"the encrypted package").digest()
SBD_TAG = f"{{{NS_SBDH}}}StandardBusinessDocument"


def _digital(identity: devpki.Identity, **kw: object) -> Forsendelse:
    args: dict[str, object] = dict(
        avsender=avsender(SENDER_ORGNR), hoveddokument=Document(b"%PDF", "a.pdf",
                                                                 "application/pdf"),
        recipient_certificate=identity.certificate, receiver_orgnr=MAILBOX_ORGNR,
        mottaker=mottaker("01043100358", "ola.nordmann#1ABC"),
        digital_post_info=digital_post_info("Brev fra kommunen", aapningskvittering=True))
    args.update(kw)
    return Forsendelse(**args)  # type: ignore[arg-type]


def test_digital_post_sbd_is_valid_signed_and_typed(sender: devpki.Identity,
                                                    mailbox: devpki.Identity,
                                                    ca: devpki.Identity,
                                                    intermediate: devpki.Identity) -> None:
    f = _digital(mailbox)
    sbd = build_digital_post_sbd(f, FINGERPRINT, sender)
    validate(sbd.xml)
    v = verify_sbd(sbd.xml, trust=[ca.certificate], intermediates=[intermediate.certificate])
    assert isinstance(v.message, s.DigitalPost)
    assert v.message.dokumentpakkefingeravtrykk.digest_value.value == FINGERPRINT
    assert (v.sender_orgnr, v.receiver_orgnr) == (SENDER_ORGNR, MAILBOX_ORGNR)
    assert v.conversation_id == f.conversation_id == sbd.conversation_id
    assert v.document_type == "digitalPost"
    assert v.instance_identifier == sbd.instance_identifier
    root = etree.fromstring(sbd.xml)
    post = root[1]
    assert etree.QName(post[0]).localname == "Signature"  # first child (DIGEST 3.1)
    # SBD declares only what it uses, so embedding cannot change its meaning.
    assert set(root.nsmap) == {"sbdh", "sdp", "ds"}


def test_sbd_signature_verified_by_signxml(sender: devpki.Identity,
                                           mailbox: devpki.Identity) -> None:
    from signxml import XMLVerifier

    sbd = build_digital_post_sbd(_digital(mailbox), FINGERPRINT, sender)
    result = XMLVerifier().verify(sbd.xml, x509_cert=sender.certificate)
    assert result.signed_xml is not None
    assert etree.QName(result.signed_xml).localname == "StandardBusinessDocument"


def test_physical_post_on_behalf_of_another(sender: devpki.Identity, intermediate: devpki.Identity,
                                            ca: devpki.Identity) -> None:
    processor = devpki.make_enterprise_certificate(intermediate, PROCESSOR_ORGNR, "Databehandler")
    adr = norsk_adresse("Ola Nordmann", "0473", "Oslo", "Gata 1")
    f = Forsendelse(avsender=avsender(SENDER_ORGNR), hoveddokument=Document(b"%PDF", "a.pdf",
                                                                            "application/pdf"),
                    recipient_certificate=sender.certificate, receiver_orgnr=MF_ORGNR,
                    fysisk_post_info=fysisk_post_info(adr, adr),
                    databehandler_orgnr=PROCESSOR_ORGNR)
    sbd = build_digital_post_sbd(f, FINGERPRINT, processor)
    v = verify_sbd(sbd.xml, trust=[ca.certificate],
                   intermediates=[intermediate.certificate])
    assert v.sender_orgnr == PROCESSOR_ORGNR  # the technical sender (DIGEST 1.7)
    assert isinstance(v.message, s.DigitalPost)
    assert v.message.avsender.organisasjon.value == f"9908:{SENDER_ORGNR}"
    assert v.message.fysisk_post_info is not None and v.message.mottaker is None
    with pytest.raises(SignerIdentityError):
        build_digital_post_sbd(f, FINGERPRINT, sender)  # signer must be the SBDH Sender


def test_schema_is_checked_before_signing(sender: devpki.Identity,
                                          mailbox: devpki.Identity) -> None:
    info = digital_post_info("Brev")
    info.ikke_sensitiv_tittel = s.Tittel(value="x" * 300, lang="NO")  # bypasses the builder
    with pytest.raises(SchemaValidationError) as err:
        build_digital_post_sbd(_digital(mailbox, digital_post_info=info), FINGERPRINT, sender)
    assert "before signing" in str(err.value)
    assert any("ikkeSensitivTittel" in p for p, _ in err.value.violations)


def test_embedded_sbd_verifies_after_extraction(sender: devpki.Identity,
                                                mailbox: devpki.Identity,
                                                ca: devpki.Identity,
                                                intermediate: devpki.Identity) -> None:
    sbd = build_digital_post_sbd(_digital(mailbox), FINGERPRINT, sender)
    messaging = ebms.user_message(
        message_id=ebms.new_message_id(), timestamp=dt.datetime.now(dt.UTC),
        from_orgnr=SENDER_ORGNR, to_orgnr=MF_ORGNR, action=ebms.ACTION_FORMIDLE_DIGITAL_POST,
        conversation_id=sbd.instance_identifier, mpc=ebms.mpc(False),
        attachment_cid="pakke@sdp")
    envelope = ebms.build_envelope(messaging, sbd.xml)
    wire = etree.tostring(envelope)
    received = etree.fromstring(wire)
    (embedded,) = received.iter(SBD_TAG)
    v = verify_sbd(embedded, trust=[ca.certificate], intermediates=[intermediate.certificate])
    assert v.instance_identifier == sbd.instance_identifier
    validate(received)


def test_tampering_untrusted_and_wrong_signer_are_refused(sender: devpki.Identity,
                                                          mailbox: devpki.Identity) -> None:
    sbd = build_digital_post_sbd(_digital(mailbox), FINGERPRINT, sender)
    with pytest.raises(DigestMismatchError):
        verify_sbd(sbd.xml.replace(b"ola.nordmann#1ABC", b"kari.nordmann#1ABC"), trust=None)
    with pytest.raises(CertificateChainError):
        verify_sbd(sbd.xml, trust=[devpki.make_ca("Other").certificate])
    # Someone signing a message whose header says it comes from the sender:
    f = _digital(mailbox)
    hdr = header(sender_orgnr=SENDER_ORGNR, receiver_orgnr=MAILBOX_ORGNR,
                 document_type="digitalPost", conversation_id=f.conversation_id)
    forged = build_sbd(digital_post(f, FINGERPRINT), hdr, mailbox)
    with pytest.raises(SignerIdentityError, match=f"signed by {MAILBOX_ORGNR}"):
        verify_sbd(forged.xml, trust=None)


def _strip_pretty_print(root: etree._Element) -> None:
    for el in root.iter():
        if el.text is not None and not el.text.strip() and len(el):
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None


SIGNED_SBD_EXAMPLES = {
    "1_request_forretningsmelding_fra_postavsender_til_meldingsformidler.xml": "889640782",
    "3_request_forretningsmelding_fra_meldingsformidler_til_postkasse.xml": "889640782",
    "4_request_forretningsmelding_fra_postkasse_til_meldingsformidler.xml": "984661185",
    "5_response_forretningskvittering_fra_meldingsformidler_til_postavsender.xml": "984661185",
}


@pytest.mark.parametrize("name", sorted(SIGNED_SBD_EXAMPLES))
def test_example_sbd_signatures_verify(spec: Path, name: str) -> None:
    root = etree.parse(str(EXAMPLES / "soap" / name)).getroot()
    _strip_pretty_print(root)  # the examples were pretty-printed after signing (DIGEST 3.11)
    (sbd,) = root.iter(SBD_TAG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative serial numbers in the 2014 test certificates
        v = verify_sbd(sbd, trust=None)
    assert v.signer_orgnr == v.sender_orgnr == SIGNED_SBD_EXAMPLES[name]


def test_example_edited_after_signing_fails(spec: Path) -> None:
    name = "7_request_forretningsmelding_fra_postavsender_til_meldingsformidler_fysisk_post.xml"
    root = etree.parse(str(EXAMPLES / "soap" / name)).getroot()
    _strip_pretty_print(root)
    (sbd,) = root.iter(SBD_TAG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DigestMismatchError):
            verify_sbd(sbd, trust=None)  # DIGEST 15 item 27: its body was edited
