"""`sdp soap verify`: check the WS-Security signature of a received or archived SOAP message.

Also home to the input handling the receipt commands share: reading a raw envelope or a MIME
message from disk, removing pretty-print whitespace, and the trust options.

Pretty-printing: the spec's SOAP examples were indented after they were signed (DIGEST 3.11,
7.10), so their signatures only verify once the whitespace-only text between elements is
removed. That is never done silently: `--strip-whitespace` asks for it, the output says it
was done, and a failed check on an indented document suggests it.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree

from sdp import ebms, mime, xmldsig, xmlparse
from sdp import wssecurity as wss
from sdp.certificates import orgnr_of, subject_of
from sdp.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_json,
    emit,
    existing_file,
    fail,
    iso_time,
    load_trust,
)
from sdp.errors import (
    ConfigurationError,
    DigestMismatchError,
    KeyMaterialError,
    ReferenceMismatchError,
    SdpError,
    SignatureValueError,
)
from sdp.keys import load_certificates

EPILOG_VERIFY = """examples:
  sdp soap verify response.xml --trust buypass-root.cer --intermediate buypass-ca3.cer \\
      --expect-orgnr 984661185
  sdp soap verify request.mime --trust ca.pem --json     # file starts with Content-Type:
  sdp soap verify body.bin --content-type 'multipart/related; boundary="b"; ...'
  sdp soap verify envelope.xml --attachment post.cms --trust ca.pem
  sdp soap verify 1_request.xml --strip-whitespace --at 2014-10-13T13:13:05Z \\
      --skip-missing-attachments                           # the spec's indented examples

input: a SOAP 1.2 envelope (the file starts with '<'), or a MIME message: either a file
that starts with its headers (Content-Type: multipart/related; ..., as saved by `curl -i`
or a mail client) or the bare body with --content-type.

--json keys: ok, file, at, whitespace_stripped, message {kind, message_id,
ref_to_message_id}, signer {subject, orgnr, issuer, not_before, not_after, chain_verified},
chain, timestamp {created, expires}, references [{target, uri, digest_method, digest_value,
result: ok | mismatch | not checked}], unchecked_attachments. On failure: ok=false, error,
message, subject, hint (and references for a digest mismatch).

exit codes: 0 valid, 1 invalid or not signed, 2 usage error.
"""

#: How the output names a reference whose attachment was not available.
NOT_CHECKED = "not checked"

_NEGATIVE_SERIAL = "Parsed a serial number which wasn't"
_MAX_HEADER_BYTES = 16 * 1024


# --- options shared with the receipt commands -------------------------------------------------


def add_trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", action="append", type=existing_file, metavar="CA.pem",
                   help="trust anchor(s) the signer must chain to (repeatable); without it "
                   "the chain is NOT checked")
    p.add_argument("--intermediate", action="append", type=existing_file, metavar="CA.pem",
                   help="untrusted intermediate certificate(s) for building the chain "
                   "(repeatable); the WS-Security token carries only the signer's certificate")
    p.add_argument("--at", type=iso_time, metavar="TIME",
                   help="validation time, ISO 8601 (default: now); used for the wsu:Timestamp "
                   "window and the certificate chain, e.g. the time an archived message arrived")


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--content-type", metavar="TYPE",
                   help="the HTTP Content-Type when FILE is a bare MIME body without headers")
    p.add_argument("--strip-whitespace", action="store_true",
                   help="remove whitespace-only text between elements before verifying: for "
                   "documents pretty-printed after signing, like the spec's examples "
                   "(DIGEST 7.10)")


@dataclass(frozen=True)
class Trust:
    """What the trust options resolved to."""

    anchors: list[x509.Certificate] | None
    intermediates: list[x509.Certificate]

    @property
    def checked(self) -> bool:
        return self.anchors is not None


def load_trust_options(args: argparse.Namespace) -> Trust:
    """Read --trust and --intermediate; raises KeyMaterialError & co. (a usage error)."""
    intermediates: list[x509.Certificate] = []
    for path in args.intermediate or []:
        intermediates.extend(load_certificates(path))
    return Trust(load_trust(args.trust), intermediates)


def validation_time(args: argparse.Namespace) -> dt.datetime:
    at: dt.datetime | None = args.at
    return at or dt.datetime.now(dt.UTC)


@contextmanager
def quiet_example_certificates() -> Iterator[None]:
    """The 2014 example certificates have negative serial numbers (DIGEST 15 item 27);
    cryptography warns on each parse, which would only clutter the command's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NEGATIVE_SERIAL)
        yield


# --- reading the input ------------------------------------------------------------------------


def read_message(path: Path, content_type: str | None) -> mime.ParsedMessage:
    """A SOAP message from disk: a bare envelope, or MIME with headers or --content-type."""
    data = path.read_bytes()
    if content_type is None:
        if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            content_type = mime.SOAP_MEDIA_TYPE
        else:
            content_type, data = _split_headers(data, str(path))
    return mime.parse_message(content_type, data)


def _split_headers(data: bytes, name: str) -> tuple[str, bytes]:
    """Content-Type and body of a MIME message saved with its headers (and maybe an HTTP
    status or request line before them)."""
    match = re.search(rb"\r?\n\r?\n", data[:_MAX_HEADER_BYTES])
    if match is None:
        raise UsageError(f"{name} is neither XML nor a MIME message with headers; "
                         "give --content-type for a bare MIME body")
    lines = data[:match.start()].decode("latin-1").splitlines()
    if lines and re.match(r"(HTTP/\S+ \d{3}|[A-Z]+ \S+ HTTP/)", lines[0]):
        lines = lines[1:]
    headers: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t") and current is not None:  # folded header
            headers[current] += " " + line.strip()
            continue
        field, sep, value = line.partition(":")
        if not sep:
            raise UsageError(f"{name}: not a header line: {line[:60]!r}; give --content-type "
                             "for a bare MIME body")
        current = field.strip().lower()
        headers[current] = value.strip()
    if "content-type" not in headers:
        raise UsageError(f"{name}: the headers carry no Content-Type; give --content-type")
    return headers["content-type"], data[match.end():]


def has_pretty_print(root: etree._Element) -> bool:
    """Whether there is whitespace-only text between elements (indentation)."""
    return any(
        (len(el) and el.text is not None and not el.text.strip())
        or (el.getparent() is not None and el.tail is not None and not el.tail.strip())
        for el in root.iter()
    )


def strip_pretty_print(root: etree._Element) -> None:
    """Remove whitespace-only text between elements, in place; leaf text is kept as it is.

    Undoes indentation added after signing (DIGEST 3.11, 7.10). SDP documents have no mixed
    content, so this whitespace carries no meaning; a signature that verifies only after
    removing it was made over the unindented document.
    """
    for el in root.iter():
        if len(el) and el.text is not None and not el.text.strip():
            el.text = None
        if el.getparent() is not None and el.tail is not None and not el.tail.strip():
            el.tail = None


def whitespace_hint(exc: SdpError, pretty: bool, stripped: bool) -> str:
    """A suggestion for a signature that failed on an indented document."""
    if pretty and not stripped and isinstance(exc, DigestMismatchError | SignatureValueError):
        return ("the document has whitespace-only text between elements: if it was "
                "pretty-printed after signing, as the spec's examples were, retry with "
                "--strip-whitespace")
    return ""


# --- attachments ------------------------------------------------------------------------------


def attachment_arg(value: str) -> tuple[str | None, Path]:
    """`FILE` or `CID=FILE` for --attachment."""
    cid: str | None = None
    if "=" in value and not Path(value).is_file():
        cid, value = value.split("=", 1)
        cid = mime.bare_content_id(cid[4:] if cid.startswith("cid:") else cid)
    return cid, existing_file(value)


def _signed_cids(root: etree._Element) -> list[str]:
    try:
        refs = wss.signed_references(root)
    except SdpError:
        return []  # not signed, or a broken header: `verify` says which
    return [mime.content_id_from_uri(r.uri) for r in refs if r.uri and r.uri.startswith("cid:")]


def _signed_digest(root: etree._Element, cid: str) -> bytes:
    for ref in wss.signed_references(root):
        if ref.uri and ref.uri.startswith("cid:") and mime.content_id_from_uri(ref.uri) == cid:
            return ref.digest_value
    raise KeyError(cid)


def collect_attachments(root: etree._Element, received: Mapping[str, mime.Part],
                        given: Sequence[tuple[str | None, Path]], *, skip_missing: bool
                        ) -> tuple[dict[str, bytes | wss.AttachmentDigest], list[str]]:
    """The attachments to check, and the Content-IDs left unchecked with `skip_missing`.

    MIME parts and --attachment files count as received. A signed `cid:` with neither is an
    error, unless `skip_missing` stands its own signed digest in: then that one reference is
    reported as not checked, never as valid.
    """
    signed = _signed_cids(root)
    found: dict[str, bytes | wss.AttachmentDigest] = {c: p.data for c, p in received.items()}
    for cid, path in given:
        if cid is None:
            open_cids = [c for c in signed if c not in found]
            if len(open_cids) != 1:
                raise UsageError(f"cannot tell which signed attachment {path} is "
                                 f"({len(open_cids)} candidates); write --attachment CID=FILE")
            cid = open_cids[0]
        if cid in found:
            raise UsageError(f"attachment {cid} given twice")
        found[cid] = path.read_bytes()
    unchecked = [c for c in signed if c not in found] if skip_missing else []
    for cid in unchecked:
        found[cid] = wss.AttachmentDigest(_signed_digest(root, cid))
    return found, unchecked


def attachment_hint(exc: SdpError) -> str:
    if isinstance(exc, ReferenceMismatchError) and "not received" in str(exc):
        return ("the attachment is not in the input: give it with --attachment [CID=]FILE, "
                "or --skip-missing-attachments to check the rest")
    return ""


def timestamp_hint(exc: SdpError, at_given: bool) -> str:
    if isinstance(exc, wss.TimestampError) and not at_given:
        return "for an archived message give --at with the time it was received"
    return ""


def unsigned_hint(exc: SdpError, root: etree._Element) -> str:
    """Say plainly that a header without a signature (the fault template's) means unsigned."""
    if isinstance(exc, wss.SecurityHeaderError) and not any(
            True for _ in root.iter(f"{{{xmldsig.DS_NS}}}Signature")):
        return "the message carries no ds:Signature: it is not signed"
    return ""


def report(args: argparse.Namespace, exc: SdpError | UsageError, code: int,
           *hints: str) -> int:
    """`fail`, plus what to try next; hints go on their own line (a `hint` key with --json)."""
    hint = "; ".join(h for h in hints if h)
    if not hint:
        return fail(args, exc, code)
    if getattr(args, "json", False):
        emit(args, {"ok": False, "error": type(exc).__name__, "message": str(exc),
                    "subject": getattr(exc, "subject", None), "hint": hint}, [])
    else:
        print(f"error ({type(exc).__name__}): {exc}\nhint: {hint}", file=sys.stderr)
    return code


# --- describing a result ----------------------------------------------------------------------


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def certificate_info(cert: x509.Certificate, *, chain_checked: bool) -> dict[str, Any]:
    return {
        "subject": subject_of(cert),
        "orgnr": orgnr_of(cert),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "chain_verified": chain_checked,
    }


def reference_info(refs: Sequence[wss.VerifiedReference], unchecked: Sequence[str]
                   ) -> list[dict[str, Any]]:
    out = []
    for r in refs:
        skipped = r.target == "attachment" and mime.content_id_from_uri(r.uri) in unchecked
        out.append({"target": r.target, "uri": r.uri, "digest_method": r.digest_method,
                    "digest_value": b64(r.digest_value),
                    "result": NOT_CHECKED if skipped else ("ok" if r.ok else "mismatch")})
    return out


def reference_lines(refs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for r in refs:
        note = " (attachment not supplied)" if r["result"] == NOT_CHECKED else ""
        lines.append(f"  {r['target']:<10} {r['uri']}  {r['digest_method'].rsplit('#', 1)[-1]}"
                     f" {r['digest_value']}  {r['result'].upper()}{note}")
    return lines


def wss_summary(result: wss.WssResult, trust: Trust, unchecked: Sequence[str]) -> dict[str, Any]:
    """A verified WS-Security header as plain data (the --json shape)."""
    return {
        "signer": certificate_info(result.certificate, chain_checked=trust.checked),
        "chain": [subject_of(c) for c in result.chain],
        "timestamp": {"created": result.created.isoformat(),
                      "expires": result.expires.isoformat()},
        "references": reference_info(result.references, unchecked),
        "unchecked_attachments": list(unchecked),
    }


def wss_lines(summary: Mapping[str, Any]) -> list[str]:
    signer = summary["signer"]
    lines = [f"signer: {signer['subject']} (orgnr {signer['orgnr'] or 'none'}), "
             f"issued by {signer['issuer']}"]
    if signer["chain_verified"]:
        lines.append("chain: verified: " + " <- ".join(summary["chain"]))
    else:
        lines.append("chain: NOT checked (no --trust): the signature is intact, but nothing "
                     "shows who owns the certificate "
                     f"(valid {signer['not_before']} to {signer['not_after']})")
    ts = summary["timestamp"]
    lines.append(f"timestamp: created {ts['created']}, expires {ts['expires']}")
    lines.append("references:")
    lines += reference_lines(summary["references"])
    return lines


def message_info(root: etree._Element) -> dict[str, Any] | None:
    """What the envelope carries, for orientation; None when eb:Messaging cannot be read."""
    try:
        env = ebms.parse_envelope(etree.tostring(root))
        found = ebms.classify(env)
    except SdpError:
        return None
    kind = {ebms.PulledUserMessage: "UserMessage", ebms.PullRequestSignal: "PullRequest",
            ebms.ReceiptSignal: "Receipt", ebms.ErrorSignal: "Error",
            ebms.SoapFault: "SOAP fault"}[type(found)]
    return {"kind": kind, "message_id": found.message_id,
            "ref_to_message_id": getattr(found, "ref_to_message_id", None)}


# --- the command ------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    soap = sub.add_parser("soap", help="check SOAP messages",
                          description="SOAP 1.2 / ebMS messages as exchanged with the "
                          "meldingsformidler.")
    verbs = soap.add_subparsers(dest="verb", metavar="VERB", required=True)
    v = verbs.add_parser("verify", help="verify a message's WS-Security signature",
                         description="Verify the wsse:Security signature of a SOAP envelope or "
                         "MIME message strictly (DIGEST 7.8): the signature value, every "
                         "reference, the Timestamp window at --at, and with --trust the "
                         "signer's chain.",
                         epilog=EPILOG_VERIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("input", type=existing_file, metavar="FILE")
    v.add_argument("--attachment", action="append", default=[], type=attachment_arg,
                   metavar="[CID=]FILE", help="an attachment the envelope signs, when FILE is a "
                   "bare envelope (repeatable); CID may be left out if only one is signed")
    v.add_argument("--skip-missing-attachments", action="store_true",
                   help="report signed attachments that are not in the input as NOT checked "
                   "instead of failing")
    v.add_argument("--expect-orgnr", metavar="ORGNR",
                   help="the signer certificate must carry this organisation number")
    add_trust_options(v)
    add_input_options(v)
    add_json(v)
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    try:
        trust = load_trust_options(args)
        message = read_message(args.input, args.content_type)
    except (UsageError, KeyMaterialError, ConfigurationError) as exc:
        return fail(args, exc, EXIT_USAGE)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    at = validation_time(args)
    try:
        root = xmlparse.parse(message.envelope, what="SOAP envelope")
        pretty = has_pretty_print(root)
        if args.strip_whitespace:
            strip_pretty_print(root)
        attachments, unchecked = collect_attachments(
            root, message.attachments, args.attachment, skip_missing=args.skip_missing_attachments)
    except UsageError as exc:
        return fail(args, exc, EXIT_USAGE)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    try:
        with quiet_example_certificates():
            result = wss.verify(root, attachments=attachments, trust=trust.anchors, at=at,
                                expected_orgnr=args.expect_orgnr,
                                intermediates=trust.intermediates)
    except wss.WssDigestMismatchError as exc:
        return _digest_failure(args, exc, unchecked,
                               whitespace_hint(exc, pretty, args.strip_whitespace))
    except SdpError as exc:
        return report(args, exc, EXIT_INVALID,
                      whitespace_hint(exc, pretty, args.strip_whitespace),
                      attachment_hint(exc), timestamp_hint(exc, args.at is not None),
                      unsigned_hint(exc, root))

    summary = wss_summary(result, trust, unchecked)
    data: dict[str, Any] = {"ok": True, "file": str(args.input), "at": at.isoformat(),
                            "whitespace_stripped": bool(args.strip_whitespace),
                            "message": message_info(root), **summary}
    lines = ["signature valid" + ("" if trust.checked else "; chain NOT checked (no --trust)")
             + (f"; {len(unchecked)} attachment(s) NOT checked" if unchecked else "")]
    if data["message"]:
        m = data["message"]
        lines.append(f"message: {m['kind']} {m['message_id']}"
                     + (f" (RefToMessageId {m['ref_to_message_id']})"
                        if m["ref_to_message_id"] else ""))
    lines += wss_lines(summary)
    lines.append(f"checked at {data['at']}")
    if args.strip_whitespace:
        lines.append("note: whitespace-only text between elements was removed before "
                     "verifying (--strip-whitespace)")
    emit(args, data, lines)
    return EXIT_OK


def _digest_failure(args: argparse.Namespace, exc: wss.WssDigestMismatchError,
                    unchecked: Sequence[str], hint: str) -> int:
    """A digest mismatch: show every reference's outcome, not only the first failure."""
    refs = reference_info(exc.references, unchecked)
    if getattr(args, "json", False):
        emit(args, {"ok": False, "error": type(exc).__name__, "message": str(exc),
                    "subject": exc.subject, "hint": hint or None, "references": refs}, [])
        return EXIT_INVALID
    print("signature INVALID\nreferences:")
    for line in reference_lines(refs):
        print(line)
    return report(args, exc, EXIT_INVALID, hint)
