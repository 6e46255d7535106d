"""`sdp soap verify` through the real entry point: the spec's SOAP examples and our own."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from sdp import devpki, ebms, mime
from sdp import wssecurity as wss
from sdp.cli import main
from sdp.devpki import Identity
from sdp.message import receipt_sbd
from tests.conftest import EXAMPLES, MF_ORGNR, SENDER_ORGNR

SOAP_DIR = EXAMPLES / "soap"
#: Every WS-Security signature that verifies once the indentation is gone (DIGEST 7.8, 7.10).
SIGNED = [
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
#: Its Body was edited after signing (DIGEST 7.10).
EDITED = "7_request_forretningsmelding_fra_postavsender_til_meldingsformidler_fysisk_post.xml"
UNSIGNED = [
    "4_request_forretningsmelding_fra_postkasse_til_meldingsformidler.xml",
    "4_response_kvittering_for_mottatt_forretningsmelding_fra_meldingsformidler_til_postkasse.xml",
    "eksempel_soap_fault_med_ebms_error.xml",
]
CID = "0f4b3c2a-1111-4222-8333-444455556666@meldingsformidler.sdp.difi.no"
PACKAGE = b"\x30\x82 pretend CMS EnvelopedData \x00\xff" * 64


def right_after_created(path: Path) -> str:
    """A validation time inside the example's Timestamp window (its certificates are long
    expired, and without --trust only the window is checked against --at)."""
    created = re.search(rb"<wsu:Created>([^<]+)</wsu:Created>", path.read_bytes())
    assert created is not None, path
    when = dt.datetime.fromisoformat(created.group(1).decode()) + dt.timedelta(seconds=5)
    return when.isoformat()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc = main(["soap", "verify", *argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


# --- the spec's examples ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SIGNED)
def test_every_signed_example_verifies_once_whitespace_is_stripped(
        spec: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = SOAP_DIR / name
    rc, out = run(capsys, str(path), "--strip-whitespace", "--skip-missing-attachments",
                  "--at", right_after_created(path))
    assert rc == 0, out
    assert out["ok"] and out["whitespace_stripped"]
    assert out["signer"]["chain_verified"] is False and out["chain"] == []
    assert out["signer"]["orgnr"] in {"889640782", "123456789", "984661185"}
    targets = [r["target"] for r in out["references"]]
    assert targets[:3] == ["body", "timestamp", "messaging"]
    attachments = [r for r in out["references"] if r["target"] == "attachment"]
    # Only the two posts sign an attachment; the files do not include it, so it stays unchecked.
    assert len(attachments) == (1 if name.startswith(("1_request", "3_request")) else 0)
    assert all(r["result"] == "not checked" for r in attachments)
    assert out["unchecked_attachments"] == [r["uri"][4:] for r in attachments]
    assert all(r["result"] == "ok" for r in out["references"] if r["target"] != "attachment")


def test_text_output_says_the_chain_was_not_checked(spec: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = SOAP_DIR / SIGNED[1]
    assert main(["soap", "verify", str(path), "--strip-whitespace",
                 "--at", right_after_created(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("signature valid; chain NOT checked (no --trust)")
    assert "signer: CN=123456789 (orgnr 123456789)" in out
    assert "message: Receipt ef86727d-d10b-499a-b9c3-e6683187951a" in out
    assert "--strip-whitespace" in out  # says what was done to the document


def test_pretty_printed_example_fails_without_stripping_and_says_why(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = SOAP_DIR / SIGNED[1]
    rc = main(["soap", "verify", str(path), "--at", right_after_created(path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "SignatureValueError" in err and "retry with --strip-whitespace" in err


def test_example_edited_after_signing_fails_on_the_body(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = SOAP_DIR / EDITED
    rc, out = run(capsys, str(path), "--strip-whitespace", "--skip-missing-attachments",
                  "--at", right_after_created(path))
    assert rc == 1 and out["ok"] is False
    assert out["error"] == "WssDigestMismatchError"
    assert {r["target"]: r["result"] for r in out["references"]} == {
        "body": "mismatch", "timestamp": "ok", "messaging": "ok", "attachment": "not checked"}


@pytest.mark.parametrize("name", UNSIGNED)
def test_unsigned_examples_exit_1_saying_so(spec: Path, name: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["soap", "verify", str(SOAP_DIR / name), "--strip-whitespace"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "SecurityHeaderError" in err and "not signed" in err


def test_missing_attachment_fails_unless_skipped(spec: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = SOAP_DIR / SIGNED[0]
    rc = main(["soap", "verify", str(path), "--strip-whitespace",
               "--at", right_after_created(path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "not received" in err and "--attachment" in err


def test_timestamp_is_checked_against_at(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = SOAP_DIR / SIGNED[1]
    rc, out = run(capsys, str(path), "--strip-whitespace", "--at", "2014-10-13T14:00:00Z")
    assert rc == 1 and out["error"] == "TimestampError" and "expired" in out["message"]
    rc, out = run(capsys, str(path), "--strip-whitespace")  # default: now
    assert rc == 1 and out["error"] == "TimestampError" and "--at" in out["hint"]


# --- our own signed messages ------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path, ca: Identity, intermediate: Identity) -> Path:
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "intermediate.pem").write_bytes(intermediate.cert_pem())
    return tmp_path


@pytest.fixture
def post(pki: Path, sender: Identity) -> Path:
    """A post as the sender sends it: UserMessage, SBD in the Body, signed package attachment."""
    sbd = receipt_sbd(kind="levering", conversation_id="6d0ec155-b4f7-43c3-908e-211d68c9cf09",
                      sender_orgnr=SENDER_ORGNR, receiver_orgnr=MF_ORGNR, signer=sender)
    messaging = ebms.user_message(
        message_id=ebms.new_message_id(), timestamp=dt.datetime.now(dt.UTC),
        from_orgnr=SENDER_ORGNR, to_orgnr=MF_ORGNR, action=ebms.ACTION_FORMIDLE_DIGITAL_POST,
        conversation_id=sbd.instance_identifier, mpc="urn:normal", attachment_cid=CID)
    envelope = ebms.build_envelope(messaging, sbd.xml)
    wss.sign(envelope, sender, attachments={CID: hashlib.sha256(PACKAGE).digest()})
    data = etree.tostring(envelope)
    (pki / "post.xml").write_bytes(data)
    (pki / "post.cms").write_bytes(PACKAGE)
    body = mime.MultipartBody(data, mime.Attachment(CID, PACKAGE))
    (pki / "post.mime").write_bytes(f"Content-Type: {body.content_type}\r\n\r\n".encode()
                                    + body.to_bytes())
    (pki / "post.body").write_bytes(body.to_bytes())
    (pki / "post.ctype").write_text(body.content_type)
    return pki


def trust_args(d: Path) -> list[str]:
    return ["--trust", str(d / "ca.pem"), "--intermediate", str(d / "intermediate.pem")]


@pytest.mark.parametrize("attachment", ["{file}", f"{CID}={{file}}", f"cid:{CID}={{file}}"])
def test_own_post_verifies_with_trust(post: Path, attachment: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(capsys, str(post / "post.xml"), *trust_args(post), "--expect-orgnr",
                  SENDER_ORGNR, "--attachment", attachment.format(file=post / "post.cms"))
    assert rc == 0, out
    assert out["signer"]["chain_verified"] is True
    assert out["signer"]["orgnr"] == SENDER_ORGNR
    assert len(out["chain"]) == 3  # leaf, intermediate, root
    assert out["message"]["kind"] == "UserMessage"
    assert {r["target"]: r["result"] for r in out["references"]} == {
        "body": "ok", "timestamp": "ok", "messaging": "ok", "attachment": "ok"}
    assert out["unchecked_attachments"] == []


def test_own_post_as_mime_with_headers_and_with_content_type(
        post: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(capsys, str(post / "post.mime"), *trust_args(post))
    assert rc == 0, out
    # The attachment came from the MIME part, so its digest was really checked.
    assert (out["references"][-1]["uri"], out["references"][-1]["result"]) == (f"cid:{CID}", "ok")
    rc, out = run(capsys, str(post / "post.body"), *trust_args(post),
                  "--content-type", (post / "post.ctype").read_text())
    assert rc == 0 and out["signer"]["chain_verified"] is True
    # As `curl -i` saves a response: a status line, then folded headers.
    folded = (post / "post.ctype").read_text().replace("; boundary", ";\r\n\tboundary")
    (post / "curl.txt").write_bytes(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Type: "
                                    + folded.encode() + b"\r\n\r\n"
                                    + (post / "post.body").read_bytes())
    rc, out = run(capsys, str(post / "curl.txt"), *trust_args(post))
    assert rc == 0 and out["references"][-1]["result"] == "ok"


def test_json_has_the_documented_keys(post: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(capsys, str(post / "post.mime"), *trust_args(post))
    assert rc == 0
    assert set(out) == {"ok", "file", "at", "whitespace_stripped", "message", "signer", "chain",
                        "timestamp", "references", "unchecked_attachments"}
    assert set(out["signer"]) == {"subject", "orgnr", "issuer", "not_before", "not_after",
                                  "chain_verified"}
    assert set(out["references"][0]) == {"target", "uri", "digest_method", "digest_value",
                                         "result"}


def test_tampered_attachment_is_a_digest_mismatch(post: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (post / "post.cms").write_bytes(PACKAGE[:-1] + b"\x00")
    rc, out = run(capsys, str(post / "post.xml"), *trust_args(post),
                  "--attachment", str(post / "post.cms"))
    assert rc == 1 and out["error"] == "WssDigestMismatchError"
    assert {r["target"]: r["result"] for r in out["references"]}["attachment"] == "mismatch"
    assert {r["target"]: r["result"] for r in out["references"]}["body"] == "ok"


def test_tampered_body_is_a_digest_mismatch(post: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = (post / "post.xml").read_bytes()
    (post / "post.xml").write_bytes(data.replace(b"6d0ec155", b"6d0ec156", 1))
    rc, out = run(capsys, str(post / "post.xml"), *trust_args(post),
                  "--attachment", str(post / "post.cms"))
    assert rc == 1
    assert {r["target"]: r["result"] for r in out["references"]}["body"] == "mismatch"


def test_signer_orgnr_is_enforced(post: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(capsys, str(post / "post.xml"), "--attachment", str(post / "post.cms"),
                  *trust_args(post), "--expect-orgnr", MF_ORGNR)
    assert rc == 1 and out["error"] == "SignerIdentityError"
    assert SENDER_ORGNR in out["message"]


def test_chain_needs_the_intermediate(post: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The token carries only the leaf: the root alone cannot be reached."""
    rc, out = run(capsys, str(post / "post.xml"), "--attachment", str(post / "post.cms"),
                  "--trust", str(post / "ca.pem"))
    assert rc == 1 and out["error"] == "CertificateChainError"


def test_foreign_trust_anchor_is_refused(post: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "other.pem").write_bytes(devpki.make_ca("Someone Else").cert_pem())
    rc, out = run(capsys, str(post / "post.xml"), "--attachment", str(post / "post.cms"),
                  "--trust", str(tmp_path / "other.pem"),
                  "--intermediate", str(post / "intermediate.pem"))
    assert rc == 1 and out["error"] == "CertificateChainError"


# --- usage errors -----------------------------------------------------------------------------


def test_missing_file_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["soap", "verify", str(tmp_path / "nope.xml")])
    assert exc.value.code == 2


def test_missing_attachment_file_exits_2(post: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["soap", "verify", str(post / "post.xml"), "--attachment", str(post / "nope.cms")])
    assert exc.value.code == 2


def test_neither_xml_nor_mime_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01 not a message")
    assert main(["soap", "verify", str(tmp_path / "junk.bin")]) == 2
    assert "--content-type" in capsys.readouterr().err


def test_unreadable_trust_file_exits_2(post: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (post / "bad.pem").write_bytes(b"not a certificate")
    rc, out = run(capsys, str(post / "post.xml"), "--trust", str(post / "bad.pem"))
    assert rc == 2 and out["ok"] is False
