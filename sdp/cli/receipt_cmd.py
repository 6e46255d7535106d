"""`sdp receipt show` and `sdp transport-receipt check`: read receipts from disk and check them.

`receipt show` is for business receipts (kvitteringer) pulled from the broker (DIGEST 3.8, 8):
the two signatures that make one trustworthy are the broker's WS-Security signature over the
envelope and the mailbox or print provider's signature over the SBD (DIGEST 3.11). Without
`--verify` it only parses, safely, and says the content is not verified.

`transport-receipt check` ties an eb:Receipt to the message it acknowledges (DIGEST 7.5):
RefToMessageId must be that message's MessageId and each copied ds:Reference must be one the
message's signature made, so the receipt proves what the other side got.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree

from sdp import ebms, receipts, xmldsig, xmlparse
from sdp import wssecurity as wss
from sdp.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_json,
    emit,
    existing_file,
    fail,
)
from sdp.cli.soap_cmd import (
    Trust,
    add_input_options,
    add_trust_options,
    attachment_hint,
    b64,
    certificate_info,
    collect_attachments,
    has_pretty_print,
    load_trust_options,
    quiet_example_certificates,
    read_message,
    report,
    strip_pretty_print,
    timestamp_hint,
    unsigned_hint,
    validation_time,
    whitespace_hint,
    wss_lines,
    wss_summary,
)
from sdp.errors import ConfigurationError, KeyMaterialError, ProtocolError, SdpError
from sdp.message import CONVERSATION_ID_SCOPE, verify_sbd
from sdp.schemas import NS_EBMS, NS_SBDH, NS_SDP, NS_SOAP12, NS_WSU
from sdp_bindings import sdp as sdp_types

EPILOG_SHOW = """examples:
  sdp receipt show kvittering.xml
  sdp receipt show kvittering.xml --verify --trust buypass-root.cer \\
      --intermediate buypass-ca3.cer --expect-orgnr 984661185 --at 2024-05-01T12:00:00Z
  sdp receipt show sbd.xml --verify --trust ca.pem --json     # a bare SBD
  sdp receipt show 4_request.xml --verify --sbd-only --strip-whitespace

FILE is a pulled receipt: the whole SOAP envelope (or MIME message) or the bare SBD. Other
SBDs (a digitalPost) are shown too, as not being receipts. --verify checks the envelope's
WS-Security signature (unless --sbd-only or FILE is a bare SBD) and the SBD's own signature,
whose signer must be the SBDH Sender.

--json keys: ok, verified, file, kind, is_receipt, tidspunkt, created, document_type,
sender_orgnr, receiver_orgnr, ids {message_id, ref_to_message_id, ebms_conversation_id,
sbd_instance_identifier, conversation_id}, ebms {from, from_role, to, to_role, action, mpc},
details, envelope_signature {status, signer, chain, timestamp, references, ...},
sbd_signature {status, signer}, at, whitespace_stripped, notes.

exit codes: 0 shown (and with --verify, valid), 1 invalid or not readable, 2 usage error.
"""

EPILOG_CHECK = """examples:
  sdp transport-receipt check --request sent.xml --response receipt.xml \\
      --trust buypass-root.cer --intermediate buypass-ca3.cer --expect-orgnr 984661185
  sdp transport-receipt check --request 5_response.xml \\
      --response 5_request_transportkvittering.xml --strip-whitespace --at 2014-10-13T13:13:05Z

--request is the message that was acknowledged (taken as given: its own signature is not
checked); --response is the eb:Receipt, whose WS-Security signature is verified. Every copied
reference must equal one the request's signature made, and the Body and every attachment
must be among them.

--json keys: ok, request {file, message_id, signed_references [{uri, target,
acknowledged}], signature}, response {file, message_id, ref_to_message_id, ref_matches,
signature}, references [{uri, target, digest_method, digest_value, result: match | mismatch |
unknown uri}], missing, problems, at, whitespace_stripped.

exit codes: 0 the receipt matches, 1 it does not (or is not a valid receipt), 2 usage error.
"""

_SBD = f"{{{NS_SBDH}}}StandardBusinessDocument"
_ENVELOPE = f"{{{NS_SOAP12}}}Envelope"
_HEADER = f"{{{NS_SOAP12}}}Header"
_BODY = f"{{{NS_SOAP12}}}Body"
_MESSAGING = f"{{{NS_EBMS}}}Messaging"
_TIMESTAMP = f"{{{NS_WSU}}}Timestamp"
_WSU_ID = f"{{{NS_WSU}}}Id"

#: Receipt element names in sdp:kvittering and the spec's names for them (DIGEST 3.8).
_KVITTERING_KINDS = {
    "levering": receipts.Kind.LEVERING, "aapning": receipts.Kind.AAPNING,
    "mottak": receipts.Kind.MOTTAK, "returpost": receipts.Kind.RETURPOST,
    "varslingfeilet": receipts.Kind.VARSLINGFEILET,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    rec = sub.add_parser("receipt", help="show and verify pulled business receipts",
                         description="Business receipts (kvitteringer) and errors (feil) "
                         "pulled from the meldingsformidler.")
    verbs = rec.add_subparsers(dest="verb", metavar="VERB", required=True)
    s = verbs.add_parser("show", help="show a pulled receipt, optionally verifying it",
                         epilog=EPILOG_SHOW, formatter_class=raw)
    s.add_argument("input", type=existing_file, metavar="FILE")
    s.add_argument("--verify", action="store_true",
                   help="check the signatures; without it the receipt is only parsed")
    s.add_argument("--sbd-only", action="store_true",
                   help="with --verify, check only the SBD's signature, not the envelope's "
                   "(for an envelope saved without its WS-Security header)")
    s.add_argument("--expect-orgnr", metavar="ORGNR",
                   help="the envelope's signer must carry this orgnr (the broker: 984661185)")
    s.add_argument("--skip-missing-attachments", action="store_true",
                   help="report signed attachments missing from FILE as NOT checked")
    add_trust_options(s)
    add_input_options(s)
    add_json(s)
    s.set_defaults(func=run_show)

    tr = sub.add_parser("transport-receipt", help="check eb:Receipts against what they acknowledge",
                        description="Transport receipts (eb:Receipt with non-repudiation "
                        "information, DIGEST 7.5).")
    tverbs = tr.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = tverbs.add_parser("check", help="check that a receipt belongs to a request",
                          epilog=EPILOG_CHECK, formatter_class=raw)
    c.add_argument("--request", required=True, type=existing_file, metavar="REQ",
                   help="the acknowledged message (envelope or MIME)")
    c.add_argument("--response", required=True, type=existing_file, metavar="RESP",
                   help="the eb:Receipt (envelope or MIME)")
    c.add_argument("--expect-orgnr", metavar="ORGNR",
                   help="the receipt's signer must carry this orgnr")
    add_trust_options(c)
    c.add_argument("--strip-whitespace", action="store_true",
                   help="remove whitespace-only text between elements of both files first "
                   "(documents pretty-printed after signing, DIGEST 7.10)")
    add_json(c)
    c.set_defaults(func=run_check)


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    root: etree._Element
    pretty: bool
    attachments: Mapping[str, Any]


def _load(path: Path, content_type: str | None, strip: bool) -> _Loaded:
    message = read_message(path, content_type)
    root = xmlparse.parse(message.envelope, what=str(path))
    pretty = has_pretty_print(root)
    if strip:
        strip_pretty_print(root)
    return _Loaded(root, pretty, message.attachments)


def _has_messaging(root: etree._Element) -> bool:
    return any(h.tag == _MESSAGING for el in root if el.tag == _HEADER for h in el)


def _parse(root: etree._Element) -> ebms.ParsedEnvelope:
    # The (possibly stripped) tree, re-read through the envelope parser's shape checks.
    return ebms.parse_envelope(etree.tostring(root))


def _kind_name(message: ebms.EbmsMessage) -> str:
    if isinstance(message, ebms.ErrorSignal | ebms.SoapFault):
        codes = ", ".join(f"{e.code} {e.short_description or ''}".strip() for e in message.errors)
        return f"an ebMS error ({codes or getattr(message, 'reason', '')})"
    return {ebms.PulledUserMessage: "a UserMessage without an SBD",
            ebms.PullRequestSignal: "a PullRequest", ebms.ReceiptSignal: "an eb:Receipt signal "
            "(check it with `sdp transport-receipt check`)"}[type(message)]


# --- receipt show -----------------------------------------------------------------------------


def _party_orgnr(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return ebms.orgnr_from_party_id(value)
    except ProtocolError:
        return value.strip()


def _iso(text: str | None) -> str | None:
    """An xs:dateTime as Python writes it, so verified and unverified output look alike."""
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text.strip()).isoformat()
    except ValueError:
        return text


def _sbd_fields(sbd: etree._Element) -> dict[str, Any]:
    """What an SBD says about itself, read without trusting it (the unverified view)."""
    sb = f"{{{NS_SBDH}}}"
    hdr = sbd.find(f"{sb}StandardBusinessDocumentHeader")
    if sbd.tag != _SBD or hdr is None:
        raise ProtocolError("not a StandardBusinessDocument with a header", subject=str(sbd.tag))
    doc = hdr.find(f"{sb}DocumentIdentification")
    conversation = None
    for scope in hdr.iterfind(f"{sb}BusinessScope/{sb}Scope"):
        if scope.findtext(f"{sb}Type") == CONVERSATION_ID_SCOPE:
            conversation = scope.findtext(f"{sb}InstanceIdentifier")
    business = [el for el in sbd if isinstance(el.tag, str) and el is not hdr]
    if len(business) != 1:
        raise ProtocolError(f"{len(business)} business messages, expected 1",
                            subject="StandardBusinessDocument")
    msg = business[0]
    local = etree.QName(msg).localname
    kind, details = local, {}
    if msg.tag == f"{{{NS_SDP}}}kvittering":
        found = [k for name, k in _KVITTERING_KINDS.items() if msg.find(f"{{{NS_SDP}}}{name}")
                 is not None]
        kind = found[0].value if len(found) == 1 else "kvittering of unknown kind"
        failed = msg.find(f"{{{NS_SDP}}}varslingfeilet")
        if failed is not None:
            details = {"varslingskanal": failed.findtext(f"{{{NS_SDP}}}varslingskanal"),
                       "beskrivelse": failed.findtext(f"{{{NS_SDP}}}beskrivelse")}
    elif msg.tag == f"{{{NS_SDP}}}feil":
        kind = receipts.Kind.FEIL.value
        details = {"feiltype": msg.findtext(f"{{{NS_SDP}}}feiltype"),
                   "detaljer": msg.findtext(f"{{{NS_SDP}}}detaljer")}
    signer = None
    signatures = [el for el in msg if el.tag == f"{{{xmldsig.DS_NS}}}Signature"]
    if signatures:
        try:
            certs = xmldsig.certificates_from_key_info(signatures[0])
        except SdpError:
            certs = []
        signer = certs[0] if certs else None
    return {
        "kind": kind,
        "is_receipt": msg.tag in (f"{{{NS_SDP}}}kvittering", f"{{{NS_SDP}}}feil"),
        "tidspunkt": _iso(msg.findtext(f"{{{NS_SDP}}}tidspunkt")),
        "created": None if doc is None else doc.findtext(f"{sb}CreationDateAndTime"),
        "document_type": None if doc is None else doc.findtext(f"{sb}Type"),
        "sbd_instance_identifier": None if doc is None else doc.findtext(f"{sb}InstanceIdentifier"),
        "conversation_id": conversation,
        "sender_orgnr": _party_orgnr(hdr.findtext(f"{sb}Sender/{sb}Identifier")),
        "receiver_orgnr": _party_orgnr(hdr.findtext(f"{sb}Receiver/{sb}Identifier")),
        "details": {k: v for k, v in details.items() if v is not None},
        "claimed_signer": signer,
    }


def _verified_fields(sbd: etree._Element, fields: dict[str, Any], trust: Trust,
                     at: dt.datetime, message: ebms.PulledUserMessage | None
                     ) -> tuple[dict[str, Any], x509.Certificate]:
    """Check the SBD's signature (signer = SBDH Sender) and take the fields from what it signed."""
    verified = verify_sbd(sbd, trust=trust.anchors, at=at, intermediates=trust.intermediates)
    out = dict(fields)
    out.update(sender_orgnr=verified.sender_orgnr, receiver_orgnr=verified.receiver_orgnr,
               conversation_id=verified.conversation_id,
               sbd_instance_identifier=verified.instance_identifier,
               document_type=verified.document_type)
    if isinstance(verified.message, sdp_types.Kvittering | sdp_types.Feil):
        # Only the kind, time and details are used here; the ebMS ids are shown separately.
        k = receipts.from_verified(
            verified, message_id=message.message_id if message else "",
            ref_to_message_id=message.ref_to_message_id if message else None,
            mpc=(message.mpc or "") if message else "", envelope_xml=b"", signed_references=())
        details = {"varslingskanal": k.varslingskanal, "beskrivelse": k.beskrivelse,
                   "feiltype": k.feiltype, "detaljer": k.detaljer}
        out.update(kind=k.kind.value, is_receipt=True, tidspunkt=k.tidspunkt.isoformat(),
                   details={key: v for key, v in details.items() if v is not None})
    return out, verified.signer


def run_show(args: argparse.Namespace) -> int:
    try:
        trust = load_trust_options(args)
        loaded = _load(args.input, args.content_type, args.strip_whitespace)
    except (UsageError, KeyMaterialError, ConfigurationError) as exc:
        return fail(args, exc, EXIT_USAGE)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    at = validation_time(args)
    root = loaded.root
    envelope: etree._Element | None = None
    message: ebms.PulledUserMessage | None = None
    envelope_note: str | None = None
    try:
        if root.tag == _SBD:
            sbd = root
        elif root.tag == _ENVELOPE and _has_messaging(root):
            env = _parse(root)
            envelope = root = env.root
            found = ebms.classify(env)
            if not isinstance(found, ebms.PulledUserMessage) or found.sbd is None:
                raise ProtocolError(f"not a pulled receipt: the envelope carries "
                                    f"{_kind_name(found)}", subject=str(args.input))
            message, sbd = found, found.sbd
        elif root.tag == _ENVELOPE:
            # An envelope saved without its ebMS header (example 4_request): the Body's SBD.
            envelope = root
            body = [el for el in root if el.tag == _BODY]
            content = [el for b in body for el in b if isinstance(el.tag, str)]
            if len(content) != 1 or content[0].tag != _SBD:
                raise ProtocolError("the env:Body does not hold exactly one SBD",
                                    subject=str(args.input))
            sbd = content[0]
            envelope_note = "the envelope has no eb:Messaging header"
        else:
            raise ProtocolError(f"root is {root.tag}: neither a SOAP envelope nor an SBD",
                                subject=str(args.input))
        with quiet_example_certificates():
            fields = _sbd_fields(sbd)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)

    wss_data: dict[str, Any] | None = None
    sbd_signer: x509.Certificate | None = fields.pop("claimed_signer")
    if args.verify:
        try:
            with quiet_example_certificates():
                if envelope is not None and not args.sbd_only:
                    attachments, unchecked = collect_attachments(
                        envelope, loaded.attachments, [],
                        skip_missing=args.skip_missing_attachments)
                    result = wss.verify(envelope, attachments=attachments, trust=trust.anchors,
                                        at=at, expected_orgnr=args.expect_orgnr,
                                        intermediates=trust.intermediates)
                    wss_data = wss_summary(result, trust, unchecked)
                fields, sbd_signer = _verified_fields(sbd, fields, trust, at, message)
        except UsageError as exc:
            return fail(args, exc, EXIT_USAGE)
        except SdpError as exc:
            hints = [whitespace_hint(exc, loaded.pretty, args.strip_whitespace),
                     attachment_hint(exc), timestamp_hint(exc, args.at is not None),
                     unsigned_hint(exc, root)]
            if isinstance(exc, wss.SecurityHeaderError) and envelope is not None:
                hints.append("--sbd-only checks only the SBD's own signature")
            return report(args, exc, EXIT_INVALID, *hints)
    data = _show_data(args, fields, message, wss_data, sbd_signer, trust, at, envelope,
                      envelope_note)
    emit(args, data, _show_lines(data))
    return EXIT_OK


def _show_data(args: argparse.Namespace, fields: dict[str, Any],
               message: ebms.PulledUserMessage | None, wss_data: dict[str, Any] | None,
               sbd_signer: x509.Certificate | None, trust: Trust, at: dt.datetime,
               envelope: etree._Element | None, envelope_note: str | None) -> dict[str, Any]:
    verified = bool(args.verify)
    if not verified:
        envelope_status = "not verified" if envelope is not None else "absent (bare SBD)"
    elif envelope is None:
        envelope_status = "absent (bare SBD)"
    else:
        envelope_status = "skipped (--sbd-only)" if args.sbd_only else "verified"
    notes = [envelope_note] if envelope_note else []
    if wss_data and message and wss_data["signer"]["orgnr"] != message.from_party.orgnr:
        notes.append(f"the envelope is signed by orgnr {wss_data['signer']['orgnr']} but eb:From "
                     f"is {message.from_party.orgnr}; --expect-orgnr pins the broker")
    if message and fields["sbd_instance_identifier"] != message.conversation_id:
        notes.append("the ebMS ConversationId is not the SBD's InstanceIdentifier (DIGEST 6.4)")
    return {
        "ok": True,
        "verified": verified,
        "file": str(args.input),
        "kind": fields["kind"],
        "is_receipt": fields["is_receipt"],
        "tidspunkt": fields["tidspunkt"],
        "created": fields["created"],
        "document_type": fields["document_type"],
        "sender_orgnr": fields["sender_orgnr"],
        "receiver_orgnr": fields["receiver_orgnr"],
        "ids": {
            "message_id": message.message_id if message else None,
            "ref_to_message_id": message.ref_to_message_id if message else None,
            "ebms_conversation_id": message.conversation_id if message else None,
            "sbd_instance_identifier": fields["sbd_instance_identifier"],
            "conversation_id": fields["conversation_id"],
        },
        "ebms": None if message is None else {
            "from": message.from_party.party_id, "from_role": message.from_party.role,
            "to": message.to_party.party_id, "to_role": message.to_party.role,
            "action": message.action, "mpc": message.mpc,
        },
        "details": fields["details"],
        "envelope_signature": {"status": envelope_status, **(wss_data or {})},
        "sbd_signature": {
            "status": "verified" if verified else "not verified",
            "signer": None if sbd_signer is None else certificate_info(
                sbd_signer, chain_checked=verified and trust.checked),
        },
        "at": at.isoformat() if verified else None,
        "whitespace_stripped": bool(args.strip_whitespace),
        "notes": notes,
    }


def _show_lines(d: Mapping[str, Any]) -> list[str]:
    head = d["kind"] + ("" if d["is_receipt"] else " (not a receipt)")
    lines = [head + (" - verified" if d["verified"]
                     else " - NOT verified: parsed only, give --verify to check the signatures")]
    if d["tidspunkt"]:
        lines.append(f"tidspunkt: {d['tidspunkt']}")
    lines.append(f"created: {d['created']}  (SBDH {d['document_type']})")
    lines.append(f"sender: {d['sender_orgnr']}  receiver: {d['receiver_orgnr']}")
    lines += [f"{k}: {v}" for k, v in d["details"].items()]
    ids = d["ids"]
    lines.append(f"conversation id: {ids['conversation_id']}")
    lines.append(f"SBD InstanceIdentifier: {ids['sbd_instance_identifier']}")
    if d["ebms"]:
        e = d["ebms"]
        lines.append(f"ebMS MessageId: {ids['message_id']}  RefToMessageId: "
                     f"{ids['ref_to_message_id']}  ConversationId: {ids['ebms_conversation_id']}")
        lines.append(f"ebMS from {e['from']} ({e['from_role']}) to {e['to']} ({e['to_role']}), "
                     f"action {e['action']}, mpc {e['mpc']}")
    env = d["envelope_signature"]
    lines.append(f"envelope signature: {env['status']}")
    if "signer" in env:
        lines += ["  " + line for line in wss_lines(env)]
    sbd = d["sbd_signature"]
    signer = sbd["signer"]
    who = (f"{signer['subject']} (orgnr {signer['orgnr'] or 'none'})" if signer
           else "no certificate")
    if sbd["status"] == "verified":
        chain = "chain verified" if signer["chain_verified"] else "chain NOT checked (no --trust)"
        lines.append(f"SBD signature: verified; signer {who}; {chain}")
    else:
        lines.append(f"SBD signature: NOT verified; claimed signer {who}")
    if d["at"]:
        lines.append(f"checked at {d['at']}")
    if d["whitespace_stripped"]:
        lines.append("note: whitespace-only text between elements was removed first "
                     "(--strip-whitespace)")
    lines += [f"note: {n}" for n in d["notes"]]
    return lines


# --- transport-receipt check ------------------------------------------------------------------


def _request_targets(env: ebms.ParsedEnvelope) -> dict[str, str]:
    """Reference URI -> what it signs in the request (body, messaging, timestamp, attachment)."""
    targets: dict[str, str] = {}
    for ref in wss.signed_references(env.root):
        uri = ref.uri or ""
        if uri.startswith("cid:"):
            targets[uri] = "attachment"
        elif uri == f"#{env.body_id}":
            targets[uri] = "body"
        elif uri == f"#{env.messaging_id}":
            targets[uri] = "messaging"
        elif any(t.get(_WSU_ID) == uri[1:] for t in env.root.iter(_TIMESTAMP)):
            targets[uri] = "timestamp"
        else:
            targets[uri] = "other"
    return targets


def run_check(args: argparse.Namespace) -> int:
    try:
        trust = load_trust_options(args)
        req = _load(args.request, None, args.strip_whitespace)
        resp = _load(args.response, None, args.strip_whitespace)
    except (UsageError, KeyMaterialError, ConfigurationError) as exc:
        return fail(args, exc, EXIT_USAGE)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    at = validation_time(args)
    try:
        req_env = _parse(req.root)
        request = ebms.classify(req_env)
        if request.message_id is None:
            raise ProtocolError("the request has no MessageId", subject=str(args.request))
        req_refs = wss.signed_references(req_env.root)
        targets = _request_targets(req_env)
    except SdpError as exc:
        return report(args, exc, EXIT_INVALID, "--request must be a signed ebMS message",
                      unsigned_hint(exc, req.root))
    try:
        with quiet_example_certificates():
            result = wss.verify(resp.root, trust=trust.anchors, at=at,
                                expected_orgnr=args.expect_orgnr,
                                intermediates=trust.intermediates)
        receipt = ebms.classify(_parse(resp.root))
        if not isinstance(receipt, ebms.ReceiptSignal):
            raise ProtocolError(f"the response is not an eb:Receipt but {_kind_name(receipt)}",
                                subject=str(args.response))
    except SdpError as exc:
        return report(args, exc, EXIT_INVALID,
                      whitespace_hint(exc, resp.pretty, args.strip_whitespace),
                      timestamp_hint(exc, args.at is not None), unsigned_hint(exc, resp.root))

    signed = {(r.uri or "", r.digest_method, r.digest_value) for r in req_refs}
    problems: list[str] = []
    ref_matches = receipt.ref_to_message_id == request.message_id
    if not ref_matches:
        problems.append(f"RefToMessageId {receipt.ref_to_message_id} is not the request's "
                        f"MessageId {request.message_id}")
    rows: list[dict[str, Any]] = []
    for nr in receipt.references:
        if (nr.uri, nr.digest_method, nr.digest_value) in signed:
            outcome = "match"
        elif nr.uri in targets:
            outcome = "mismatch"
            problems.append(f"{nr.uri}: digest differs from the request's signed reference")
        else:
            outcome = "unknown uri"
            problems.append(f"{nr.uri}: the request's signature has no such reference")
        rows.append({"uri": nr.uri, "target": targets.get(nr.uri), "digest_method":
                     nr.digest_method, "digest_value": b64(nr.digest_value), "result": outcome})
    acknowledged = {r["uri"] for r in rows if r["result"] == "match"}
    missing = [u for u, t in targets.items() if t in ("body", "attachment")
               and u not in acknowledged]
    problems += [f"{u} ({targets[u]}) is not acknowledged" for u in missing]
    summary = wss_summary(result, trust, [])
    data: dict[str, Any] = {
        "ok": not problems,
        "request": {"file": str(args.request), "message_id": request.message_id,
                    "signed_references": [{"uri": u, "target": t, "acknowledged": u in
                                           acknowledged} for u, t in targets.items()],
                    "signature": "not verified (taken as the reference)"},
        "response": {"file": str(args.response), "message_id": receipt.message_id,
                     "ref_to_message_id": receipt.ref_to_message_id, "ref_matches": ref_matches,
                     "signature": summary},
        "references": rows,
        "missing": missing,
        "problems": problems,
        "at": at.isoformat(),
        "whitespace_stripped": bool(args.strip_whitespace),
    }
    lines = [("transport receipt MATCHES the request" if not problems
              else "transport receipt does NOT match the request"),
             f"receipt {receipt.message_id}: RefToMessageId {receipt.ref_to_message_id} "
             + ("= request MessageId" if ref_matches else f"!= request MessageId "
                                                          f"{request.message_id}"),
             "acknowledged references:"]
    lines += [f"  {r['uri']} ({r['target'] or '?'})  {r['digest_value']}  {r['result'].upper()}"
              for r in rows]
    not_acked = [f"{u} ({t})" for u, t in targets.items() if u not in acknowledged]
    if not_acked:
        lines.append("request references not acknowledged: " + ", ".join(not_acked))
    lines.append("receipt signature: valid" + ("" if trust.checked
                                               else "; chain NOT checked (no --trust)"))
    lines += ["  " + line for line in wss_lines(summary)]
    lines.append("request signature: not verified (taken as the reference)")
    lines += [f"problem: {p}" for p in problems]
    emit(args, data, lines)
    return EXIT_INVALID if problems else EXIT_OK
