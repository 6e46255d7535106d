"""`sdp receipt show` and `sdp transport-receipt check` through the real entry point."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from sdp import ebms, server
from sdp import wssecurity as wss
from sdp.cli import main
from sdp.devpki import Identity
from sdp.message import receipt_sbd
from tests.conftest import EXAMPLES, MAILBOX_ORGNR, MF_ORGNR, SENDER_ORGNR
from tests.test_cli_soap import right_after_created

SOAP_DIR = EXAMPLES / "soap"
REQ1 = SOAP_DIR / "1_request_forretningsmelding_fra_postavsender_til_meldingsformidler.xml"
RESP1 = SOAP_DIR / ("1_response_kvittering_for_mottatt_forretningsmelding_fra_meldingsformidler_"
                    "til_postavsender.xml")
REQ3 = SOAP_DIR / "3_request_forretningsmelding_fra_meldingsformidler_til_postkasse.xml"
REQ4 = SOAP_DIR / "4_request_forretningsmelding_fra_postkasse_til_meldingsformidler.xml"
RESP5 = SOAP_DIR / "5_response_forretningskvittering_fra_meldingsformidler_til_postavsender.xml"
ACK5 = SOAP_DIR / "5_request_transportkvittering_fra_postavsender_til_meldingsformidler.xml"
RESP6 = SOAP_DIR / "6_response_error_fra_meldingsformidler_til_postavsender.xml"
CONVERSATION = "6d0ec155-b4f7-43c3-908e-211d68c9cf09"
CID = "0f4b3c2a-1111-4222-8333-444455556666@meldingsformidler.sdp.difi.no"
PACKAGE = b"\x30\x82 pretend CMS EnvelopedData \x00\xff" * 64


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc = main(["receipt", "show", *argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def check(capsys: pytest.CaptureFixture[str], req: Path, resp: Path,
          *argv: str) -> tuple[int, dict[str, Any]]:
    rc = main(["transport-receipt", "check", "--request", str(req), "--response", str(resp),
               *argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


# --- receipt show: the spec's examples --------------------------------------------------------


def test_example_pulled_receipt_verifies(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = show(capsys, str(RESP5), "--verify", "--strip-whitespace",
                   "--at", right_after_created(RESP5))
    assert rc == 0, out
    assert out["verified"] and out["kind"] == "Leveringskvittering" and out["is_receipt"]
    assert out["tidspunkt"] == "2014-10-13T15:12:59.997000+02:00"
    assert (out["sender_orgnr"], out["receiver_orgnr"]) == ("984661185", "889640782")
    assert out["ids"] == {
        "message_id": "bc908c3b-e978-4b2e-88b0-4058a894b58a",
        "ref_to_message_id": "a60d4434-63cf-4a2a-9a79-6ef801084dd5",
        "ebms_conversation_id": "b1cf9df9-587c-4c85-89bc-9262063c1be9",
        "sbd_instance_identifier": "b1cf9df9-587c-4c85-89bc-9262063c1be9",
        "conversation_id": CONVERSATION,
    }
    assert out["envelope_signature"]["status"] == "verified"
    assert out["envelope_signature"]["signer"]["chain_verified"] is False
    assert out["sbd_signature"]["status"] == "verified"
    assert out["sbd_signature"]["signer"]["orgnr"] == "984661185"
    # The example's broker certificate is CN=123456789 while eb:From is 984661185: reported.
    assert any("signed by orgnr 123456789" in n for n in out["notes"])


def test_unverified_view_agrees_and_says_not_verified(spec: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, verified = show(capsys, str(RESP5), "--verify", "--strip-whitespace",
                       "--at", right_after_created(RESP5))
    rc, parsed = show(capsys, str(RESP5))
    assert rc == 0 and parsed["verified"] is False
    for key in ("kind", "tidspunkt", "sender_orgnr", "receiver_orgnr", "ids", "document_type"):
        assert parsed[key] == verified[key], key
    assert parsed["envelope_signature"] == {"status": "not verified"}
    assert parsed["sbd_signature"]["status"] == "not verified"
    assert main(["receipt", "show", str(RESP5)]) == 0
    assert "NOT verified" in capsys.readouterr().out


def test_envelope_without_header_needs_sbd_only(spec: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """4_request was saved without its ebMS and WS-Security headers (DIGEST 7.10)."""
    rc = main(["receipt", "show", str(REQ4), "--verify", "--strip-whitespace"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "not signed" in err and "--sbd-only" in err
    rc, out = show(capsys, str(REQ4), "--verify", "--sbd-only", "--strip-whitespace")
    assert rc == 0, out
    assert out["kind"] == "Leveringskvittering" and out["document_type"] == "kvittering"
    assert out["envelope_signature"]["status"] == "skipped (--sbd-only)"
    assert out["sbd_signature"]["signer"]["orgnr"] == out["sender_orgnr"] == "984661185"
    assert out["ids"]["conversation_id"] == CONVERSATION and out["ebms"] is None


@pytest.mark.parametrize("path", [REQ1, REQ3], ids=["1_request", "3_request"])
def test_digital_post_sbd_is_shown_as_not_a_receipt(spec: Path, path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = show(capsys, str(path), "--verify", "--sbd-only", "--strip-whitespace")
    assert rc == 0, out
    assert (out["kind"], out["is_receipt"], out["tidspunkt"]) == ("digitalPost", False, None)
    assert out["sbd_signature"]["signer"]["orgnr"] == out["sender_orgnr"] == "889640782"
    assert out["ids"]["conversation_id"] == CONVERSATION
    # The whole envelope too, with the attachment that the file lacks left unchecked.
    rc, out = show(capsys, str(path), "--verify", "--strip-whitespace",
                   "--skip-missing-attachments", "--at", right_after_created(path))
    assert rc == 0, out
    assert out["envelope_signature"]["unchecked_attachments"] != []


def test_example_without_stripping_fails_with_a_hint(spec: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = show(capsys, str(REQ4), "--verify", "--sbd-only")
    assert rc == 1 and out["error"] in ("DigestMismatchError", "SignatureValueError")
    assert "--strip-whitespace" in out["hint"]


def test_signal_is_not_a_pulled_receipt(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = show(capsys, str(RESP6))
    assert rc == 1 and "EBMS:0006" in out["message"]
    rc, out = show(capsys, str(RESP1))
    assert rc == 1 and "transport-receipt check" in out["message"]


# --- receipt show: our own pulled receipts ----------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path, ca: Identity, intermediate: Identity) -> Path:
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "intermediate.pem").write_bytes(intermediate.cert_pem())
    return tmp_path


def trust_args(d: Path) -> list[str]:
    return ["--trust", str(d / "ca.pem"), "--intermediate", str(d / "intermediate.pem")]


def pulled(d: Path, mailbox: Identity, broker: Identity, kind: str = "levering",
           signer: Identity | None = None) -> tuple[Path, bytes]:
    """A receipt as the broker hands it out for a PullRequest (DIGEST 8.3)."""
    sbd = receipt_sbd(kind=kind, conversation_id=CONVERSATION, sender_orgnr=MAILBOX_ORGNR,
                      receiver_orgnr=SENDER_ORGNR, signer=signer or mailbox,
                      beskrivelse="Ugyldig e-postadresse" if kind == "varslingfeilet" else None,
                      detaljer="Mottaker finnes ikke" if kind == "feil" else None)
    data = server.pulled_message_response(
        sbd.xml, pull_message_id="a60d4434-63cf-4a2a-9a79-6ef801084dd5", mpc="urn:normal",
        broker=broker, broker_orgnr=MF_ORGNR, sender_orgnr=SENDER_ORGNR)
    (d / "pulled.xml").write_bytes(data)
    (d / "sbd.xml").write_bytes(sbd.xml)
    return d / "pulled.xml", sbd.xml


@pytest.mark.parametrize(("kind", "name", "details"), [
    ("levering", "Leveringskvittering", {}),
    ("aapning", "Aapningskvittering", {}),
    ("varslingfeilet", "VarslingfeiletKvittering",
     {"varslingskanal": "EPOST", "beskrivelse": "Ugyldig e-postadresse"}),
    ("feil", "Feil", {"feiltype": "KLIENT", "detaljer": "Mottaker finnes ikke"}),
])
def test_own_pulled_receipt_verifies_with_trust(pki: Path, mailbox: Identity, broker: Identity,
                                                kind: str, name: str, details: dict[str, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = pulled(pki, mailbox, broker, kind)
    rc, out = show(capsys, str(path), "--verify", *trust_args(pki), "--expect-orgnr", MF_ORGNR)
    assert rc == 0, out
    assert (out["kind"], out["details"]) == (name, details)
    assert out["envelope_signature"]["signer"]["orgnr"] == MF_ORGNR
    assert out["envelope_signature"]["signer"]["chain_verified"] is True
    assert out["sbd_signature"]["signer"]["orgnr"] == MAILBOX_ORGNR
    assert out["sbd_signature"]["signer"]["chain_verified"] is True
    assert out["ids"]["ref_to_message_id"] == "a60d4434-63cf-4a2a-9a79-6ef801084dd5"
    assert out["ids"]["ebms_conversation_id"] == out["ids"]["sbd_instance_identifier"]
    assert out["ids"]["conversation_id"] == CONVERSATION
    assert out["notes"] == []
    assert set(out) == {"ok", "verified", "file", "kind", "is_receipt", "tidspunkt", "created",
                        "document_type", "sender_orgnr", "receiver_orgnr", "ids", "ebms",
                        "details", "envelope_signature", "sbd_signature", "at",
                        "whitespace_stripped", "notes"}
    _, parsed = show(capsys, str(path))  # the unverified reading says the same
    assert (parsed["kind"], parsed["details"], parsed["ids"]) == (name, details, out["ids"])


def test_bare_sbd_verifies(pki: Path, mailbox: Identity, broker: Identity,
                           capsys: pytest.CaptureFixture[str]) -> None:
    pulled(pki, mailbox, broker, "mottak")
    rc, out = show(capsys, str(pki / "sbd.xml"), "--verify", *trust_args(pki))
    assert rc == 0, out
    assert out["kind"] == "Mottakskvittering"
    assert out["envelope_signature"] == {"status": "absent (bare SBD)"}
    assert out["ids"]["message_id"] is None and out["ebms"] is None


def test_tampered_sbd_byte_fails(pki: Path, mailbox: Identity, broker: Identity,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = pulled(pki, mailbox, broker)
    data = path.read_bytes()
    assert data.count(CONVERSATION.encode()) == 1
    path.write_bytes(data.replace(b"6d0ec155", b"6d0ec156"))  # one byte, inside the SBD
    # The broker's signature over the Body breaks first ...
    rc, out = show(capsys, str(path), "--verify", *trust_args(pki))
    assert rc == 1 and out["error"] == "WssDigestMismatchError" and "body" in out["message"]
    # ... and the mailbox's own signature over the SBD as well.
    rc, out = show(capsys, str(path), "--verify", "--sbd-only", *trust_args(pki))
    assert rc == 1 and out["error"] == "DigestMismatchError"
    # Without --verify it is shown, marked as not verified.
    rc, out = show(capsys, str(path))
    assert rc == 0 and out["verified"] is False
    assert out["ids"]["conversation_id"] == "6d0ec156-b4f7-43c3-908e-211d68c9cf09"


def test_sbd_signed_by_someone_else_fails(pki: Path, mailbox: Identity, broker: Identity,
                                          sender: Identity,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = pulled(pki, mailbox, broker, signer=sender)  # SBDH Sender is the mailbox
    rc, out = show(capsys, str(path), "--verify", *trust_args(pki))
    assert rc == 1 and out["error"] == "SignerIdentityError"


def test_envelope_signer_pinned_with_expect_orgnr(pki: Path, mailbox: Identity, broker: Identity,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = pulled(pki, mailbox, broker)
    rc, out = show(capsys, str(path), "--verify", *trust_args(pki), "--expect-orgnr",
                   SENDER_ORGNR)
    assert rc == 1 and out["error"] == "SignerIdentityError"


def test_receipt_text_output(pki: Path, mailbox: Identity, broker: Identity,
                             capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = pulled(pki, mailbox, broker, "aapning")
    assert main(["receipt", "show", str(path), "--verify", *trust_args(pki)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Aapningskvittering - verified")
    assert (f"SBD signature: verified; signer 2.5.4.5={MAILBOX_ORGNR},CN=Test Postkasse AS"
            in out)
    assert "chain: verified" in out and "NOT checked" not in out


def test_without_trust_says_chain_not_checked(pki: Path, mailbox: Identity, broker: Identity,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = pulled(pki, mailbox, broker)
    assert main(["receipt", "show", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "chain: NOT checked (no --trust)" in out
    assert "SBD signature: verified" in out and "chain NOT checked (no --trust)" in out


def test_show_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["receipt", "show", str(tmp_path / "nope.xml")])
    assert exc.value.code == 2


# --- transport-receipt check: the spec's examples ---------------------------------------------


def test_example_transport_receipt_matches(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = check(capsys, REQ1, RESP1, "--strip-whitespace", "--at", right_after_created(RESP1))
    assert rc == 0, out
    assert out["ok"] and out["problems"] == [] and out["response"]["ref_matches"]
    assert out["request"]["message_id"] == "627c8082-6394-47a6-9107-a91e52240af2"
    assert [(r["target"], r["result"]) for r in out["references"]] == [
        ("attachment", "match"), ("body", "match")]
    acked = {r["target"]: r["acknowledged"] for r in out["request"]["signed_references"]}
    assert acked == {"body": True, "timestamp": False, "messaging": False, "attachment": True}
    assert out["response"]["signature"]["signer"]["chain_verified"] is False


def test_example_sender_receipt_for_pulled_message_matches(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """5_request_transportkvittering acknowledges the pulled 5_response (DIGEST 8.1)."""
    rc, out = check(capsys, RESP5, ACK5, "--strip-whitespace", "--at", right_after_created(ACK5))
    assert rc == 0, out
    assert [(r["target"], r["result"]) for r in out["references"]] == [("body", "match")]
    assert out["response"]["ref_to_message_id"] == "bc908c3b-e978-4b2e-88b0-4058a894b58a"


def test_example_receipt_for_another_message_fails(spec: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """3_request forwards the same SBD, so the Body digest matches; the rest must not."""
    rc, out = check(capsys, REQ3, RESP1, "--strip-whitespace", "--at", right_after_created(RESP1))
    assert rc == 1 and out["ok"] is False
    assert out["response"]["ref_matches"] is False
    results = {r["target"] or r["uri"][:4]: r["result"] for r in out["references"]}
    assert results == {"cid:": "unknown uri", "body": "match"}
    assert len(out["missing"]) == 1 and out["missing"][0].startswith("cid:")


def test_tampered_example_response_digest_fails(spec: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = RESP1.read_bytes()
    digest = b"kZLCW3NPy62+MtrcKAicYNsOOfkMwgzi5XM/VyYazAw="
    assert data.count(digest) == 1
    (tmp_path / "resp.xml").write_bytes(data.replace(digest, digest[:-2] + b"A="))
    rc, out = check(capsys, REQ1, tmp_path / "resp.xml", "--strip-whitespace",
                    "--at", right_after_created(RESP1))
    assert rc == 1 and out["error"] == "WssDigestMismatchError"  # the receipt's own signature


def test_error_signal_is_not_a_receipt(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = check(capsys, REQ1, RESP6, "--strip-whitespace", "--at", right_after_created(RESP6))
    assert rc == 1 and "not an eb:Receipt" in out["message"] and "EBMS:0006" in out["message"]


# --- transport-receipt check: our own ---------------------------------------------------------


@pytest.fixture
def exchange(pki: Path, sender: Identity, mailbox: Identity) -> tuple[Path, str, list[Any]]:
    """A signed post and the NonRepudiation references a receipt for it should carry."""
    sbd = receipt_sbd(kind="levering", conversation_id=CONVERSATION, sender_orgnr=SENDER_ORGNR,
                      receiver_orgnr=MF_ORGNR, signer=sender)
    message_id = ebms.new_message_id()
    messaging = ebms.user_message(
        message_id=message_id, timestamp=dt.datetime.now(dt.UTC), from_orgnr=SENDER_ORGNR,
        to_orgnr=MF_ORGNR, action=ebms.ACTION_FORMIDLE_DIGITAL_POST,
        conversation_id=sbd.instance_identifier, mpc="urn:normal", attachment_cid=CID)
    envelope = ebms.build_envelope(messaging, sbd.xml)
    signed = wss.sign(envelope, sender, attachments={CID: hashlib.sha256(PACKAGE).digest()})
    (pki / "req.xml").write_bytes(etree.tostring(envelope))
    body_uri = f"#{ebms.envelope_ids(envelope).body}"
    refs = [ebms.NonRepudiationReference.from_element(r.element)  # type: ignore[arg-type]
            for r in signed.references if r.uri == body_uri or (r.uri or "").startswith("cid:")]
    return pki, message_id, refs


def write_receipt(d: Path, broker: Identity, ref_to: str, refs: list[Any]) -> Path:
    messaging = ebms.receipt_signal(message_id=ebms.new_message_id(),
                                    timestamp=dt.datetime.now(dt.UTC), ref_to_message_id=ref_to,
                                    references=refs)
    envelope = ebms.build_envelope(messaging, None)
    wss.sign(envelope, broker)
    (d / "resp.xml").write_bytes(etree.tostring(envelope))
    return d / "resp.xml"


def test_own_receipt_matches_with_trust(exchange: tuple[Path, str, list[Any]], broker: Identity,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    d, message_id, refs = exchange
    resp = write_receipt(d, broker, message_id, refs)
    rc, out = check(capsys, d / "req.xml", resp, *trust_args(d), "--expect-orgnr", MF_ORGNR)
    assert rc == 0, out
    assert sorted(r["target"] for r in out["references"]) == ["attachment", "body"]
    assert out["response"]["signature"]["signer"]["chain_verified"] is True
    assert set(out) == {"ok", "request", "response", "references", "missing", "problems", "at",
                        "whitespace_stripped"}
    assert main(["transport-receipt", "check", "--request", str(d / "req.xml"),
                 "--response", str(resp), *trust_args(d)]) == 0
    assert capsys.readouterr().out.startswith("transport receipt MATCHES the request")


def test_own_receipt_with_wrong_digest_fails(exchange: tuple[Path, str, list[Any]],
                                             broker: Identity,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    d, message_id, refs = exchange
    forged = [dataclasses.replace(refs[0], digest_value=bytes(32)), *refs[1:]]
    resp = write_receipt(d, broker, message_id, forged)
    rc, out = check(capsys, d / "req.xml", resp, *trust_args(d))
    assert rc == 1 and not out["ok"]
    assert [r["result"] for r in out["references"]] == ["mismatch", "match"]
    assert out["missing"] == [refs[0].uri]  # the real part was never acknowledged


def test_own_receipt_for_another_message_id_fails(exchange: tuple[Path, str, list[Any]],
                                                  broker: Identity,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    d, _, refs = exchange
    resp = write_receipt(d, broker, ebms.new_message_id(), refs)
    rc, out = check(capsys, d / "req.xml", resp, *trust_args(d))
    assert rc == 1 and out["response"]["ref_matches"] is False
    assert all(r["result"] == "match" for r in out["references"])


def test_receipt_missing_the_body_fails(exchange: tuple[Path, str, list[Any]], broker: Identity,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    d, message_id, refs = exchange
    only_attachment = [r for r in refs if r.uri.startswith("cid:")]
    resp = write_receipt(d, broker, message_id, only_attachment)
    rc, out = check(capsys, d / "req.xml", resp, *trust_args(d))
    assert rc == 1 and len(out["missing"]) == 1 and out["missing"][0].startswith("#")


def test_check_usage_errors_exit_2(exchange: tuple[Path, str, list[Any]]) -> None:
    d, _, _ = exchange
    with pytest.raises(SystemExit) as exc:
        main(["transport-receipt", "check", "--request", str(d / "req.xml"),
              "--response", str(d / "nope.xml")])
    assert exc.value.code == 2
