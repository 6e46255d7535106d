"""The broker's side of the exchange, as reusable primitives.

The local meldingsformidler simulator and the loopback tests are made of these; they use the
same verification code as the client, from the other side (DIGEST 14): verify an incoming
UserMessage completely before anything is accepted, answer with a signed transport receipt,
hand out pulled receipts in signed UserMessages, and say EBMS:0006 when a queue is empty.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from lxml import etree

from sdp import ebms, mime
from sdp import wssecurity as wss
from sdp.errors import DigestMismatchError, ProtocolError
from sdp.keys import SigningIdentity
from sdp.message import SignerIdentityError, VerifiedSbd, verify_sbd
from sdp.schemas import validate
from sdp_bindings import sdp as s

__all__ = [
    "IncomingPull",
    "IncomingUserMessage",
    "empty_queue_response",
    "error_response",
    "pulled_message_response",
    "transport_receipt_response",
    "verify_pull",
    "verify_user_message",
]


@dataclass(frozen=True)
class IncomingUserMessage:
    """A consignment the broker has fully verified and may accept."""

    message: ebms.PulledUserMessage
    envelope: etree._Element
    wss: wss.WssResult
    sbd: VerifiedSbd
    #: The document package bytes (CMS) and their SHA-256, equal to the signed fingerprint.
    package: bytes
    fingerprint: bytes

    @property
    def message_id(self) -> str:
        return self.message.message_id


def verify_user_message(
    request: mime.ParsedMessage,
    *,
    trust: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    clock_skew: dt.timedelta = wss.DEFAULT_CLOCK_SKEW,
) -> IncomingUserMessage:
    """Everything DIGEST 14 lists, in order; the first failure raises its typed error.

    Schema validity of the envelope (with the SBD inside), the WS-Security signature by the
    eb:From party's certificate chaining to `trust`, the SBD signature by the SBDH Sender,
    the SBDH Sender equal to eb:From, exactly the referenced attachment, and the business
    message's fingerprint equal to the SHA-256 of that attachment.
    """
    env = ebms.parse_envelope(request.envelope, validate=True)
    msg = ebms.classify(env)
    if not isinstance(msg, ebms.PulledUserMessage) or msg.sbd is None:
        raise ProtocolError("expected a UserMessage carrying an SBD", subject="eb:Messaging")
    request.check_attachments(p.href or "" for p in msg.attachments)
    if len(msg.attachments) != 1:
        raise ProtocolError("a consignment carries exactly one document package",
                            subject="eb:PayloadInfo")
    cid = mime.bare_content_id(msg.attachments[0].href or "")
    package = request.attachment(cid).data
    from_orgnr = msg.from_party.orgnr
    result = wss.verify(env.root, attachments={cid: package}, trust=trust, at=at,
                        clock_skew=clock_skew, expected_orgnr=from_orgnr,
                        intermediates=intermediates)
    sbd = verify_sbd(msg.sbd, trust=trust, at=at, intermediates=intermediates)
    if sbd.sender_orgnr != from_orgnr:
        raise SignerIdentityError(
            f"SBDH Sender {sbd.sender_orgnr} is not the eb:From party {from_orgnr}",
            subject="SBDH Sender")
    post = sbd.message
    if not isinstance(post, s.DigitalPost):
        raise ProtocolError("the SBD must carry sdp:digitalPost", subject=sbd.document_type)
    fingerprint = hashlib.sha256(package).digest()
    if post.dokumentpakkefingeravtrykk.digest_value.value != fingerprint:
        raise DigestMismatchError("dokumentpakkefingeravtrykk is not the SHA-256 of the "
                                  "attached package", subject=cid)
    return IncomingUserMessage(msg, env.root, result, sbd, package, fingerprint)


@dataclass(frozen=True)
class IncomingPull:
    """A verified PullRequest, possibly with a Receipt for the previous pulled message."""

    pull: ebms.PullRequestSignal | None
    receipts: tuple[ebms.ReceiptSignal, ...]
    wss: wss.WssResult
    sender_orgnr: str


def verify_pull(request: mime.ParsedMessage, *, trust: Sequence[x509.Certificate],
                intermediates: Sequence[x509.Certificate] = (), at: dt.datetime | None = None,
                clock_skew: dt.timedelta = wss.DEFAULT_CLOCK_SKEW) -> IncomingPull:
    """A signed PullRequest and/or Receipt (DIGEST 8.1, 8.4) from a sender with a valid chain."""
    env = ebms.parse_envelope(request.envelope, validate=True)
    result = wss.verify(env.root, trust=trust, at=at, clock_skew=clock_skew,
                        intermediates=intermediates)
    if result.orgnr is None:
        raise SignerIdentityError("the signer certificate carries no orgnr",
                                  subject="BinarySecurityToken")
    pulls = [m for m in ebms.messages(env) if isinstance(m, ebms.PullRequestSignal)]
    receipts = tuple(m for m in ebms.messages(env) if isinstance(m, ebms.ReceiptSignal))
    if len(pulls) > 1 or (not pulls and not receipts):
        raise ProtocolError("expected one PullRequest and/or Receipts", subject="eb:Messaging")
    return IncomingPull(pulls[0] if pulls else None, receipts, result, result.orgnr)


def _signed(messaging: object, body: bytes | None, broker: SigningIdentity,
            now: dt.datetime | None) -> bytes:
    envelope = ebms.build_envelope(messaging, body)  # type: ignore[arg-type]
    wss.sign(envelope, broker, now=now)
    data = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return data


def transport_receipt_response(incoming: IncomingUserMessage, broker: SigningIdentity, *,
                               now: dt.datetime | None = None,
                               message_id: str | None = None) -> bytes:
    """The signed eb:Receipt for an accepted UserMessage: RefToMessageId and copies of the
    sender's signed references to the attachment and the Body (DIGEST 7.5, example 1)."""
    wanted = [r for r in incoming.wss.references if r.target in ("attachment", "body")]
    refs = [ebms.NonRepudiationReference.from_element(r.reference.element)  # type: ignore[arg-type]
            for r in wanted]
    messaging = ebms.receipt_signal(message_id=message_id or ebms.new_message_id(),
                                    timestamp=now or dt.datetime.now(dt.UTC),
                                    ref_to_message_id=incoming.message_id, references=refs)
    return _signed(messaging, None, broker, now)


def pulled_message_response(sbd_xml: bytes, *, pull_message_id: str, mpc: str,
                            broker: SigningIdentity, broker_orgnr: str, sender_orgnr: str,
                            message_id: str | None = None,
                            now: dt.datetime | None = None) -> bytes:
    """A queued receipt handed out for a PullRequest (DIGEST 8.3, example 5_response).

    The SBD keeps its own signature by the mailbox or print provider; the broker signs the
    envelope. The ebMS ConversationId is the receipt SBD's InstanceIdentifier (DIGEST 6.4).
    """
    root = etree.fromstring(sbd_xml)
    instance = root.findtext(
        "{*}StandardBusinessDocumentHeader/{*}DocumentIdentification/{*}InstanceIdentifier")
    if not instance:
        raise ProtocolError("the receipt SBD lacks an InstanceIdentifier")
    messaging = ebms.user_message(
        message_id=message_id or ebms.new_message_id(), timestamp=now or dt.datetime.now(dt.UTC),
        from_orgnr=broker_orgnr, to_orgnr=sender_orgnr,
        action=ebms.ACTION_KVITTERINGSFORESPOERSEL, conversation_id=instance, mpc=mpc,
        ref_to_message_id=pull_message_id, from_role=ebms.ROLE_MELDINGSFORMIDLER,
        to_role=ebms.ROLE_AVSENDER)
    return _signed(messaging, sbd_xml, broker, now)


def empty_queue_response(pull_message_id: str, broker: SigningIdentity, *,
                         now: dt.datetime | None = None) -> bytes:
    """EBMS:0006 as a signed SignalMessage, not a fault (DIGEST 8.3, example 6_response)."""
    return error_response(ebms.EMPTY_MPC, pull_message_id, broker, now=now)


def error_response(code: str, ref_to_message_id: str | None, broker: SigningIdentity, *,
                   description: str | None = None, now: dt.datetime | None = None) -> bytes:
    """A signed ebMS error signal (DIGEST 9.4); severity and category from the code table."""
    messaging = ebms.error_signal(message_id=ebms.new_message_id(),
                                  timestamp=now or dt.datetime.now(dt.UTC),
                                  ref_to_message_id=ref_to_message_id, code=code,
                                  description=description)
    return _signed(messaging, None, broker, now)


def validate_response(data: bytes) -> None:
    """Responses we build are schema-valid; used by tests and the simulator's self-checks."""
    validate(data, what="response envelope")
