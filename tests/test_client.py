"""The client end to end over real HTTP on loopback, against a broker of server primitives."""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree

from sdp import client as client_module
from sdp import devpki, ebms
from sdp import wssecurity as wss
from sdp.client import SdpClient, TransportReceiptError
from sdp.consignment import (
    Forsendelse,
    digital_post_info,
    epost_varsel,
    fysisk_post_info,
    norsk_adresse,
)
from sdp.environment import Environment
from sdp.errors import CertificateChainError, EbmsError
from sdp.package import cms
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.receipts import Kind
from sdp.transport import RetryPolicy, Timeouts
from tests.conftest import MAILBOX_ORGNR, MF_ORGNR, SENDER_ORGNR
from tests.loopback import LoopbackBroker, serve


@pytest.fixture
def broker_state(broker: devpki.Identity, mailbox: devpki.Identity, ca: devpki.Identity,
                 intermediate: devpki.Identity) -> Iterator[LoopbackBroker]:
    state = LoopbackBroker(broker=broker, mailbox=mailbox, trust=[ca.certificate],
                       intermediates=[intermediate.certificate], mf_orgnr=MF_ORGNR)
    with serve(state) as running:
        yield running


def _client(state: LoopbackBroker, sender: devpki.Identity, ca: devpki.Identity,
            intermediate: devpki.Identity, **kw: object) -> SdpClient:
    env = Environment.custom(state.url, [ca.certificate, intermediate.certificate])
    return SdpClient(env, sender, timeouts=Timeouts(connect=2, read=5),
                     retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05),
                     **kw)  # type: ignore[arg-type]


def _digital(mailbox: devpki.Identity) -> Forsendelse:
    return Forsendelse(
        avsender=avsender(SENDER_ORGNR),
        hoveddokument=Document(b"%PDF-1.7 brev", "brev.pdf", "application/pdf", title="Brev"),
        recipient_certificate=mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
        mottaker=mottaker("01043100358", "ola.nordmann#1ABC"),
        digital_post_info=digital_post_info(
            "Brev fra kommunen", aapningskvittering=True,
            epost=epost_varsel("ola@example.no", "Du har post", [0, 7])))


@pytest.fixture
def client(broker_state: LoopbackBroker, sender: devpki.Identity, ca: devpki.Identity,
           intermediate: devpki.Identity) -> Iterator[SdpClient]:
    with _client(broker_state, sender, ca, intermediate) as c:
        yield c


def test_send_digital_post_and_get_a_verified_transport_receipt(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity) -> None:
    f = _digital(mailbox)
    result = client.send(f)
    assert result.conversation_id == f.conversation_id
    assert result.transport_receipt.ref_to_message_id == result.message_id
    assert result.transport_receipt.signer_orgnr == MF_ORGNR
    assert broker_state.received_message_ids == [result.message_id]
    incoming = broker_state.incoming[0]
    assert incoming.fingerprint == result.fingerprint
    assert incoming.message.action == ebms.ACTION_FORMIDLE_DIGITAL_POST
    assert incoming.message.mpc == "urn:normal"
    uris = {r.uri for r in result.transport_receipt.references}
    assert any(u.startswith("cid:") for u in uris) and len(uris) == 2


@pytest.mark.parametrize("in_memory_limit", [client_module.IN_MEMORY_DOCUMENT_BYTES, 0])
def test_send_in_memory_and_through_a_folder_put_the_same_package_on_the_wire(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity,
        monkeypatch: pytest.MonkeyPatch, in_memory_limit: int) -> None:
    # Small packages skip the temporary folder; both routes must send what was fingerprinted.
    monkeypatch.setattr(client_module, "IN_MEMORY_DOCUMENT_BYTES", in_memory_limit)
    folders: list[str] = []
    real = tempfile.TemporaryDirectory

    def spy(*args: Any, **kwargs: Any) -> tempfile.TemporaryDirectory[str]:
        made = real(*args, **kwargs)
        folders.append(made.name)
        return made

    monkeypatch.setattr(client_module.tempfile, "TemporaryDirectory", spy)
    result = client.send(_digital(mailbox))
    incoming = broker_state.incoming[-1]
    assert hashlib.sha256(incoming.package).digest() == result.fingerprint
    assert cms.decrypt(incoming.package, mailbox.key)[:2] == b"PK"
    assert len(folders) == (0 if in_memory_limit else 1)


def test_send_physical_post_on_the_priority_queue(client: SdpClient, broker_state: LoopbackBroker,
                                                  mailbox: devpki.Identity) -> None:
    adr = norsk_adresse("Ola Nordmann", "0473", "Oslo", "Gata 1")
    f = Forsendelse(avsender=avsender(SENDER_ORGNR),
                    hoveddokument=Document(b"%PDF-1.7 brev", "brev.pdf", "application/pdf"),
                    recipient_certificate=mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
                    fysisk_post_info=fysisk_post_info(adr, adr), prioritert=True,
                    mpc_id="batch-7")
    broker_state.receipt_kinds = ["mottak", "levering"]
    client.send(f)
    incoming = broker_state.incoming[0]
    assert incoming.message.action == ebms.ACTION_FORMIDLE_FYSISK_POST
    assert incoming.message.mpc == "urn:prioritert:batch-7"
    assert client.pull() is None  # nothing on the normal queue
    first = client.pull(priority=True, mpc_id="batch-7")
    assert first is not None and first.kind is Kind.MOTTAK


def test_every_receipt_kind_is_pulled_verified_parsed_and_confirmed(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity) -> None:
    broker_state.receipt_kinds = ["levering", "aapning", "varslingfeilet", "mottak",
                                  "returpost", "feil"]
    sent = client.send(_digital(mailbox))
    kinds = []
    previous = None
    while True:
        # Confirm the previous receipt together with the next pull (DIGEST 8.4).
        receipt = client.pull(confirm=previous)
        if receipt is None:
            break
        assert receipt.conversation_id == sent.conversation_id
        assert receipt.sender_orgnr == MAILBOX_ORGNR
        assert receipt.signer == mailbox.certificate
        etree.fromstring(receipt.sbd_xml)  # exact signed bytes kept
        kinds.append(receipt.kind)
        if receipt.kind is Kind.VARSLINGFEILET:
            assert receipt.varslingskanal == "EPOST" and receipt.beskrivelse == "feil nummer"
        if receipt.kind is Kind.FEIL:
            assert receipt.feiltype == "KLIENT" and receipt.detaljer == "Kan ikke dekryptere"
        previous = receipt
    assert kinds == [Kind.LEVERING, Kind.AAPNING, Kind.VARSLINGFEILET, Kind.MOTTAK,
                     Kind.RETURPOST, Kind.FEIL]
    assert previous is not None
    client.confirm(previous)  # the last one on its own
    assert len(broker_state.confirmed) == 6 and not broker_state.inflight
    assert broker_state.confirmed[-1].references == previous.signed_references


def test_empty_queue_returns_none(client: SdpClient) -> None:
    assert client.pull() is None


def test_broker_error_becomes_a_typed_exception_and_is_not_retried(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity) -> None:
    broker_state.reject_with = "EBMS:0004"
    with pytest.raises(EbmsError) as err:
        client.send(_digital(mailbox))
    assert err.value.code == "EBMS:0004"
    assert err.value.authenticated  # signed by the broker
    assert len(broker_state.received_message_ids) == 1


def test_send_retried_after_a_dropped_connection_keeps_its_message_id(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity) -> None:
    broker_state.drop_after_processing = 1
    result = client.send(_digital(mailbox))
    assert result.attempts == 2
    assert broker_state.received_message_ids == [result.message_id, result.message_id]
    assert len(broker_state.incoming) == 1  # de-duplicated: one consignment


def _resign(data: bytes, identity: devpki.Identity, *, edit=None,
            now: dt.datetime | None = None) -> bytes:
    """Take the broker's receipt, optionally edit it, and sign it again as `identity`."""
    root = etree.fromstring(data)
    header = root[0]
    for security in header.findall(f"{{{wss.xmldsig.WSSE_NS}}}Security"):
        header.remove(security)
    if edit:
        edit(root)
    wss.sign(root, identity, now=now)
    return etree.tostring(root)


def _receipt_element(root: etree._Element, local: str) -> etree._Element:
    return next(el for el in root.iter() if isinstance(el.tag, str)
                and etree.QName(el).localname == local)


def _flip_digest(root: etree._Element) -> None:
    el = _receipt_element(root, "DigestValue")
    el.text = "A" + (el.text or "")[1:]


def _other_ref(root: etree._Element) -> None:
    _receipt_element(root, "RefToMessageId").text = ebms.new_message_id()


@pytest.mark.parametrize("case", ["digest", "ref", "orgnr", "untrusted", "expired", "wrapped"])
def test_bad_transport_receipts_are_rejected_each_with_its_own_error(
        case: str, client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity,
        broker: devpki.Identity, intermediate: devpki.Identity) -> None:
    if case == "digest":
        broker_state.tamper_receipt = lambda d: _resign(d, broker, edit=_flip_digest)
        expected: type[Exception] = TransportReceiptError
        match = "did not sign"
    elif case == "ref":
        broker_state.tamper_receipt = lambda d: _resign(d, broker, edit=_other_ref)
        expected, match = TransportReceiptError, "not to our message"
    elif case == "orgnr":
        impostor = devpki.make_enterprise_certificate(intermediate, SENDER_ORGNR, "Impostor")
        broker_state.tamper_receipt = lambda d: _resign(d, impostor)
        expected, match = wss.SignerIdentityError, MF_ORGNR
    elif case == "untrusted":
        rogue_ca = devpki.make_ca("Rogue CA")
        rogue = devpki.make_enterprise_certificate(rogue_ca, MF_ORGNR, "Rogue broker")
        broker_state.tamper_receipt = lambda d: _resign(d, rogue)
        expected, match = CertificateChainError, "issuer"
    elif case == "expired":
        old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        broker_state.tamper_receipt = lambda d: _resign(d, broker, now=old)
        expected, match = wss.TimestampError, "xpire"
    else:
        def wrap(d: bytes) -> bytes:
            root = etree.fromstring(d)
            messaging = root[0].find(f"{{{wss.EB_NS}}}Messaging")
            forged = etree.fromstring(etree.tostring(messaging))
            _receipt_element(forged, "RefToMessageId").text = "forged"
            root[1].append(messaging)  # the signed original moves into the Body ...
            root[0].insert(0, forged)  # ... and a forged one takes its place
            return etree.tostring(root)
        broker_state.tamper_receipt = wrap
        expected, match = wss.SignatureWrappingError, "Messaging"
    with pytest.raises(expected, match=match):
        client.send(_digital(mailbox))


def test_logged_bodies_hide_personal_data(broker_state: LoopbackBroker, sender: devpki.Identity,
                                          ca: devpki.Identity, intermediate: devpki.Identity,
                                          mailbox: devpki.Identity,
                                          caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="sdp.transport")
    with _client(broker_state, sender, ca, intermediate, log_bodies=True) as c:
        c.send(_digital(mailbox))
        c.pull()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "request body" in logged and "response body" in logged
    assert "Brev fra kommunen" not in logged  # titles
    assert "01043100358" not in logged and "ola.nordmann#1ABC" not in logged
    assert "ola@example.no" not in logged
    assert "StandardBusinessDocument" in logged  # structure stays readable


def test_redact_xml_keeps_ids_and_hides_values() -> None:
    from sdp.redact import redact_xml

    text = redact_xml("request", b"<sdp:mottaker><sdp:person><sdp:personidentifikator>"
                      b"01043100358</sdp:personidentifikator></sdp:person></sdp:mottaker>"
                      b"<eb:MessageId>4a9c2b6e-0f5c-4a9e-9a3f-1c3d5e7f9a1b</eb:MessageId>"
                      b"<note>call 12345678901 now</note>")
    assert "01043100358" not in text and "12345678901" not in text
    assert "4a9c2b6e-0f5c-4a9e-9a3f-1c3d5e7f9a1b" in text
    assert "<sdp:personidentifikator>***</sdp:personidentifikator>" in text


def test_unsigned_soap_fault_is_reported_as_unauthenticated(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity) -> None:
    broker_state.fault = True
    with pytest.raises(EbmsError) as err:
        client.send(_digital(mailbox))
    assert err.value.authenticated is False
    assert "internal error" in str(err.value)
    assert len(broker_state.received_message_ids) == 1  # a definite answer: not retried


def test_receipt_failing_verification_raises_and_is_never_confirmed(
        client: SdpClient, broker_state: LoopbackBroker, mailbox: devpki.Identity) -> None:
    from sdp.errors import DigestMismatchError

    client.send(_digital(mailbox))
    broker_state.tamper_sbd = lambda x: x.replace(b"<sdp:levering/>", b"<sdp:aapning/>")
    with pytest.raises(DigestMismatchError):
        client.pull()
    assert not broker_state.confirmed and len(broker_state.inflight) == 1


def test_prepared_send_resumes_after_a_restart_with_the_same_message_id(
        tmp_path, broker_state: LoopbackBroker, sender: devpki.Identity, ca: devpki.Identity,
        intermediate: devpki.Identity, mailbox: devpki.Identity) -> None:
    from sdp.client import Prepared
    from sdp.errors import OutcomeUnknownError

    broker_state.drop_after_processing = 1
    env = Environment.custom(broker_state.url, [ca.certificate, intermediate.certificate])
    first = SdpClient(env, sender, retry=RetryPolicy(max_attempts=1))
    prepared = first.prepare(_digital(mailbox), tmp_path / "outbox")
    with pytest.raises(OutcomeUnknownError):
        first.transmit(prepared)  # the broker took it, but we never heard back
    first.close()
    # A new process: everything needed is on disk.
    with SdpClient(env, sender) as second:
        result = second.transmit(Prepared.load(tmp_path / "outbox"))
    assert result.message_id == prepared.message_id
    assert broker_state.received_message_ids == [prepared.message_id] * 2
    assert len(broker_state.incoming) == 1
