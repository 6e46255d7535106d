"""`sdp package build | open | verify` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdp.cli import main
from sdp.devpki import Identity
from tests.conftest import EXAMPLES


@pytest.fixture
def files(tmp_path: Path, sender: Identity, mailbox: Identity, ca: Identity) -> Path:
    (tmp_path / "sender.p12").write_bytes(sender.to_pkcs12(b"hemmelig"))
    (tmp_path / "mailbox.p12").write_bytes(mailbox.to_pkcs12(b"hemmelig"))
    (tmp_path / "mailbox.pem").write_bytes(mailbox.cert_pem())
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "brev.pdf").write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 40)
    (tmp_path / "info.html").write_bytes(b"<html><body><p>Hei</p></body></html>")
    return tmp_path


def _build(d: Path, *extra: str) -> int:
    return main(["package", "build", "--main", str(d / "brev.pdf"), "--title", "Brev",
                 "--attach", str(d / "info.html"), "--attach-title", "Informasjon",
                 "--data", str(EXAMPLES / "utvidelser" / "lenke.xml"),
                 "--mottaker", "01043100358", "--postkasseadresse", "ola#1",
                 "--sender-keystore", str(d / "sender.p12"),
                 "--recipient-cert", str(d / "mailbox.pem"), "-o", str(d / "brev.cms"), *extra])


def test_build_then_open_writes_the_documents(files: Path, spec: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SDP_KEYSTORE_PASSWORD", "hemmelig")
    assert _build(files, "--json") == 0
    built = json.loads(capsys.readouterr().out)
    assert built["size"] == (files / "brev.cms").stat().st_size
    assert [f["name"] for f in built["files"]] == ["brev.pdf", "lenke.xml", "info.html",
                                                   "manifest.xml"]
    rc = main(["package", "open", str(files / "brev.cms"), "--key", str(files / "mailbox.p12"),
               "--trust", str(files / "ca.pem"), "--out", str(files / "out"), "--json"])
    assert rc == 0
    opened = json.loads(capsys.readouterr().out)
    assert opened["signer"]["orgnr"] == "991825827" and opened["signer"]["chain_verified"]
    assert [d["title"] for d in opened["documents"]] == ["Brev", "Informasjon"]
    assert (files / "out" / "brev.pdf").read_bytes() == (files / "brev.pdf").read_bytes()


def test_tampered_package_exits_1(files: Path, spec: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _build(files, "--password", "hemmelig") == 0
    data = bytearray((files / "brev.cms").read_bytes())
    data[len(data) // 2] ^= 0x01
    (files / "brev.cms").write_bytes(bytes(data))
    capsys.readouterr()
    rc = main(["package", "open", str(files / "brev.cms"), "--key", str(files / "mailbox.p12"),
               "--password", "hemmelig"])
    assert rc == 1
    assert "error (" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["wrong-password", "missing-file", "overwrite"])
def test_usage_errors_exit_2(files: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    if case == "wrong-password":
        assert _build(files, "--password", "feil") == 2
        assert "wrong password" in capsys.readouterr().err
    elif case == "missing-file":
        with pytest.raises(SystemExit) as exc:
            main(["package", "verify", str(files / "nope.asice")])
        assert exc.value.code == 2
    else:
        (files / "brev.cms").write_bytes(b"existing")
        assert _build(files, "--password", "hemmelig") == 2
        assert (files / "brev.cms").read_bytes() == b"existing"


def test_invalid_document_exits_1_and_writes_nothing(files: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (files / "brev.pdf").write_bytes(b"")
    assert _build(files, "--password", "hemmelig") == 1
    assert "brev.pdf" in capsys.readouterr().err
    assert not (files / "brev.cms").exists()
    assert not list(files.glob("*.part"))


def test_verify_official_example(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["package", "verify", str(EXAMPLES / "post.asice.zip")]) == 0
    out = capsys.readouterr().out
    assert "signature valid" in out and "chain NOT checked" in out
    # Its certificates expired long ago: checking the chain now fails, at signing time passes.
    root = (EXAMPLES.parent / "sikkerhet" / "sertifikater" / "test"
            / "Buypass_Class_3_Test4_Root_CA.cer")
    assert main(["package", "verify", str(EXAMPLES / "post.asice.zip"), "--trust", str(root)]) == 1
    assert main(["package", "verify", str(EXAMPLES / "post.asice.zip"), "--trust", str(root),
                 "--at", "2015-01-01T00:00:00Z"]) == 0
