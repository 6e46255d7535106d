"""The public client: send consignments, pull receipts, confirm them.

    client = SdpClient(Environment.test(), load_signing_identity("avsender.p12", "pw"))
    result = client.send(forsendelse)              # -> SendResult with a verified transport receipt
    receipt = client.pull()                        # -> Kvittering | None (empty queue)
    client.confirm(receipt)                        # after storing it durably

Data flows one way through the layers: consignment -> package -> business message + SBD ->
ebMS + WS-Security -> MIME -> HTTP, and responses come back the same way, verified before
they are parsed. A send whose outcome is unknown is retried with the same ebMS MessageId (the
broker de-duplicates on it, DIGEST 9.5); a definite rejection is never retried.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from sdp import ebms, mime, xmlparse
from sdp import wssecurity as wss
from sdp.consignment import Forsendelse
from sdp.environment import Environment
from sdp.errors import EbmsError, ProtocolError, SdpError, SignatureError, TransportError
from sdp.keys import SigningIdentity
from sdp.message import build_digital_post_sbd, verify_sbd
from sdp.package import cms
from sdp.package.dokumentpakke import build_package
from sdp.receipts import Kvittering, from_verified
from sdp.redact import redact_xml
from sdp.transport import (
    BodyRedactor,
    HttpResponse,
    HttpServerError,
    HttpStatusError,
    RetryPolicy,
    Timeouts,
    Transport,
    with_retries,
)
from sdp.xmldsig import WSSE_NS
from sdp_bindings.ebms import Messaging

log = logging.getLogger("sdp.client")


class TransportReceiptError(SignatureError):
    """The transport receipt does not acknowledge exactly what we sent."""


@dataclass(frozen=True)
class TransportReceipt:
    """The broker's signed eb:Receipt for one consignment (DIGEST 7.5)."""

    message_id: str
    ref_to_message_id: str
    timestamp: dt.datetime
    references: tuple[ebms.NonRepudiationReference, ...]
    envelope_xml: bytes
    signer_orgnr: str | None


@dataclass(frozen=True)
class SendResult:
    """What a successful send leaves behind: ids to correlate receipts, and the proof."""

    message_id: str
    conversation_id: str
    sbd_instance_identifier: str
    fingerprint: bytes
    transport_receipt: TransportReceipt
    attempts: int
    #: The signed SBD as sent, for the sender's own archive.
    sbd_xml: bytes


@dataclass(frozen=True, kw_only=True)
class _Ids:
    """Every id of one send, fixed before the first attempt so a resend repeats them."""

    message_id: str
    conversation_id: str
    sbd_instance_identifier: str
    fingerprint: bytes
    action: str
    mpc: str
    from_orgnr: str
    content_id: str
    messaging_id: str
    body_id: str


@dataclass(frozen=True, kw_only=True)
class Prepared(_Ids):
    """A consignment packaged, signed and given its ids, saved in `folder`, not yet sent."""

    folder: Path

    @property
    def package_path(self) -> Path:
        return self.folder / "dokumentpakke.cms"

    @property
    def sbd_xml(self) -> bytes:
        return (self.folder / "sbd.xml").read_bytes()

    def save(self) -> None:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "folder"}
        data["fingerprint"] = self.fingerprint.hex()
        tmp = self.folder / "prepared.json.part"
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(self.folder / "prepared.json")

    @classmethod
    def load(cls, folder: Path) -> Prepared:
        data = json.loads((folder / "prepared.json").read_text(encoding="utf-8"))
        data["fingerprint"] = bytes.fromhex(data["fingerprint"])
        return cls(folder=folder, **data)


#: `send` keeps a package in memory when its documents add up to at most this; larger ones
#: go through a temporary folder, as `prepare` does.
IN_MEMORY_DOCUMENT_BYTES = 8 * 1024 * 1024


class SdpClient:
    """A sender (avsender or databehandler) talking to one meldingsformidler environment."""

    def __init__(
        self,
        environment: Environment,
        signer: SigningIdentity,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        proxies: dict[str, str] | None = None,
        clock_skew: dt.timedelta = wss.DEFAULT_CLOCK_SKEW,
        key_transport: cms.KeyTransport = cms.KeyTransport.OAEP_SHA256,
        sleep: Callable[[float], None] | None = None,
        transport: Transport | None = None,
        log_bodies: bool | BodyRedactor = False,
    ) -> None:
        """`log_bodies=True` logs request and response envelopes at DEBUG on
        `sdp.transport` with personal data redacted (`sdp.redact.redact_xml`); pass your own
        redactor to change what is hidden. Attachments are never logged."""
        self.environment = environment
        self.signer = signer
        self.retry = retry or RetryPolicy()
        self.clock_skew = clock_skew
        self.key_transport = key_transport
        self._sleep = sleep or time.sleep
        plain = environment.url.startswith("http://")
        redactor = redact_xml if log_bodies is True else (log_bodies or None)
        self.transport = transport or Transport(
            timeouts=timeouts, proxies=proxies, allow_plain_http=plain,
            verify=environment.tls_ca_bundle or True, log_bodies=redactor)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> SdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending ------------------------------------------------------------------------

    def send(self, forsendelse: Forsendelse, *, message_id: str | None = None,
             signing_time: dt.datetime | None = None) -> SendResult:
        """Package, sign and send a consignment; return its verified transport receipt.

        For a send that must survive a crash, use `prepare` (which writes everything to a
        folder) and `transmit`: a prepared message is resent byte-for-byte with the same
        MessageId, and the broker answers with the original receipt (DIGEST 9.5).
        """
        sizes = [d.known_size() for d in (forsendelse.hoveddokument, *forsendelse.vedlegg)]
        if all(n is not None for n in sizes) \
                and sum(n or 0 for n in sizes) <= IN_MEMORY_DOCUMENT_BYTES:
            # Nothing here outlives the call, so small packages skip the folder and files.
            buffer = io.BytesIO()
            ids, sbd_xml = self._build(forsendelse, buffer, message_id, signing_time)
            return self._transmit(ids, buffer.getvalue(), sbd_xml)
        with tempfile.TemporaryDirectory(prefix="sdp-") as tmp:
            prepared = self.prepare(forsendelse, Path(tmp), message_id=message_id,
                                    signing_time=signing_time)
            return self.transmit(prepared)

    def prepare(self, forsendelse: Forsendelse, folder: Path, *,
                message_id: str | None = None,
                signing_time: dt.datetime | None = None) -> Prepared:
        """Build the package and the signed SBD into `folder` and fix every id of the send.

        Nothing goes on the wire. The result is saved as `folder/prepared.json` beside the
        package and the SBD, so `Prepared.load(folder)` can resume after a restart.
        """
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "dokumentpakke.cms").open("wb") as out:
            ids, sbd_xml = self._build(forsendelse, out, message_id, signing_time)
        prepared = Prepared(folder=folder, **{f.name: getattr(ids, f.name)
                                              for f in fields(_Ids)})
        (folder / "sbd.xml").write_bytes(sbd_xml)
        prepared.save()
        return prepared

    def _build(self, forsendelse: Forsendelse, out: BinaryIO, message_id: str | None,
               signing_time: dt.datetime | None) -> tuple[_Ids, bytes]:
        """Write the package to `out`; return the send's ids and the signed SBD."""
        built = build_package(
            out, hoveddokument=forsendelse.hoveddokument, vedlegg=forsendelse.vedlegg,
            avsender=forsendelse.avsender, mottaker=forsendelse.mottaker,
            signer=self.signer, recipient=forsendelse.recipient_certificate,
            signing_time=signing_time, key_transport=self.key_transport)
        sbd = build_digital_post_sbd(forsendelse, built.fingerprint, self.signer)
        ids = _Ids(
            message_id=message_id or ebms.new_message_id(),
            conversation_id=sbd.conversation_id,
            sbd_instance_identifier=sbd.instance_identifier,
            fingerprint=built.fingerprint,
            action=(ebms.ACTION_FORMIDLE_DIGITAL_POST if forsendelse.is_digital
                    else ebms.ACTION_FORMIDLE_FYSISK_POST),
            mpc=ebms.mpc(forsendelse.prioritert, forsendelse.mpc_id),
            from_orgnr=forsendelse.technical_sender_orgnr,
            content_id=mime.new_content_id(),
            # Every attempt re-signs with a fresh Timestamp but keeps these Ids, so the
            # Body's digest stays the same: a de-duplicated answer to an earlier attempt
            # still acknowledges what a later one signed (DIGEST 9.5).
            messaging_id=f"id-{ebms.new_message_id()}",
            body_id=f"id-{ebms.new_message_id()}",
        )
        return ids, sbd.xml

    def transmit(self, prepared: Prepared) -> SendResult:
        """Send a prepared message, retrying an unknown outcome with the same MessageId."""
        return self._transmit(prepared, prepared.package_path, prepared.sbd_xml)

    def _transmit(self, prepared: _Ids, package: bytes | Path, sbd_xml: bytes) -> SendResult:
        attempts = 0
        signed_digests: dict[str, set[bytes]] = {}
        ids = {"messaging_id": prepared.messaging_id, "body_id": prepared.body_id}

        def attempt(n: int) -> TransportReceipt:
            nonlocal attempts
            attempts = n
            now = dt.datetime.now(dt.UTC)
            messaging = ebms.user_message(
                message_id=prepared.message_id, timestamp=now, from_orgnr=prepared.from_orgnr,
                to_orgnr=self.environment.mf_orgnr, action=prepared.action,
                # The examples use the SBD's InstanceIdentifier (DIGEST 6.4, 15 item 5).
                conversation_id=prepared.sbd_instance_identifier, mpc=prepared.mpc,
                attachment_cid=prepared.content_id)
            envelope = ebms.build_envelope(messaging, sbd_xml, **ids)
            # The attachment reference's digest is the package fingerprint (DIGEST 7.8).
            signed = wss.sign(envelope, self.signer,
                              attachments={prepared.content_id: prepared.fingerprint}, now=now)
            body = mime.MultipartBody(
                etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
                mime.Attachment(prepared.content_id, package))
            for uri, digest in signed.digests.items():
                signed_digests.setdefault(uri, set()).add(digest)
            response = self._post(body, None, n)
            return self._transport_receipt(response, prepared.message_id, signed,
                                           signed_digests)

        receipt = with_retries(attempt, self.retry, sleep=self._sleep)
        log.info("sent conversation=%s message_id=%s attempts=%d", prepared.conversation_id,
                 prepared.message_id, attempts)
        return SendResult(prepared.message_id, prepared.conversation_id,
                          prepared.sbd_instance_identifier, prepared.fingerprint, receipt,
                          attempts, sbd_xml)

    def _http(self, body: mime.MultipartBody | bytes, content_type: str | None,
              attempt: int) -> HttpResponse:
        """POST; a SOAP fault or ebMS error inside an HTTP error status is a definite answer
        (raised as EbmsError, never retried), not a transport failure."""
        try:
            return self.transport.post(self.environment.url, body, content_type,
                                       attempt=attempt)
        except (HttpStatusError, HttpServerError) as exc:
            definite = self._error_in(exc.content_type, exc.body)
            if definite is not None:
                raise definite from exc
            raise

    def _post(self, body: mime.MultipartBody | bytes, content_type: str | None,
              attempt: int) -> mime.ParsedMessage:
        """POST and split the answer, which must not be empty."""
        response = self._http(body, content_type, attempt)
        if not response.body:
            raise ProtocolError("empty response", subject=self.environment.url)
        return response.parse()

    def _error_in(self, content_type: str | None, body: bytes) -> EbmsError | None:
        if not body or not content_type:
            return None
        try:
            parsed = mime.parse_message(content_type, body)
            env = ebms.parse_envelope(parsed.envelope)
            msg = ebms.classify(env)
        except SdpError:
            return None
        if isinstance(msg, ebms.SoapFault | ebms.ErrorSignal):
            return msg.exception(authenticated=self._is_authentic(env.root))
        return None

    def _is_authentic(self, envelope: etree._Element) -> bool:
        """Whether an error came signed by the broker. An unsigned one is still reported,
        marked unauthenticated (DIGEST 15 item 26)."""
        try:
            self._verify_broker(envelope)
        except SdpError:
            return False
        return True

    def _verify_broker(self, envelope: etree._Element) -> wss.WssResult:
        env = self.environment
        return wss.verify(envelope, trust=env.trust_anchors, intermediates=env.intermediates,
                          clock_skew=self.clock_skew, expected_orgnr=env.mf_orgnr)

    def _open(self, parsed: mime.ParsedMessage
              ) -> tuple[ebms.ParsedEnvelope, ebms.EbmsMessage, wss.WssResult]:
        """Verify the broker's signature first, then parse (ARCHITECTURE: nothing is trusted
        before its signature). Errors and faults are raised as EbmsError; an unsigned one is
        still reported, marked unauthenticated (DIGEST 15 item 26)."""
        root = xmlparse.parse(parsed.envelope, what="response envelope")
        if root.find(f"{{{wss.SOAP12_NS}}}Header/{{{WSSE_NS}}}Security") is None:
            env = ebms.parse_envelope(root)
            msg = ebms.classify(env)
            if isinstance(msg, ebms.SoapFault | ebms.ErrorSignal):
                raise msg.exception(authenticated=False)
            raise wss.SecurityHeaderError("the response is not signed",
                                          subject="wsse:Security")
        result = self._verify_broker(root)
        env = ebms.parse_envelope(root)
        msg = ebms.classify(env)
        if isinstance(msg, ebms.SoapFault) or (
                isinstance(msg, ebms.ErrorSignal) and not msg.is_empty_queue):
            raise msg.exception(authenticated=True)
        return env, msg, result

    def _transport_receipt(self, parsed: mime.ParsedMessage, message_id: str,
                           signed: wss.WssSigned,
                           signed_digests: dict[str, set[bytes]]) -> TransportReceipt:
        _, msg, result = self._open(parsed)
        if not isinstance(msg, ebms.ReceiptSignal):
            raise ProtocolError(f"expected a transport receipt, got {type(msg).__name__}",
                                subject=message_id)
        if msg.ref_to_message_id != message_id:
            raise TransportReceiptError(
                f"receipt refers to {msg.ref_to_message_id}, not to our message {message_id}",
                subject="eb:RefToMessageId")
        ours = signed.digests
        if not msg.references:
            raise TransportReceiptError("no NonRepudiationInformation",
                                        subject="eb:Receipt")
        for ref in msg.references:
            if ref.digest_value not in signed_digests.get(ref.uri, ()):
                raise TransportReceiptError(
                    "acknowledges a part or digest we did not sign", subject=ref.uri)
        acknowledged = {r.uri for r in msg.references}
        required = {u for u in ours if u.startswith("cid:")} | {signed.references[0].uri or ""}
        if not required <= acknowledged:
            raise TransportReceiptError(
                f"does not acknowledge {', '.join(sorted(required - acknowledged))}",
                subject="eb:Receipt")
        return TransportReceipt(msg.message_id, message_id, msg.timestamp, msg.references,
                                parsed.envelope, result.orgnr)

    # --- receipts -----------------------------------------------------------------------

    def pull(self, *, priority: bool = False, mpc_id: str | None = None,
             confirm: Kvittering | None = None) -> Kvittering | None:
        """Pull the next receipt from the queue; None when it is empty (EBMS:0006).

        With `confirm`, the previous receipt is acknowledged in the same message (DIGEST 8.4).
        A receipt is returned only after the broker's and the provider's signatures were
        verified; store it, then `confirm` it. One that fails verification raises and is
        never confirmed, so the broker offers it again.
        """
        mpc = ebms.mpc(priority, mpc_id)

        def attempt(n: int) -> Kvittering | None:
            now = dt.datetime.now(dt.UTC)
            pull = ebms.pull_request(message_id=ebms.new_message_id(), timestamp=now, mpc=mpc)
            pull_id = pull.signal_message[0].message_info.message_id
            messaging = (ebms.combine_signals(self._receipt_signal(confirm, now), pull)
                         if confirm else pull)
            envelope = ebms.build_envelope(messaging, None)
            wss.sign(envelope, self.signer, now=now)
            parsed = self._post(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
                                mime.SOAP_CONTENT_TYPE, n)
            return self._pulled(parsed, pull_id, mpc)

        return with_retries(attempt, self.retry, sleep=self._sleep)

    def _pulled(self, parsed: mime.ParsedMessage, pull_id: str, mpc: str) -> Kvittering | None:
        _, msg, result = self._open(parsed)
        if isinstance(msg, ebms.ErrorSignal):  # only EBMS:0006 gets here
            return None
        if not isinstance(msg, ebms.PulledUserMessage) or msg.sbd is None:
            raise ProtocolError(f"expected a pulled receipt, got {type(msg).__name__}")
        if msg.ref_to_message_id not in (None, pull_id):
            raise ProtocolError(f"answers {msg.ref_to_message_id}, not our pull {pull_id}",
                                subject="eb:RefToMessageId")
        sbd = verify_sbd(msg.sbd, trust=self.environment.trust_anchors,
                         intermediates=self.environment.intermediates)
        body_ref = result.reference_for("body").reference
        refs = (ebms.NonRepudiationReference.from_element(body_ref.element),)  # type: ignore[arg-type]
        receipt = from_verified(sbd, message_id=msg.message_id,
                                ref_to_message_id=msg.ref_to_message_id, mpc=msg.mpc or mpc,
                                envelope_xml=parsed.envelope, signed_references=refs)
        log.info("pulled %s conversation=%s message_id=%s", receipt.kind.value,
                 receipt.conversation_id, receipt.message_id)
        return receipt

    def _receipt_signal(self, receipt: Kvittering, now: dt.datetime) -> Messaging:
        return ebms.receipt_signal(message_id=ebms.new_message_id(), timestamp=now,
                                   ref_to_message_id=receipt.message_id,
                                   references=receipt.signed_references)

    def confirm(self, receipt: Kvittering) -> None:
        """Acknowledge a stored receipt with a signed eb:Receipt (DIGEST 8.1).

        The broker's answer is not documented (DIGEST 8.3): an empty body or any non-fault
        envelope counts as success; a fault raises.
        """
        def attempt(n: int) -> None:
            now = dt.datetime.now(dt.UTC)
            envelope = ebms.build_envelope(self._receipt_signal(receipt, now), None)
            wss.sign(envelope, self.signer, now=now)
            response = self._http(
                etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
                mime.SOAP_CONTENT_TYPE, n)
            if response.body:
                env = ebms.parse_envelope(response.parse().envelope)
                if env.fault is not None:
                    msg = ebms.classify(env)
                    assert isinstance(msg, ebms.SoapFault)
                    raise msg.exception(authenticated=self._is_authentic(env.root))

        with_retries(attempt, self.retry, sleep=self._sleep)
        log.info("confirmed %s message_id=%s", receipt.kind.value, receipt.message_id)


__all__ = ["Prepared", "SdpClient", "SendResult", "TransportError", "TransportReceipt",
           "TransportReceiptError"]
