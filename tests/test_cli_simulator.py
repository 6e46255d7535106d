"""The CLI against the real simulator (`sdp.broker`), configured by `sdp dev-certs`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdp.broker import Broker, Rule, Scenarios, load_dev_certs, serve
from sdp.cli import main
from sdp.client import SdpClient
from sdp.config import load_config
from sdp.store import RecipientProtection, SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    assert main(["dev-certs", str(folder), "--password", "changeit"]) == 0
    return folder


@pytest.fixture
def world(pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Broker, Clock, list[str]]]:
    certs = load_dev_certs(pki, "changeit")
    clock = Clock()
    broker = Broker(identity=certs.broker, mailbox=certs.mailbox,
                    print_provider=certs.print_provider, trust=certs.trust,
                    intermediates=certs.intermediates, data_dir=tmp_path / "broker",
                    clock=clock)
    monkeypatch.setenv("SDP_STORE_KEY", "00" * 32)
    monkeypatch.setenv("SDP_KEYSTORE_PASSWORD", "changeit")
    with serve(broker) as running:
        flags = ["--config", str(pki / "sdp.toml"), "--env", running.url,
                 "--store", str(tmp_path / "store.sqlite")]
        yield broker, clock, flags


def test_send_pull_status_against_the_simulator(pki: Path, world, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, _, flags = world
    doc = tmp_path / "brev.pdf"
    doc.write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 16)
    rc = main(["send", "digital", "--to", "01043100358", "--postkasseadresse", "ola#1",
               "--recipient-cert", str(pki / "mailbox.pem"), "--mailbox-orgnr", "996460320",
               "--main", str(doc), "--title", "Brev", "--opening-receipt", "--json", *flags])
    assert rc == 0
    conversation = json.loads(capsys.readouterr().out)["conversation_id"]
    assert main(["receipts", "pull", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["receipts"] == {
        "Leveringskvittering": 1, "Aapningskvittering": 1}
    assert main(["status", conversation, "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "OPENED"


def _send_letter(pki: Path, tmp_path: Path, flags: list[str]) -> int:
    doc = tmp_path / "brev.pdf"
    doc.write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 16)
    return main(["send", "digital", "--to", "01043100358", "--postkasseadresse", "ola#1",
                 "--recipient-cert", str(pki / "mailbox.pem"), "--mailbox-orgnr",
                 "996460320", "--main", str(doc), "--title", "Brev", *flags])


def _stored_receipts(tmp_path: Path) -> int:
    with SqliteStore(tmp_path / "store.sqlite",
                     protection=RecipientProtection.hashed(bytes(32))) as store:
        (listed,) = store.list()
        record = store.get(listed.conversation_id)
        assert record is not None and not store.unconfirmed_receipts()
        return len(record.receipts)


def test_receipt_redelivered_after_its_lease_is_stored_once(
        pki: Path, world, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broker, clock, flags = world
    assert _send_letter(pki, tmp_path, flags) == 0
    # A receipt loop pulled the receipt and died before storing or confirming it:
    config = load_config(pki / "sdp.toml", env={"SDP_KEYSTORE_PASSWORD": "changeit"},
                         overrides={"environment": flags[3], "store": tmp_path / "store.sqlite"})
    with SdpClient(config.environment_object(), config.signing_identity()) as client:
        assert client.pull() is not None
    capsys.readouterr()
    assert main(["receipts", "pull", "--json", *flags]) == 0  # still leased: nothing
    assert json.loads(capsys.readouterr().out)["receipts"] == {}
    clock.now += broker.invisibility_window + dt.timedelta(seconds=1)  # the lease runs out
    assert main(["receipts", "pull", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["receipts"] == {"Leveringskvittering": 1}
    assert _stored_receipts(tmp_path) == 1


def test_duplicated_receipt_is_stored_once(pki: Path, world, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    broker, _, flags = world
    broker.set_scenarios(Scenarios(rules=(Rule(duplicate=True),)))
    assert _send_letter(pki, tmp_path, flags) == 0
    capsys.readouterr()
    assert main(["receipts", "pull", "--json", *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["duplicates"] == 1 and report["receipts"] == {"Leveringskvittering": 2}
    assert _stored_receipts(tmp_path) == 1
    assert main(["receipts", "pull", "--json", *flags]) == 0  # nothing left at the broker
    assert json.loads(capsys.readouterr().out)["receipts"] == {}
