"""`sdp dev-certs`: the development PKI the local broker and the client configuration use."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sdp import devpki
from sdp.certificates import orgnr_of, validate_path
from sdp.cli import main
from sdp.cli.devcerts_cmd import expected_files
from sdp.errors import KeyMaterialError
from sdp.keys import load_certificates, load_signing_identity
from tests.conftest import MAILBOX_ORGNR, MF_ORGNR, SENDER_ORGNR

PROCESSOR = "974760673"
PRINT = "889640782"
ORGNRS = {"broker": MF_ORGNR, "mailbox": MAILBOX_ORGNR, "print": PRINT,
          "sender": SENDER_ORGNR, "processor": PROCESSOR}
ALL_FILES = expected_files(("broker", "mailbox", "print", "sender", "processor"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated PKI (with a processor) that tests copy, so keys are made only once."""
    folder = tmp_path_factory.mktemp("devpki") / "pki"
    assert main(["dev-certs", str(folder), "--processor", PROCESSOR]) == 0
    return folder


@pytest.fixture
def pki(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pki"
    shutil.copytree(pristine, target)  # copy2 keeps bytes, modes and mtimes
    return target


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDP_KEYSTORE_PASSWORD", raising=False)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_creates_every_file_and_nothing_else(pristine: Path) -> None:
    assert sorted(p.name for p in pristine.iterdir()) == sorted(ALL_FILES)


def test_certificates_chain_to_the_root_and_carry_the_orgnrs(pristine: Path) -> None:
    root = load_certificates(pristine / "ca.pem")
    issuing = load_certificates(pristine / "intermediate.pem")
    assert len(root) == 1 and root[0].issuer == root[0].subject
    assert load_certificates(pristine / "trust.pem") == [*root, *issuing]
    now = dt.datetime.now(dt.UTC)
    for role, orgnr in ORGNRS.items():
        leaf, *chain = load_certificates(pristine / f"{role}.pem")
        assert chain == issuing, role
        assert validate_path(leaf, issuing, root, now) == (leaf, issuing[0], root[0])
        assert orgnr_of(leaf) == orgnr
        # The orgnr sits in the subject serialNumber, as on real enterprise certificates.
        assert f"2.5.4.5={orgnr}" in leaf.subject.rfc4514_string()


def test_pkcs12_and_pem_key_load_and_match(pristine: Path) -> None:
    for role in ORGNRS:
        identity = load_signing_identity(pristine / f"{role}.p12", "changeit")
        pem_leaf = load_certificates(pristine / f"{role}.pem")[0]
        assert identity.certificate == pem_leaf
        assert identity.chain == tuple(load_certificates(pristine / "intermediate.pem"))
        key = serialization.load_pem_private_key(
            (pristine / f"{role}-key.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.public_key().public_numbers() == identity.key.public_key().public_numbers()
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(pristine / "sender.p12", "wrong")


def test_ca_keystore_issues_certificates_the_trust_store_accepts(pristine: Path) -> None:
    """`sdp broker serve` uses ca.p12 to make trusted-but-wrong certificates for faults."""
    ca = load_signing_identity(pristine / "ca.p12", "changeit")
    assert ca.certificate == load_certificates(pristine / "ca.pem")[0]
    leaf = devpki.make_enterprise_certificate(ca, SENDER_ORGNR, "Issued later").certificate
    trust = load_certificates(pristine / "trust.pem")
    assert validate_path(leaf, trust[1:], trust[:1], dt.datetime.now(dt.UTC))[-1] == trust[0]
    assert stat.S_IMODE((pristine / "ca.p12").stat().st_mode) == 0o600


def test_keys_are_private_and_certificates_readable(pristine: Path) -> None:
    for role in ORGNRS:
        assert stat.S_IMODE((pristine / f"{role}.p12").stat().st_mode) == 0o600
        assert stat.S_IMODE((pristine / f"{role}-key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((pristine / f"{role}.pem").stat().st_mode) == 0o644
    # The default password is written into sdp.toml, so that file is private too.
    assert stat.S_IMODE((pristine / "sdp.toml").stat().st_mode) == 0o600


def test_second_run_changes_nothing(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(pki)
    assert main(["dev-certs", str(pki)]) == 0
    assert _snapshot(pki) == before
    out = capsys.readouterr().out
    assert "already complete" in out and PROCESSOR in out


def test_second_run_with_a_different_orgnr_is_refused(pki: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(pki)
    assert main(["dev-certs", str(pki), "--sender", "974760673"]) == 2
    assert "sender" in capsys.readouterr().err
    assert _snapshot(pki) == before


def test_partial_folder_without_force_exits_2_naming_the_files(
        pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pki / "print.pem").unlink()
    before = _snapshot(pki)
    assert main(["dev-certs", str(pki)]) == 2
    err = capsys.readouterr().err
    assert "missing print.pem" in err and "--force" in err
    assert _snapshot(pki) == before


def test_a_single_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"mine")
    assert main(["dev-certs", str(tmp_path)]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ca.pem"]
    assert (tmp_path / "ca.pem").read_bytes() == b"mine"


def test_asking_for_a_processor_the_folder_lacks_is_partial(pristine: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    shutil.copytree(pristine, tmp_path / "pki",
                    ignore=shutil.ignore_patterns("processor*"))
    assert main(["dev-certs", str(tmp_path / "pki"), "--processor", PROCESSOR]) == 2
    assert "processor.p12" in capsys.readouterr().err


def test_force_regenerates_and_drops_a_processor_no_longer_asked_for(
        pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pki / "print.pem").unlink()
    before = _snapshot(pki)
    assert main(["dev-certs", str(pki), "--force", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["created"] is True
    assert sorted(report["removed"]) == ["processor-key.pem", "processor.p12", "processor.pem"]
    after = _snapshot(pki)
    assert sorted(after) == sorted(expected_files(("broker", "mailbox", "print", "sender")))
    assert all(after[name][0] != before[name][0] for name in after if name in before
               and name != "sdp.toml")  # new keys and certificates everywhere
    assert not list(pki.glob(".*.tmp"))  # no temporary files left behind


def test_json_lists_paths_and_orgnrs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "new" / "pki"  # parents are created
    assert main(["dev-certs", str(folder), "--sender", "974760673", "--print-orgnr",
                 SENDER_ORGNR, "--json", "--validity-days", "30"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["created"] is True
    assert {role: p["orgnr"] for role, p in report["parties"].items()} == {
        "broker": MF_ORGNR, "mailbox": MAILBOX_ORGNR, "print": SENDER_ORGNR,
        "sender": "974760673"}
    for key in ("ca", "ca_keystore", "intermediate", "trust", "config"):
        assert Path(report[key]).is_file()
    sender = report["parties"]["sender"]
    assert all(Path(sender[k]).is_file() for k in ("p12", "pem", "key"))
    not_after = dt.datetime.fromisoformat(sender["not_after"])
    assert dt.timedelta(days=29) < not_after - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)
    assert report["broker_url"] == "http://127.0.0.1:8040/api/ebms"


def test_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SDP_KEYSTORE_PASSWORD", "hemmelig")
    assert main(["dev-certs", str(tmp_path)]) == 0
    assert "changeit" not in capsys.readouterr().out
    assert load_signing_identity(tmp_path / "sender.p12", "hemmelig").certificate
    with pytest.raises(KeyMaterialError):
        load_signing_identity(tmp_path / "sender.p12", "changeit")
    toml = (tmp_path / "sdp.toml").read_text()
    assert 'password_env = "SDP_KEYSTORE_PASSWORD"' in toml and "hemmelig" not in toml
    assert stat.S_IMODE((tmp_path / "sdp.toml").stat().st_mode) == 0o644


def test_password_flag_beats_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDP_KEYSTORE_PASSWORD", "from-env")
    assert main(["dev-certs", str(tmp_path), "--password", "from-flag"]) == 0
    assert load_signing_identity(tmp_path / "mailbox.p12", "from-flag").certificate
    assert "from-flag" not in (tmp_path / "sdp.toml").read_text()


@pytest.mark.parametrize("argv", [
    ["--sender", "991825828"],  # mod-11 check digit wrong
    ["--key-size", "1024"],
    ["--validity-days", "0"],
])
def test_bad_options_are_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dev-certs", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert not list(tmp_path.iterdir())


def test_two_parties_with_one_orgnr_are_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev-certs", str(tmp_path), "--processor", SENDER_ORGNR]) == 2
    assert "share orgnr" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["dev-certs", str(target), "--json"]) == 2
    assert target.read_text() == "x"
