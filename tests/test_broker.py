"""The meldingsformidler simulator over real HTTP on loopback, driven by the real client.

Every exchange is signed, verified, MIME-packed and sent over a socket; time for the queue
(delays, the invisibility window, virkningstidspunkt) is moved with an injected clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from sdp import devpki, ebms, mime
from sdp.broker import (
    Broker,
    Fault,
    ReceiptStep,
    Rule,
    RunningBroker,
    Scenarios,
    load_dev_certs,
    load_scenarios,
    serve,
)
from sdp.client import SdpClient
from sdp.consignment import (
    Forsendelse,
    digital_post_info,
    fysisk_post_info,
    norsk_adresse,
)
from sdp.environment import Environment
from sdp.errors import (
    CertificateChainError,
    ConfigurationError,
    EbmsError,
    OutcomeUnknownError,
    TrustError,
)
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.receipts import Kind, Kvittering
from sdp.transport import RetryPolicy, Timeouts
from sdp.wssecurity import SignerIdentityError
from sdp_bindings import sdp as s
from tests.conftest import MAILBOX_ORGNR, MF_ORGNR, SENDER_ORGNR

PRINT_ORGNR = "889640782"
PERSON = "01043100358"
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    """The broker's notion of time, moved by hand."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def printer(intermediate: devpki.Identity) -> devpki.Identity:
    return devpki.make_enterprise_certificate(intermediate, PRINT_ORGNR, "Test Utskrift AS")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_broker(broker: devpki.Identity, mailbox: devpki.Identity, printer: devpki.Identity,
                ca: devpki.Identity, intermediate: devpki.Identity, clock: Clock,
                tmp_path: Path) -> Iterator[object]:
    started: list[RunningBroker] = []

    def make(*, data_dir: Path | None = None, **kw: object) -> RunningBroker:
        options: dict[str, object] = dict(
            identity=broker, mailbox=mailbox, print_provider=printer, trust=[ca.certificate],
            intermediates=[intermediate.certificate], data_dir=data_dir or tmp_path / "data",
            clock=clock, fault_issuer=intermediate)
        options.update(kw)
        running = serve(Broker(**options))  # type: ignore[arg-type]
        started.append(running)
        return running

    yield make
    for running in started:
        try:
            running.stop()
        except Exception:
            pass


@pytest.fixture
def running(make_broker) -> RunningBroker:  # type: ignore[no-untyped-def]
    return make_broker()


def _client(url: str, identity: devpki.Identity, ca: devpki.Identity,
            intermediate: devpki.Identity, *, read: float = 5) -> SdpClient:
    env = Environment.custom(url, [ca.certificate, intermediate.certificate])
    return SdpClient(env, identity, timeouts=Timeouts(connect=2, read=read),
                     retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05,
                                       jitter=0))


@pytest.fixture
def client(running: RunningBroker, sender: devpki.Identity, ca: devpki.Identity,
           intermediate: devpki.Identity) -> Iterator[SdpClient]:
    with _client(running.url, sender, ca, intermediate) as c:
        yield c


def _digital(mailbox: devpki.Identity, *, aapning: bool = True, adresse: str = "ola#1ABC",
             virkning: dt.datetime | None = None, prioritert: bool = False) -> Forsendelse:
    return Forsendelse(
        avsender=avsender(SENDER_ORGNR),
        hoveddokument=Document(b"%PDF-1.7 brev", "brev.pdf", "application/pdf", title="Brev"),
        recipient_certificate=mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
        mottaker=mottaker(PERSON, adresse),
        digital_post_info=digital_post_info("Brev fra kommunen", aapningskvittering=aapning,
                                            virkningstidspunkt=virkning),
        prioritert=prioritert)


def _physical(printer: devpki.Identity, *, makulering: bool = False) -> Forsendelse:
    adr = norsk_adresse("Ola Nordmann", "0473", "Oslo", "Gata 1")
    retur = (s.FysiskPostReturhaandtering.MAKULERING_MED_MELDING if makulering
             else s.FysiskPostReturhaandtering.DIREKTE_RETUR)
    return Forsendelse(avsender=avsender(SENDER_ORGNR),
                       hoveddokument=Document(b"%PDF-1.7 brev", "brev.pdf", "application/pdf"),
                       recipient_certificate=printer.certificate, receiver_orgnr=PRINT_ORGNR,
                       fysisk_post_info=fysisk_post_info(adr, adr, returhaandtering=retur))


def _drain(client: SdpClient, **kw: object) -> list[Kvittering]:
    """Pull until empty, confirming each receipt with the next pull (DIGEST 8.4)."""
    got: list[Kvittering] = []
    previous = None
    while True:
        receipt = client.pull(confirm=previous, **kw)  # type: ignore[arg-type]
        if receipt is None:
            break
        got.append(receipt)
        previous = receipt
    if previous is not None:
        client.confirm(previous)
    return got


# --- happy paths -------------------------------------------------------------------------


def test_digital_post_delivered_and_opened_then_the_queue_is_empty(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity) -> None:
    f = _digital(mailbox)
    sent = client.send(f)
    assert sent.transport_receipt.signer_orgnr == MF_ORGNR
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.LEVERING, Kind.AAPNING]
    assert all(r.conversation_id == f.conversation_id for r in receipts)
    assert all(r.sender_orgnr == MAILBOX_ORGNR and r.signer == mailbox.certificate
               for r in receipts)
    state = running.broker.state
    assert [c["package_status"] for c in state.consignments()] == ["ok"]
    assert all(r.confirmed_at is not None for r in state.receipts())
    assert client.pull() is None


def test_no_opening_receipt_unless_asked_for(client: SdpClient,
                                            mailbox: devpki.Identity) -> None:
    client.send(_digital(mailbox, aapning=False))
    assert [r.kind for r in _drain(client)] == [Kind.LEVERING]


def test_physical_post_is_received_then_posted(client: SdpClient, running: RunningBroker,
                                               printer: devpki.Identity) -> None:
    client.send(_physical(printer))
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.MOTTAK, Kind.LEVERING]
    assert all(r.signer == printer.certificate for r in receipts)
    assert running.broker.state.consignments()[0]["digital"] == 0


def test_queues_are_per_mpc(client: SdpClient, mailbox: devpki.Identity) -> None:
    client.send(_digital(mailbox, aapning=False, prioritert=True))
    assert client.pull() is None  # nothing on urn:normal
    receipt = client.pull(priority=True)
    assert receipt is not None and receipt.mpc == "urn:prioritert"


# --- durability, de-duplication, leases ---------------------------------------------------


def test_repeated_message_id_gets_the_original_answer_byte_for_byte(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity) -> None:
    recorded: list[tuple[str, bytes]] = []
    post = client.transport.post

    def recording(url, body, content_type=None, **kw):  # type: ignore[no-untyped-def]
        if isinstance(body, mime.MultipartBody):
            recorded.append((body.content_type, body.to_bytes()))
        return post(url, body, content_type, **kw)

    client.transport.post = recording  # type: ignore[method-assign]
    sent = client.send(_digital(mailbox))
    content_type, body = recorded[0]
    again = requests.post(running.url, data=body, headers={"Content-Type": content_type},
                          timeout=5)
    assert again.status_code == 200
    assert again.content == sent.transport_receipt.envelope_xml
    assert running.broker.state.consignment_count() == 1
    assert len(running.broker.state.receipts()) == 2  # levering + aapning, not four


def test_unconfirmed_receipt_comes_back_after_the_window_as_the_same_receipt(
        make_broker, sender: devpki.Identity, ca: devpki.Identity,  # type: ignore[no-untyped-def]
        intermediate: devpki.Identity, mailbox: devpki.Identity, clock: Clock) -> None:
    running = make_broker(invisibility_window=dt.timedelta(seconds=30))
    with _client(running.url, sender, ca, intermediate) as client:
        client.send(_digital(mailbox, aapning=False))
        first = client.pull()
        assert first is not None
        assert client.pull() is None  # leased: invisible
        clock.advance(29)
        assert client.pull() is None
        clock.advance(2)
        again = client.pull()
        assert again is not None
        assert again.sbd_instance_identifier == first.sbd_instance_identifier
        assert again.message_id != first.message_id
        client.confirm(first)  # a late confirmation of the first delivery still counts
        clock.advance(60)
        assert client.pull() is None


def test_virkningstidspunkt_holds_back_levering_and_aapning(
        client: SdpClient, mailbox: devpki.Identity, clock: Clock) -> None:
    client.send(_digital(mailbox, virkning=T0 + dt.timedelta(hours=2)))
    assert client.pull() is None
    clock.advance(2 * 3600 - 1)
    assert client.pull() is None
    clock.advance(1)
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.LEVERING, Kind.AAPNING]
    assert receipts[0].tidspunkt == T0 + dt.timedelta(hours=2)


def test_restart_mid_queue_loses_nothing_and_duplicates_nothing(
        make_broker, sender: devpki.Identity, ca: devpki.Identity,  # type: ignore[no-untyped-def]
        intermediate: devpki.Identity, mailbox: devpki.Identity, clock: Clock,
        tmp_path: Path) -> None:
    data = tmp_path / "restart"
    first = make_broker(data_dir=data)
    with _client(first.url, sender, ca, intermediate) as client:
        client.send(_digital(mailbox))
        client.send(_digital(mailbox))
        confirmed = client.pull()
        assert confirmed is not None
        client.confirm(confirmed)
        leased = client.pull()  # delivered but never confirmed
        assert leased is not None
    first.stop()

    second = make_broker(data_dir=data)
    with _client(second.url, sender, ca, intermediate) as client:
        rest = _drain(client)
        assert len(rest) == 2  # the two never pulled; the leased one is still hidden
        clock.advance(301)
        redelivered = _drain(client)
    ids = [r.sbd_instance_identifier for r in [confirmed, *rest, *redelivered]]
    assert [r.sbd_instance_identifier for r in redelivered] == [leased.sbd_instance_identifier]
    assert len(ids) == len(set(ids)) == 4
    assert second.broker.state.consignment_count() == 2


# --- scenarios ----------------------------------------------------------------------------


def _scenario(running: RunningBroker, *rules: Rule, faults: tuple[Fault, ...] = ()) -> None:
    running.broker.set_scenarios(Scenarios(rules, faults))


def test_notice_failed_matched_on_personidentifikator(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity) -> None:
    _scenario(running, Rule(personidentifikator=PERSON, outcome="notice-failed",
                            varslingskanal="SMS", beskrivelse="Ugyldig nummer"))
    client.send(_digital(mailbox))
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.LEVERING, Kind.VARSLINGFEILET]
    assert receipts[1].varslingskanal == "SMS" and receipts[1].beskrivelse == "Ugyldig nummer"


def test_rejected_matched_on_postkasseadresse_only(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity) -> None:
    _scenario(running, Rule(postkasseadresse="kari#2XYZ", outcome="rejected",
                            feiltype="SERVER", detaljer="Midlertidig feil"))
    client.send(_digital(mailbox, adresse="kari#2XYZ", aapning=False))
    client.send(_digital(mailbox, adresse="ola#1ABC", aapning=False))
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.FEIL, Kind.LEVERING]
    assert receipts[0].feiltype == "SERVER" and receipts[0].detaljer == "Midlertidig feil"


def test_opened_after_a_delay_matched_on_conversation_id(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity,
        clock: Clock) -> None:
    f = _digital(mailbox)
    _scenario(running, Rule(conversation_id=f.conversation_id, outcome="opened", delay=10,
                            opened_after=50))
    client.send(f)
    assert client.pull() is None  # the delay: nothing yet
    clock.advance(10)
    assert [r.kind for r in _drain(client)] == [Kind.LEVERING]
    clock.advance(49)
    assert client.pull() is None
    clock.advance(1)
    assert [r.kind for r in _drain(client)] == [Kind.AAPNING]


def test_returned_physical_post_only_with_makulering(
        client: SdpClient, running: RunningBroker, printer: devpki.Identity) -> None:
    _scenario(running, Rule(outcome="returned"))
    client.send(_physical(printer, makulering=True))
    assert [r.kind for r in _drain(client)] == [Kind.MOTTAK, Kind.LEVERING, Kind.RETURPOST]
    client.send(_physical(printer, makulering=False))  # DIREKTE_RETUR: no returpost
    assert [r.kind for r in _drain(client)] == [Kind.MOTTAK, Kind.LEVERING]


def test_explicit_receipts_and_duplicated_queue_entries(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity) -> None:
    _scenario(running, Rule(receipts=(ReceiptStep("levering"),), duplicate=True))
    client.send(_digital(mailbox))
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.LEVERING, Kind.LEVERING]
    # The same receipt twice: the sender de-duplicates on the SBD InstanceIdentifier.
    assert receipts[0].sbd_instance_identifier == receipts[1].sbd_instance_identifier
    assert receipts[0].message_id != receipts[1].message_id


def test_silent_consignment_gets_no_receipt(client: SdpClient, running: RunningBroker,
                                            mailbox: devpki.Identity, clock: Clock) -> None:
    _scenario(running, Rule(outcome="silent"))
    client.send(_digital(mailbox))
    clock.advance(86400)
    assert client.pull() is None
    assert running.broker.state.consignment_count() == 1


def test_package_encrypted_to_the_wrong_certificate_gives_a_feil_receipt(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity,
        sender: devpki.Identity) -> None:
    f = _digital(mailbox)
    f.recipient_certificate = sender.certificate  # KRR gave the wrong certificate
    client.send(f)  # the broker cannot see inside: the transport receipt is positive
    receipts = _drain(client)
    assert [r.kind for r in receipts] == [Kind.FEIL]
    assert receipts[0].feiltype == "KLIENT" and receipts[0].detaljer == "Kan ikke dekryptere"
    assert running.broker.state.consignments()[0]["package_status"] == "Kan ikke dekryptere"


@pytest.mark.parametrize("fault, detaljer", [("manifest", "Feil i manifest"),
                                             ("signature", "Feil signatur")])
def test_bad_package_contents_give_a_feil_receipt(
        fault: str, detaljer: str, client: SdpClient, mailbox: devpki.Identity,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender with a broken packager: the manifest names another avsender unit, or the
    XAdES signature is by a certificate outside the trust store (DIGEST 9.4)."""
    import sdp.client

    real = sdp.client.build_package
    rogue = devpki.make_enterprise_certificate(devpki.make_ca("Rogue CA"), SENDER_ORGNR, "X")

    def broken(out, **kw):  # type: ignore[no-untyped-def]
        if fault == "manifest":
            kw["avsender"] = avsender(SENDER_ORGNR, avsenderidentifikator="annen-enhet")
        else:
            kw["signer"] = rogue
        return real(out, **kw)

    monkeypatch.setattr(sdp.client, "build_package", broken)
    client.send(_digital(mailbox))
    receipts = _drain(client)
    assert [(r.kind, r.feiltype, r.detaljer) for r in receipts] == [
        (Kind.FEIL, "KLIENT", detaljer)]


def test_concurrent_senders_are_all_accepted(
        running: RunningBroker, sender: devpki.Identity, ca: devpki.Identity,
        intermediate: devpki.Identity, mailbox: devpki.Identity) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def send_one(_: int) -> str:
        with _client(running.url, sender, ca, intermediate) as c:
            return c.send(_digital(mailbox, aapning=False)).message_id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(send_one, range(6)))
    assert len(set(ids)) == 6
    assert running.broker.state.consignment_count() == 6


# --- transport errors ----------------------------------------------------------------------


def test_unregistered_sender_gets_a_signed_failed_authentication(
        make_broker, sender: devpki.Identity, ca: devpki.Identity,  # type: ignore[no-untyped-def]
        intermediate: devpki.Identity, mailbox: devpki.Identity) -> None:
    running = make_broker(registered_senders={"889640782"})
    with _client(running.url, sender, ca, intermediate) as client:
        with pytest.raises(EbmsError) as err:
            client.send(_digital(mailbox))
        assert err.value.code == "EBMS:0101" and err.value.authenticated
        with pytest.raises(EbmsError) as pulled:
            client.pull()
        assert pulled.value.code == "EBMS:0101"
    assert running.broker.state.consignment_count() == 0


def test_untrusted_sender_certificate_is_refused(
        running: RunningBroker, ca: devpki.Identity, intermediate: devpki.Identity,
        mailbox: devpki.Identity) -> None:
    rogue_ca = devpki.make_ca("Rogue CA")
    rogue = devpki.make_enterprise_certificate(rogue_ca, SENDER_ORGNR, "Rogue sender")
    with _client(running.url, rogue, ca, intermediate) as client:
        with pytest.raises(EbmsError) as err:
            client.send(_digital(mailbox))
    assert err.value.code == "EBMS:0101"
    assert "CertificateChainError" in err.value.description
    assert running.broker.state.consignment_count() == 0


def test_unknown_receiver_is_value_not_recognized(client: SdpClient,
                                                  mailbox: devpki.Identity) -> None:
    f = _digital(mailbox)
    f.receiver_orgnr = "999999980"
    with pytest.raises(EbmsError) as err:
        client.send(f)
    assert err.value.code == "EBMS:0001"


def test_http_shape_404_405_and_garbage(running: RunningBroker) -> None:
    base = running.url.rsplit("/api/ebms", 1)[0]
    assert requests.post(base + "/other", data=b"x", timeout=5).status_code == 404
    got = requests.get(running.url, timeout=5)
    assert got.status_code == 405 and got.headers["Allow"] == "POST"
    bad = requests.post(running.url, data=b"<not xml", timeout=5,
                        headers={"Content-Type": "application/soap+xml"})
    assert bad.status_code == 400
    fault = ebms.classify(ebms.parse_envelope(bad.content))
    assert isinstance(fault, ebms.SoapFault) and fault.errors[0].code == "EBMS:0009"


# --- faults for reliability testing --------------------------------------------------------


def test_drop_after_processing_is_retried_with_the_same_message_id_and_deduplicated(
        client: SdpClient, running: RunningBroker, mailbox: devpki.Identity) -> None:
    _scenario(running, faults=(Fault("drop-after-processing"),))
    result = client.send(_digital(mailbox))
    assert result.attempts == 2
    assert running.broker.state.consignment_count() == 1
    assert len(_drain(client)) == 2


def test_http_500_is_retried(client: SdpClient, running: RunningBroker,
                             mailbox: devpki.Identity) -> None:
    _scenario(running, faults=(Fault("http-500", times=2),))
    result = client.send(_digital(mailbox))
    assert result.attempts == 3
    assert running.broker.state.consignment_count() == 1


def test_drop_before_read_then_success(client: SdpClient, running: RunningBroker,
                                       mailbox: devpki.Identity) -> None:
    _scenario(running, faults=(Fault("drop-before-read"),))
    result = client.send(_digital(mailbox))
    assert result.attempts == 2
    assert running.broker.state.consignment_count() == 1


def test_slow_answer_times_out_then_the_retry_is_deduplicated(
        running: RunningBroker, sender: devpki.Identity, ca: devpki.Identity,
        intermediate: devpki.Identity, mailbox: devpki.Identity) -> None:
    _scenario(running, faults=(Fault("slow", seconds=1.0),))
    with _client(running.url, sender, ca, intermediate, read=0.5) as client:
        result = client.send(_digital(mailbox))
    assert result.attempts == 2
    assert running.broker.state.consignment_count() == 1


def test_faults_on_pull_only_touch_pulls(client: SdpClient, running: RunningBroker,
                                         mailbox: devpki.Identity) -> None:
    _scenario(running, faults=(Fault("http-500", on="signal", times=0),))
    client.send(_digital(mailbox))  # a send is not affected
    with pytest.raises(OutcomeUnknownError):
        client.pull()


@pytest.mark.parametrize("signer, error", [("wrong-orgnr", SignerIdentityError),
                                           ("expired", CertificateChainError)])
def test_transport_receipt_signed_with_the_wrong_key_is_refused(
        signer: str, error: type[TrustError], client: SdpClient, running: RunningBroker,
        mailbox: devpki.Identity) -> None:
    _scenario(running, Rule(transport_receipt=signer))
    with pytest.raises(error):
        client.send(_digital(mailbox))


# --- scenario files and the CLI -------------------------------------------------------------


def test_scenario_files_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('[[rule]]\npersonidentifikator = "01043100358"\noutcome = "rejected"\n'
                    'receipts = [{kind = "feil", after = 5, detaljer = "x"}]\n'
                    '[[fault]]\ntype = "slow"\nseconds = 2\non = "any"\n')
    loaded = load_scenarios(toml)
    assert loaded.rules[0].receipts == (ReceiptStep("feil", 5, detaljer="x"),)
    assert loaded.faults == (Fault("slow", on="any", seconds=2),)
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"rule": [{"conversation_id": "c", "outcome": "silent"}]}))
    assert load_scenarios(js).rules[0].outcome == "silent"
    js.write_text(json.dumps({"rule": [{"outcome": "lost"}]}))
    with pytest.raises(ConfigurationError, match="lost"):
        load_scenarios(js)
    js.write_text(json.dumps({"rule": [{"personnummer": "1"}]}))
    with pytest.raises(ConfigurationError, match="personnummer"):
        load_scenarios(js)


def _write_dev_certs(directory: Path, ca: devpki.Identity, intermediate: devpki.Identity,
                     **identities: devpki.Identity) -> None:
    directory.mkdir()
    (directory / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "intermediate.pem").write_bytes(
        intermediate.certificate.public_bytes(serialization.Encoding.PEM))
    for name, identity in identities.items():
        (directory / f"{name}.p12").write_bytes(identity.to_pkcs12(b"changeit"))


def test_load_dev_certs_layout(tmp_path: Path, ca: devpki.Identity,
                               intermediate: devpki.Identity, broker: devpki.Identity,
                               mailbox: devpki.Identity) -> None:
    _write_dev_certs(tmp_path / "pki", ca, intermediate, broker=broker, mailbox=mailbox)
    certs = load_dev_certs(tmp_path / "pki", password="changeit")
    assert certs.trust == [ca.certificate]
    assert intermediate.certificate in certs.intermediates
    assert certs.broker.certificate == broker.certificate and certs.print_provider is None
    with pytest.raises(ConfigurationError, match=r"mailbox\.p12"):
        (tmp_path / "pki" / "mailbox.p12").unlink()
        load_dev_certs(tmp_path / "pki", password="changeit")


def test_cli_serve_prints_the_url_serves_and_stops_on_sigterm(
        tmp_path: Path, ca: devpki.Identity, intermediate: devpki.Identity,
        broker: devpki.Identity, mailbox: devpki.Identity, sender: devpki.Identity) -> None:
    _write_dev_certs(tmp_path / "pki", ca, intermediate, broker=broker, mailbox=mailbox)
    env = {k: v for k, v in os.environ.items() if k != "SDP_KEYSTORE_PASSWORD"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdp.cli", "broker", "serve", "--port", "0", "--certs",
         str(tmp_path / "pki"), "--data", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("meldingsformidler simulator at http://127.0.0.1:"), (
            line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].strip()
        with _client(url, sender, ca, intermediate) as client:
            client.send(_digital(mailbox, aapning=False))
            assert [r.kind for r in _drain(client)] == [Kind.LEVERING]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "data" / "broker.sqlite3").is_file()
