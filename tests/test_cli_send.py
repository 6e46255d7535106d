"""`sdp send`, `sdp receipts pull`, `sdp status` against the loopback broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdp import devpki
from sdp.cli import main
from tests.conftest import MAILBOX_ORGNR, MF_ORGNR
from tests.loopback import LoopbackBroker, serve


@pytest.fixture
def world(tmp_path: Path, broker: devpki.Identity, mailbox: devpki.Identity,
          ca: devpki.Identity, intermediate: devpki.Identity, sender: devpki.Identity,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LoopbackBroker, Path]]:
    state = LoopbackBroker(broker=broker, mailbox=mailbox, trust=[ca.certificate],
                           intermediates=[intermediate.certificate], mf_orgnr=MF_ORGNR,
                           receipt_kinds=["levering", "aapning"])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "intermediate.pem").write_bytes(intermediate.cert_pem())
    (tmp_path / "sender.p12").write_bytes(sender.to_pkcs12(b"pw"))
    (tmp_path / "mailbox.pem").write_bytes(mailbox.cert_pem())
    (tmp_path / "brev.pdf").write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SDP_CONFIG", raising=False)
    with serve(state):
        (tmp_path / "sdp.toml").write_text(
            f'[environment]\nurl = "{state.url}"\ntrust = ["ca.pem", "intermediate.pem"]\n'
            '[sender]\nkeystore = "sender.p12"\npassword_env = "SDP_TEST_PW"\n'
            '[store]\npath = "data/store.sqlite"\n')
        monkeypatch.setenv("SDP_TEST_PW", "pw")
        yield state, tmp_path


def _send(*extra: str) -> int:
    return main(["send", "digital", "--to", "01043100358", "--postkasseadresse", "ola#1",
                 "--recipient-cert", "mailbox.pem", "--mailbox-orgnr", MAILBOX_ORGNR,
                 "--main", "brev.pdf", "--title", "Vedtak", "--non-sensitive-title",
                 "Brev fra kommunen", "--opening-receipt", "--email", "ola@example.no",
                 "--notify-days", "0,7", *extra])


def test_send_pull_status(world: tuple[LoopbackBroker, Path],
                          capsys: pytest.CaptureFixture[str]) -> None:
    state, _ = world
    assert _send("--json") == 0
    sent = json.loads(capsys.readouterr().out)
    assert state.received_message_ids == [sent["message_id"]]
    assert main(["receipts", "pull", "--json"]) == 0
    pulled = json.loads(capsys.readouterr().out)
    assert pulled["receipts"] == {"Aapningskvittering": 1, "Leveringskvittering": 1}
    assert len(state.confirmed) == 2
    assert main(["status", sent["conversation_id"]]) == 0
    out = capsys.readouterr().out
    assert "OPENED" in out and "DELIVERED" in out and "SENT" in out
    assert main(["status", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["consignments"]
    assert [c["state"] for c in listed] == ["OPENED"]


def test_send_physical(world: tuple[LoopbackBroker, Path], capsys: pytest.CaptureFixture[str]
                       ) -> None:
    state, _ = world
    rc = main(["send", "physical", "--name", "Ola Nordmann", "--address", "Gata 1",
               "--postcode", "0473", "--city", "Oslo", "--return-name", "Kommunen",
               "--return-postcode", "0101", "--return-city", "Oslo", "--colour", "farge",
               "--print-cert", "mailbox.pem", "--print-orgnr", MAILBOX_ORGNR,
               "--main", "brev.pdf"])
    assert rc == 0
    assert state.incoming[0].message.action == "FormidleFysiskPost"


@pytest.mark.parametrize(("args", "code", "text"), [
    (["--to", "01043100359"], 1, "check digit"),
    (["--security-level", "5"], 2, "invalid choice"),
    (["--notify-days", "30"], 1, "0-25"),
])
def test_bad_input_is_refused_before_sending(world: tuple[LoopbackBroker, Path], args: list[str],
                                             code: int, text: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    state, _ = world
    try:
        rc = _send(*args)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    assert rc == code
    assert text in capsys.readouterr().err
    assert state.received_message_ids == []


def test_unknown_outcome_is_resumed_by_the_next_command(
        world: tuple[LoopbackBroker, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state, _ = world
    state.drop_after_processing = 10  # every answer is lost
    monkeypatch.setattr("sdp.transport.RetryPolicy.__init__.__defaults__",
                        (2, 0.01, 0.02, 2.0, 0.0))
    assert _send() == 1
    assert "will be resent with the same MessageId" in capsys.readouterr().err
    first_id = state.received_message_ids[0]
    state.drop_after_processing = 0
    assert main(["receipts", "pull"]) == 0  # resumes the pending send first
    assert first_id in state.received_message_ids[-1:]
    assert len(state.incoming) == 1  # the broker saw one consignment
