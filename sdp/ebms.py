"""The ebMS 3.0 message layer as SDP profiles it (DIGEST 7, 8, 9.4), without signing.

Builders return typed `sdp_bindings.ebms.Messaging` objects; `build_envelope` puts one into a
SOAP 1.2 envelope next to the Standard Business Document, which is embedded without touching
its bytes' meaning, because the SBD carries its own enveloped signature (DIGEST 6.5). The
WS-Security layer later adds `wsse:Security` and signs the Body and eb:Messaging through the
`wsu:Id`s set here (`envelope_ids`).

Parsing goes the other way: `parse_envelope` checks the SOAP shape and binds eb:Messaging,
`classify`/`messages` turn it into typed results (receipt, error, pulled user message, ...).
Nothing here decides whether a message is authentic; that is the WS-Security layer's job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from lxml import etree
from xsdata.models.datatype import XmlDateTime

from sdp import identifiers, xmlparse
from sdp.bindings import from_xml, to_xml
from sdp.errors import (
    EbmsError,
    EmptyQueueError,
    InputError,
    ProtocolError,
    SchemaValidationError,
)
from sdp.schemas import NS_EBMS, NS_SOAP12, NS_WSSE, NS_WSU
from sdp.schemas import validate as schema_validate
from sdp_bindings import ebbp, ebms, exc_c14n, soap12, xmldsig

_T = TypeVar("_T")

__all__ = [
    "ACTION_FORMIDLE_DIGITAL_POST",
    "ACTION_FORMIDLE_FYSISK_POST",
    "ACTION_KVITTERINGSFORESPOERSEL",
    "AGREEMENT_FORMIDLE_DIGITAL_POST",
    "AGREEMENT_FORMIDLE_FYSISK_POST",
    "AGREEMENT_FOR_ACTION",
    "AGREEMENT_KVITTERINGSFORESPOERSEL",
    "CONTENT_DOKUMENTPAKKE",
    "EBMS_ERRORS",
    "EMPTY_MPC",
    "MIME_TYPE_CMS",
    "MPC_NORMAL",
    "MPC_PRIORITERT",
    "PARTY_ID_TYPE",
    "ROLE_AVSENDER",
    "ROLE_MELDINGSFORMIDLER",
    "ROLE_POSTKASSELEVERANDOER",
    "SERVICE",
    "SERVICE_PMODE",
    "EbmsErrorCode",
    "EbmsErrorInfo",
    "EbmsMessage",
    "EnvelopeIds",
    "ErrorSignal",
    "Mpc",
    "NonRepudiationReference",
    "ParsedEnvelope",
    "Party",
    "PayloadPart",
    "PullRequestSignal",
    "PulledUserMessage",
    "ReceiptSignal",
    "ReferenceTransform",
    "SoapFault",
    "build_envelope",
    "classify",
    "combine_signals",
    "envelope_ids",
    "error_signal",
    "messages",
    "mpc",
    "new_message_id",
    "new_wsu_id",
    "orgnr_from_party_id",
    "parse_envelope",
    "parse_mpc",
    "party_id",
    "pull_request",
    "raise_for_error",
    "receipt_signal",
    "soap_fault",
    "user_message",
]

# --- constants (DIGEST 0.3, 7.2, 7.4) --------------------------------------------------------

#: eb:Service. Every example and `CollaborationInfo.md` send `SDP`; the P-Mode table says
#: `urn:sdp:service:sdp` (DIGEST 0.3, 7.4, 15 #3). We send what the examples and the broker's
#: own messages carry, and accept both on input.
SERVICE: Final = "SDP"
#: The P-Mode table's spelling of the service (DIGEST 7.2, 15 #3); accepted, never sent.
SERVICE_PMODE: Final = "urn:sdp:service:sdp"

#: eb:Action values (DIGEST 0.3, 7.2).
ACTION_FORMIDLE_DIGITAL_POST: Final = "FormidleDigitalPost"
ACTION_FORMIDLE_FYSISK_POST: Final = "FormidleFysiskPost"
#: The Action of a pulled receipt (DIGEST 0.3, 7.10 example 5_response).
ACTION_KVITTERINGSFORESPOERSEL: Final = "KvitteringsForespoersel"

#: eb:AgreementRef = PMode.Agreement (DIGEST 7.2). The `begrep.difi.local` form of
#: `CollaborationInfo.md` is a documentation slip (DIGEST 15 #4).
_AGREEMENT_BASE: Final = (
    "http://begrep.difi.no/SikkerDigitalPost/1.0/transportlag/Meldingsutveksling/"
)
AGREEMENT_FORMIDLE_DIGITAL_POST: Final = _AGREEMENT_BASE + "FormidleDigitalPostForsendelse"
AGREEMENT_FORMIDLE_FYSISK_POST: Final = _AGREEMENT_BASE + "FormidleFysiskPostForsendelse"
#: P-Mode agreement for pulling; the broker's pulled receipt nevertheless carries
#: FormidleDigitalPostForsendelse (DIGEST 0.3, 15 #4).
AGREEMENT_KVITTERINGSFORESPOERSEL: Final = _AGREEMENT_BASE + "KvitteringsForespoersel"
#: The agreement that goes with each action we send (DIGEST 7.2).
AGREEMENT_FOR_ACTION: Final[dict[str, str]] = {
    ACTION_FORMIDLE_DIGITAL_POST: AGREEMENT_FORMIDLE_DIGITAL_POST,
    ACTION_FORMIDLE_FYSISK_POST: AGREEMENT_FORMIDLE_FYSISK_POST,
    ACTION_KVITTERINGSFORESPOERSEL: AGREEMENT_FORMIDLE_DIGITAL_POST,
}

#: eb:From/eb:To roles (DIGEST 0.3, 7.4).
ROLE_AVSENDER: Final = "urn:sdp:avsender"
ROLE_MELDINGSFORMIDLER: Final = "urn:sdp:meldingsformidler"
#: The mailbox role as the examples spell it, non-ASCII (DIGEST 7.10 example 3, 15 #7).
ROLE_POSTKASSELEVERANDOER: Final = "urn:sdp:postkasseleverandør"

#: eb:PartyId/@type for Norwegian organisation numbers (DIGEST 0.3, 7.4).
PARTY_ID_TYPE: Final = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:9908"

#: The attachment PartInfo's PartProperties (DIGEST 7.4, `UserMessage/PayloadInfo.md`).
MIME_TYPE_CMS: Final = "application/cms"
CONTENT_DOKUMENTPAKKE: Final = "sdp:Dokumentpakke"
_PROP_MIME_TYPE: Final = "MimeType"
_PROP_CONTENT: Final = "Content"

#: MPC roots for the two priorities (DIGEST 7.6, 11.2). `urn:prioritert` is only in the
#: reference code (DIGEST 15 #2).
MPC_NORMAL: Final = "urn:normal"
MPC_PRIORITERT: Final = "urn:prioritert"

#: ebMS error code for "nothing to pull": a signed warning signal, not a fault (DIGEST 8.3, 9.4).
EMPTY_MPC: Final = "EBMS:0006"

_WSU_ID: Final = f"{{{NS_WSU}}}Id"
_MUST_UNDERSTAND: Final = f"{{{NS_SOAP12}}}mustUnderstand"
_ENVELOPE: Final = f"{{{NS_SOAP12}}}Envelope"
_HEADER: Final = f"{{{NS_SOAP12}}}Header"
_BODY: Final = f"{{{NS_SOAP12}}}Body"
_FAULT: Final = f"{{{NS_SOAP12}}}Fault"
_MESSAGING: Final = f"{{{NS_EBMS}}}Messaging"
_SOAP11_ENVELOPE: Final = "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
_WSSE_SECURITY: Final = f"{{{NS_WSSE}}}Security"
#: Header blocks we process; any other block with mustUnderstand="true" is refused (SOAP 1.2).
_UNDERSTOOD_HEADERS: Final = frozenset({_MESSAGING, _WSSE_SECURITY})


# --- ebMS error codes (DIGEST 9.4) ----------------------------------------------------------


@dataclass(frozen=True)
class EbmsErrorCode:
    """One row of the ebMS 3.0 Core error table (§6.7), as DIGEST 9.4 reproduces it [EXT]."""

    code: str
    short_description: str
    category: str
    severity: str = "failure"


#: ebMS 3.0 Core §6.7 and AS4 additions (DIGEST 9.4 [EXT]); the defaults `error_signal` uses.
EBMS_ERRORS: Final[dict[str, EbmsErrorCode]] = {
    e.code: e
    for e in (
        EbmsErrorCode("EBMS:0001", "ValueNotRecognized", "Content"),
        EbmsErrorCode("EBMS:0002", "FeatureNotSupported", "Content"),
        EbmsErrorCode("EBMS:0003", "ValueInconsistent", "Content"),
        EbmsErrorCode("EBMS:0004", "Other", "Content"),
        EbmsErrorCode("EBMS:0005", "ConnectionFailure", "Communication"),
        # Empty MPC is a warning, exactly as example 6_response sends it (DIGEST 9.4).
        EbmsErrorCode(EMPTY_MPC, "EmptyMessagePartitionChannel", "Communication", "warning"),
        EbmsErrorCode("EBMS:0007", "MimeInconsistency", "Unpackaging"),
        EbmsErrorCode("EBMS:0008", "FeatureNotSupported", "Unpackaging"),
        EbmsErrorCode("EBMS:0009", "InvalidHeader", "Unpackaging"),
        EbmsErrorCode("EBMS:0010", "ProcessingModeMismatch", "Processing"),
        EbmsErrorCode("EBMS:0011", "ExternalPayloadError", "Content"),
        EbmsErrorCode("EBMS:0101", "FailedAuthentication", "Processing"),
        EbmsErrorCode("EBMS:0102", "FailedDecryption", "Processing"),
        EbmsErrorCode("EBMS:0103", "PolicyNoncompliance", "Processing"),
        EbmsErrorCode("EBMS:0201", "DysfunctionalReliability", "Processing"),
        EbmsErrorCode("EBMS:0202", "DeliveryFailure", "Communication"),
        EbmsErrorCode("EBMS:0301", "MissingReceipt", "Communication"),
        EbmsErrorCode("EBMS:0302", "InvalidReceipt", "Communication"),
        EbmsErrorCode("EBMS:0303", "DecompressionFailure", "Communication"),
    )
}


# --- identifiers ----------------------------------------------------------------------------


def new_message_id() -> str:
    """A fresh eb:MessageId: a bare UUID, as every example uses (DIGEST 7.4, 7.7).

    A retry of the same message must reuse it, because the broker de-duplicates on it
    (DIGEST 9.5); a new send decided by the business system gets a new one.
    """
    return str(uuid.uuid4())


def new_wsu_id() -> str:
    """A fresh `wsu:Id` in the examples' `id-<uuid>` form (DIGEST 7.3, 7.8)."""
    return f"id-{uuid.uuid4()}"


_PARTY_ID_RE: Final = re.compile(r"(9908|0192):([0-9]{9})")


def party_id(orgnr: str) -> str:
    """`9908:<orgnr>` for eb:PartyId (DIGEST 0.3, 7.4); the orgnr must pass mod-11."""
    return identifiers.party_id(orgnr)


def orgnr_from_party_id(value: str) -> str:
    """The 9-digit orgnr in a received PartyId `9908:<orgnr>` or `0192:<orgnr>`.

    9908 is what SDP writes (DIGEST 7.4); 0192 is the ISO 6523 ICD the newer infrastructure
    uses (DIGEST 16). Only the shape is checked: the spec's own examples use orgnrs that fail
    mod-11 (`123456789`, DIGEST 12.2), and a peer's identity is the certificate's business.
    """
    match = _PARTY_ID_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ProtocolError(
            f"{value!r} is not 9908:<9 digits> or 0192:<9 digits>", subject="eb:PartyId"
        )
    return match.group(2)


# --- MPC (DIGEST 7.6) -----------------------------------------------------------------------

#: An mpcId is appended to a URN and travels in an xs:anyURI attribute, so we allow only RFC 3986
#: unreserved characters: they need no escaping anywhere and cannot introduce another `:`
#: segment. The spec fixes no format or length (DIGEST 15 #2); 100 keeps queue names sane while
#: fitting a UUID with room to spare.
_MPC_ID_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,100}")


@dataclass(frozen=True)
class Mpc:
    """A parsed MPC: the priority and the optional sender-chosen queue id (DIGEST 7.6)."""

    priority: bool
    mpc_id: str | None

    def __str__(self) -> str:
        return mpc(self.priority, self.mpc_id)


def mpc(priority: bool, mpc_id: str | None = None) -> str:
    """`urn:normal` / `urn:prioritert`, with `:<mpc_id>` appended when given (DIGEST 7.6).

    Priority is chosen only through the MPC (DIGEST 11.2). Receipts are pulled from the same
    MPC the messages were sent on.
    """
    base = MPC_PRIORITERT if priority else MPC_NORMAL
    if mpc_id is None:
        return base
    if not isinstance(mpc_id, str) or not _MPC_ID_RE.fullmatch(mpc_id):
        raise InputError(
            "must be 1-100 characters from A-Z a-z 0-9 . _ ~ - (it becomes part of a URN)",
            subject="mpc_id",
        )
    return f"{base}:{mpc_id}"


def parse_mpc(value: str) -> Mpc:
    """Read an MPC value; raise `ProtocolError` for anything but the SDP forms (DIGEST 7.6).

    `normal:` as in `PullRequest.md` is a documentation error (DIGEST 15 #2) and is refused.
    """
    for base, priority in ((MPC_NORMAL, False), (MPC_PRIORITERT, True)):
        if not isinstance(value, str):
            break
        if value == base:
            return Mpc(priority, None)
        if value.startswith(base + ":"):
            suffix = value[len(base) + 1 :]
            if _MPC_ID_RE.fullmatch(suffix):
                return Mpc(priority, suffix)
    raise ProtocolError(
        f"{value!r} is not urn:normal or urn:prioritert with an optional :<mpcId>",
        subject="mpc",
    )


def _bind(element: etree._Element, clazz: type[_T], what: str) -> _T:
    # from_xml leaves a given element as it was (the envelope's signature may still be
    # verified after binding), copying it itself only when it must hand it to xsdata.
    return from_xml(element, clazz, what=what)


# --- builders -------------------------------------------------------------------------------


def _check_mpc(value: str) -> str:
    # parse_mpc is for what arrives (ProtocolError); a caller's bad value is an InputError.
    try:
        parse_mpc(value)
    except ProtocolError:
        raise InputError(
            f"{value!r} is not urn:normal or urn:prioritert with an optional :<mpcId>; "
            "build it with mpc()",
            subject="mpc",
        ) from None
    return value


def _timestamp(value: dt.datetime) -> XmlDateTime:
    # xs:dateTime with an offset, as in every example (DIGEST 7.4): a naive time is ambiguous
    # to the other side.
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise InputError("must be a timezone-aware datetime", subject="timestamp")
    return XmlDateTime.from_datetime(value)


#: Any character str.isspace() calls whitespace (Unicode separators included).
_WHITESPACE = re.compile(r"\s")


def _token(value: str | None, field: str) -> str:
    # MessageId & co. are non-empty strings (ebMS XSD); whitespace would not survive a
    # round trip through every peer, so we refuse it.
    if not isinstance(value, str) or not value or _WHITESPACE.search(value):
        raise InputError("must be a non-empty string without whitespace", subject=field)
    return value


def _message_info(
    message_id: str, timestamp: dt.datetime, ref_to_message_id: str | None
) -> ebms.MessageInfo:
    return ebms.MessageInfo(
        timestamp=_timestamp(timestamp),
        message_id=_token(message_id, "message_id"),
        ref_to_message_id=(
            None if ref_to_message_id is None else _token(ref_to_message_id, "ref_to_message_id")
        ),
    )


def user_message(
    *,
    message_id: str,
    timestamp: dt.datetime,
    from_orgnr: str,
    to_orgnr: str,
    action: str,
    conversation_id: str,
    mpc: str,
    agreement_ref: str | None = None,
    attachment_cid: str | None = None,
    body_href: str | None = None,
    ref_to_message_id: str | None = None,
    from_role: str = ROLE_AVSENDER,
    to_role: str = ROLE_MELDINGSFORMIDLER,
    service: str = SERVICE,
) -> ebms.Messaging:
    """An eb:Messaging with one UserMessage carrying the SBD in the Body (DIGEST 7.4).

    Defaults are the sender's view (From avsender, To meldingsformidler, Service `SDP`, the
    agreement that goes with `action`); the simulator overrides roles and sets
    `ref_to_message_id` for a pulled receipt (DIGEST 7.10 5_response). `body_href=None` gives
    the examples' empty `<eb:PartInfo/>`, which means the SOAP Body (DIGEST 7.4, 15 #6).
    `attachment_cid` is the document package's Content-ID, with or without `cid:`/brackets.
    """
    _check_mpc(mpc)
    if agreement_ref is None:
        agreement_ref = AGREEMENT_FOR_ACTION.get(action)
    parts = [ebms.PartInfo(href=body_href)]
    if attachment_cid is not None:
        parts.append(
            ebms.PartInfo(
                href=_cid_href(attachment_cid),
                part_properties=ebms.PartProperties(
                    property=[
                        ebms.Property(name=_PROP_MIME_TYPE, value=MIME_TYPE_CMS),
                        ebms.Property(name=_PROP_CONTENT, value=CONTENT_DOKUMENTPAKKE),
                    ]
                ),
            )
        )
    um = ebms.UserMessage(
        mpc=mpc,
        message_info=_message_info(message_id, timestamp, ref_to_message_id),
        party_info=ebms.PartyInfo(
            from_value=ebms.From(
                party_id=[ebms.PartyId(value=party_id(from_orgnr), type_value=PARTY_ID_TYPE)],
                role=from_role,
            ),
            to=ebms.To(
                party_id=[ebms.PartyId(value=party_id(to_orgnr), type_value=PARTY_ID_TYPE)],
                role=to_role,
            ),
        ),
        collaboration_info=ebms.CollaborationInfo(
            agreement_ref=None if agreement_ref is None else ebms.AgreementRef(value=agreement_ref),
            service=ebms.Service(value=_token(service, "service")),
            action=_token(action, "action"),
            conversation_id=_token(conversation_id, "conversation_id"),
        ),
        payload_info=ebms.PayloadInfo(part_info=parts),
    )
    return ebms.Messaging(user_message=[um])


_NOT_IN_CID = re.compile(r"[\s<>]")


def _cid_href(cid: str) -> str:
    # Written `cid:<uuid>@meldingsformidler.sdp.difi.no`, no angle brackets (DIGEST 7.9).
    value = cid.strip()
    if value.startswith("cid:"):
        value = value[4:]
    value = value.removeprefix("<").removesuffix(">")
    if not value or _NOT_IN_CID.search(value):
        raise InputError(f"{cid!r} is not a Content-ID", subject="attachment_cid")
    return "cid:" + value


def pull_request(*, message_id: str, timestamp: dt.datetime, mpc: str) -> ebms.Messaging:
    """A PullRequest signal for the next receipt on `mpc`; no RefToMessageId (DIGEST 7.5, 8.1)."""
    _check_mpc(mpc)
    return ebms.Messaging(
        signal_message=[
            ebms.SignalMessage(
                message_info=_message_info(message_id, timestamp, None),
                pull_request=ebms.PullRequest(mpc=mpc),
            )
        ]
    )


@dataclass(frozen=True)
class ReferenceTransform:
    """One ds:Transform of a copied reference; `inclusive_prefixes` is ec:InclusiveNamespaces.

    `None` means no InclusiveNamespaces element. An empty tuple is how the broker's
    `PrefixList=""` reads (DIGEST 7.8, 15 #32); we never write that form back.
    """

    algorithm: str
    inclusive_prefixes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NonRepudiationReference:
    """A copy of one ds:Reference of the acknowledged message's signature (DIGEST 7.5, 8.1)."""

    uri: str
    digest_method: str
    digest_value: bytes
    transforms: tuple[ReferenceTransform, ...] = ()

    @classmethod
    def from_binding(cls, ref: xmldsig.ReferenceType) -> NonRepudiationReference:
        """From a bound ds:Reference (e.g. the one over the Body in the broker's signature)."""
        transforms: list[ReferenceTransform] = []
        for t in ref.transforms.transform if ref.transforms else []:
            prefixes: tuple[str, ...] | None = None
            for item in t.content:
                if isinstance(item, exc_c14n.InclusiveNamespaces):
                    prefixes = tuple(item.prefix_list)
            transforms.append(ReferenceTransform(t.algorithm, prefixes))
        if ref.uri is None:
            raise ProtocolError("a ds:Reference without URI cannot be acknowledged",
                                subject="ds:Reference")
        return cls(ref.uri, ref.digest_method.algorithm, ref.digest_value.value,
                   tuple(transforms))

    @classmethod
    def from_element(cls, element: etree._Element) -> NonRepudiationReference:
        """From a ds:Reference element in a parsed signature (bound first, so it is checked)."""
        return cls.from_binding(_bind(element, xmldsig.Reference, "ds:Reference"))

    def to_binding(self) -> xmldsig.Reference:
        transforms = [
            xmldsig.Transform(
                algorithm=t.algorithm,
                content=(
                    [exc_c14n.InclusiveNamespaces(prefix_list=list(t.inclusive_prefixes))]
                    if t.inclusive_prefixes  # empty list omitted: PrefixList="" is invalid XSD
                    else []
                ),
            )
            for t in self.transforms
        ]
        return xmldsig.Reference(
            uri=self.uri,
            transforms=xmldsig.Transforms(transform=transforms) if transforms else None,
            digest_method=xmldsig.DigestMethod(algorithm=self.digest_method),
            digest_value=xmldsig.DigestValue(value=self.digest_value),
        )


def receipt_signal(
    *,
    message_id: str,
    timestamp: dt.datetime,
    ref_to_message_id: str,
    references: Sequence[NonRepudiationReference],
) -> ebms.Messaging:
    """An eb:Receipt acknowledging `ref_to_message_id` (DIGEST 7.5, 8.1).

    One ebbp:MessagePartNRInformation per acknowledged part, each wrapping a copy of the
    ds:Reference from the acknowledged message's signature: the broker's transport receipt
    lists the attachment and the Body; the sender's receipt for a pulled message lists the
    Body only (DIGEST 7.5).
    """
    if not references:
        raise InputError("at least one reference is required", subject="references")
    nri = ebbp.NonRepudiationInformation(
        message_part_nrinformation=[
            ebbp.MessagePartNrinformation(reference=r.to_binding()) for r in references
        ]
    )
    return ebms.Messaging(
        signal_message=[
            ebms.SignalMessage(
                message_info=_message_info(message_id, timestamp, ref_to_message_id),
                receipt=ebms.Receipt(other_element=[nri]),
            )
        ]
    )


def error_signal(
    *,
    message_id: str,
    timestamp: dt.datetime,
    ref_to_message_id: str | None,
    code: str,
    severity: str | None = None,
    category: str | None = None,
    origin: str = "ebMS",
    short_description: str | None = None,
    description: str | None = None,
    detail: str | None = None,
    lang: str = "en",
) -> ebms.Messaging:
    """An eb:Error signal, for the simulator (DIGEST 9.4, 14).

    Unset fields come from the ebMS code table; `EBMS:0006` gives exactly the shape of
    example 6_response (warning, Communication, EmptyMessagePartitionChannel). The eb:Error's
    `refToMessageInError` is the same as the MessageInfo's RefToMessageId.
    """
    known = EBMS_ERRORS.get(code)
    if known is None and not re.fullmatch(r"EBMS:[0-9]{4}", code):
        raise InputError(f"{code!r} is not an ebMS error code (EBMS:nnnn)", subject="code")
    error = ebms.Error(
        error_code=code,
        severity=severity or (known.severity if known else "failure"),
        category=category or (known.category if known else None),
        origin=origin,
        short_description=short_description or (known.short_description if known else None),
        ref_to_message_in_error=ref_to_message_id,
        # xml:lang is required on eb:Description (DIGEST 7.5); the fault template's bare
        # `lang` is wrong (DIGEST 15 #30).
        description=None if description is None else ebms.Description(value=description,
                                                                        lang=lang),
        error_detail=detail,
    )
    if error.severity not in ("warning", "failure"):
        raise InputError("must be 'warning' or 'failure'", subject="severity")
    return ebms.Messaging(
        signal_message=[
            ebms.SignalMessage(
                message_info=_message_info(message_id, timestamp, ref_to_message_id),
                error=[error],
            )
        ]
    )


def combine_signals(*parts: ebms.Messaging) -> ebms.Messaging:
    """One eb:Messaging holding the SignalMessages of all `parts`, in order (DIGEST 8.2, 8.4).

    The use is a Receipt for the previous pulled message plus the next PullRequest, saving a
    round trip: `combine_signals(receipt_signal(...), pull_request(...))`.
    """
    signals: list[ebms.SignalMessage] = []
    for part in parts:
        if part.user_message:
            raise InputError("only signal messages can be combined", subject="eb:Messaging")
        signals.extend(part.signal_message)
    if len(signals) < 2:
        raise InputError("needs at least two signal messages", subject="eb:Messaging")
    ids = [s.message_info.message_id for s in signals]
    if len(set(ids)) != len(ids):
        raise InputError("each signal needs its own MessageId", subject="eb:Messaging")
    return ebms.Messaging(signal_message=signals)


def soap_fault(code: str, reason: str, *, lang: str = "en") -> etree._Element:
    """An env:Fault for the Body of an error response (DIGEST 9.2, 9.4).

    `code` is `Sender` (the request was wrong) or `Receiver` (internal error, retry later).
    """
    values = {"Sender": soap12.FaultcodeEnum.TNS_SENDER,
              "Receiver": soap12.FaultcodeEnum.TNS_RECEIVER}
    if code not in values:
        raise InputError("must be 'Sender' or 'Receiver'", subject="fault code")
    fault = soap12.Fault(
        code=soap12.Faultcode(value=values[code]),
        reason=soap12.Faultreason(text=[soap12.Reasontext(value=reason, lang=lang)]),
    )
    element = xmlparse.parse(to_xml(fault, xml_declaration=False), what="env:Fault")
    etree.cleanup_namespaces(element)
    return element


# --- envelope assembly ----------------------------------------------------------------------


@dataclass(frozen=True)
class EnvelopeIds:
    """The `wsu:Id`s the WS-Security signature references (DIGEST 7.8)."""

    messaging: str
    body: str


def _messaging_bytes(messaging: ebms.Messaging, messaging_id: str) -> bytes:
    # A header block SDP requires to be understood, and signed through its wsu:Id (DIGEST 7.3).
    marked = dataclasses.replace(
        messaging,
        w3_org_2003_05_soap_envelope_must_understand=True,
        other_attributes={**messaging.other_attributes, _WSU_ID: messaging_id},
    )
    # to_xml declares only the prefixes the header uses, on its root.
    return to_xml(marked, xml_declaration=False)


def _body_bytes(body: bytes | etree._Element | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, etree._Element):
        element = body
    elif isinstance(body, bytes | bytearray):
        element = xmlparse.parse(bytes(body), what="SOAP body content")
    else:
        raise InputError("must be bytes, an lxml element or None", subject="body")
    # lxml writes the element with its own namespace declarations (and any it inherits and
    # uses), its whitespace and attribute order unchanged: C14N-equivalent to the input.
    return etree.tostring(element, encoding="UTF-8", xml_declaration=False)


def build_envelope(
    messaging: ebms.Messaging,
    body: bytes | etree._Element | None,
    *,
    messaging_id: str | None = None,
    body_id: str | None = None,
) -> etree._Element:
    """A SOAP 1.2 envelope with eb:Messaging in the Header and `body` as the Body's only child.

    eb:Messaging gets `env:mustUnderstand="true"` and a `wsu:Id`; env:Body gets a `wsu:Id` and
    declares `wsu` locally, as in the examples (DIGEST 6.5, 7.3, 7.8). Ids default to fresh
    `id-<uuid>`; read them back with `envelope_ids`.

    The body (normally a signed SBD) is spliced in as text and the whole envelope parsed once:
    moving an element between lxml trees would drop namespace declarations its new ancestors
    repeat, and the SBD's enveloped signature must verify after extraction (DIGEST 6.5).
    """
    messaging_id = _token(messaging_id or new_wsu_id(), "messaging_id")
    body_id = _token(body_id or new_wsu_id(), "body_id")
    if messaging_id == body_id:
        raise InputError("eb:Messaging and env:Body need different ids", subject="wsu:Id")
    if not messaging.user_message and not messaging.signal_message:
        raise InputError("holds neither a UserMessage nor a SignalMessage",
                         subject="eb:Messaging")
    header = _messaging_bytes(messaging, messaging_id)
    content = _body_bytes(body)
    text = b"".join((
        b'<env:Envelope xmlns:env="', NS_SOAP12.encode(), b'"><env:Header>', header,
        b'</env:Header><env:Body xmlns:wsu="', NS_WSU.encode(), b'" wsu:Id="',
        body_id.encode(), b'">', content, b"</env:Body></env:Envelope>",
    ))
    return xmlparse.parse(text, what="SOAP envelope")


def envelope_ids(envelope: etree._Element) -> EnvelopeIds:
    """The `wsu:Id`s of eb:Messaging and env:Body, for the signer's References (DIGEST 7.8)."""
    header, body = _header_and_body(envelope)
    messaging = _single_messaging(header)
    m_id, b_id = messaging.get(_WSU_ID), body.get(_WSU_ID)
    if not m_id or not b_id:
        raise ProtocolError("eb:Messaging and env:Body must both carry a wsu:Id",
                            subject="SOAP envelope")
    return EnvelopeIds(m_id, b_id)


# --- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedEnvelope:
    """A SOAP 1.2 envelope whose shape has been checked; eb:Messaging bound when present.

    `messaging` is None only for a SOAP fault without eb:Messaging (DIGEST 9.2).
    """

    root: etree._Element
    header: etree._Element | None
    body: etree._Element
    messaging_element: etree._Element | None
    messaging: ebms.Messaging | None
    fault: etree._Element | None

    @property
    def body_id(self) -> str | None:
        return self.body.get(_WSU_ID)

    @property
    def messaging_id(self) -> str | None:
        return None if self.messaging_element is None else self.messaging_element.get(_WSU_ID)

    @property
    def body_children(self) -> list[etree._Element]:
        return _element_children(self.body)


def _element_children(element: etree._Element) -> list[etree._Element]:
    # Comments and processing instructions are not content.
    return [c for c in element if isinstance(c.tag, str)]


def _header_and_body(root: etree._Element) -> tuple[etree._Element | None, etree._Element]:
    if root.tag == _SOAP11_ENVELOPE:
        raise ProtocolError("SOAP 1.1 envelope; SDP uses SOAP 1.2 (DIGEST 7.1)",
                            subject="SOAP envelope")
    if root.tag != _ENVELOPE:
        raise ProtocolError(f"root is {root.tag}, not a SOAP 1.2 env:Envelope",
                            subject="SOAP envelope")
    children = _element_children(root)
    headers = [c for c in children if c.tag == _HEADER]
    bodies = [c for c in children if c.tag == _BODY]
    others = [c.tag for c in children if c.tag not in (_HEADER, _BODY)]
    if others:
        raise ProtocolError(f"unexpected children {others}", subject="SOAP envelope")
    if len(headers) > 1:
        raise ProtocolError("more than one env:Header", subject="SOAP envelope")
    if len(bodies) != 1:
        raise ProtocolError(f"{len(bodies)} env:Body elements; exactly one is allowed",
                            subject="SOAP envelope")
    if headers and children.index(headers[0]) > children.index(bodies[0]):
        raise ProtocolError("env:Header must come before env:Body", subject="SOAP envelope")
    return (headers[0] if headers else None), bodies[0]


def _single_messaging(header: etree._Element | None) -> etree._Element:
    found = [] if header is None else [c for c in header if c.tag == _MESSAGING]
    if len(found) != 1:
        where = "no env:Header" if header is None else f"{len(found)} eb:Messaging headers"
        raise ProtocolError(f"{where}; exactly one eb:Messaging is required (DIGEST 7.3)",
                            subject="SOAP envelope")
    return found[0]


def _find_fault(body: etree._Element) -> etree._Element | None:
    children = _element_children(body)
    # The fault template has an unqualified <Fault> (DIGEST 15 #30); a fault is an error
    # path either way, so we read that too rather than miss the error.
    faults = [c for c in children if c.tag in (_FAULT, "Fault")]
    if not faults:
        return None
    if len(children) != 1:
        raise ProtocolError("env:Fault must be the only child of env:Body",
                            subject="SOAP envelope")
    return faults[0]


def parse_envelope(xml: bytes | etree._Element, *, validate: bool = False) -> ParsedEnvelope:
    """Parse an incoming SOAP envelope safely and check its SDP shape.

    Exactly one env:Body; at most one env:Header, holding exactly one eb:Messaging (only a
    SOAP fault may come without). Unknown header blocks with mustUnderstand="true" are refused,
    as SOAP 1.2 requires. With `validate`, the whole envelope is checked against the official
    XSDs first (the fault template would fail, DIGEST 15 #30). An element is taken as the
    root `sdp.xmlparse.parse` already returned (whose signature was just verified), so the
    bytes are not parsed twice.
    """
    root = xml if isinstance(xml, etree._Element) else xmlparse.parse(xml, what="SOAP envelope")
    if validate:
        schema_validate(root, what="SOAP envelope")
    header, body = _header_and_body(root)
    fault = _find_fault(body)
    if header is not None:
        for block in _element_children(header):
            if block.tag not in _UNDERSTOOD_HEADERS and block.get(_MUST_UNDERSTAND) in (
                "true", "1"
            ):
                raise ProtocolError(f"header block {block.tag} must be understood and is not",
                                    subject="SOAP envelope")
    messaging_el: etree._Element | None
    if fault is not None and (header is None or all(c.tag != _MESSAGING for c in header)):
        messaging_el = None
    else:
        messaging_el = _single_messaging(header)
    messaging: ebms.Messaging | None = None
    if messaging_el is not None:
        try:
            messaging = _bind(messaging_el, ebms.Messaging, "eb:Messaging")
        except SchemaValidationError:
            if fault is None:
                raise
            # A fault's eb:Error may be as sloppy as the template (bare `lang`, severity
            # "error"); the fault is still an error worth reporting. Read it leniently below.
            messaging = None
    return ParsedEnvelope(root, header, body, messaging_el, messaging, fault)


# --- classification -------------------------------------------------------------------------


def _datetime(value: XmlDateTime) -> dt.datetime:
    try:
        return value.to_datetime()
    except ValueError as exc:  # xs:dateTime allows years Python cannot hold (found by fuzzing)
        raise ProtocolError(f"timestamp out of range: {exc}", subject="eb:Timestamp") from None


@dataclass(frozen=True)
class Party:
    """eb:From or eb:To: the PartyId (`9908:<orgnr>`) and the role (DIGEST 7.4)."""

    party_id: str
    type: str | None
    role: str

    @property
    def orgnr(self) -> str:
        return orgnr_from_party_id(self.party_id)


@dataclass(frozen=True)
class PayloadPart:
    """One eb:PartInfo: `href` None or `#id` is the SOAP Body, `cid:` an attachment."""

    href: str | None
    properties: dict[str, str]

    @property
    def is_attachment(self) -> bool:
        return self.href is not None and self.href.startswith("cid:")

    @property
    def content_id(self) -> str | None:
        """The Content-ID without `cid:`, to match the MIME part's `<...>` header."""
        return self.href[4:] if self.href is not None and self.is_attachment else None


@dataclass(frozen=True)
class PulledUserMessage:
    """A UserMessage: a receipt pulled from the broker, or (simulator) a post pushed to it.

    `sbd` is the Body's only child, the Standard Business Document (DIGEST 6.1), still in its
    envelope tree; `attachments` are the `cid:` parts, the document package (DIGEST 7.4).
    """

    message_id: str
    timestamp: dt.datetime
    ref_to_message_id: str | None
    conversation_id: str
    mpc: str | None
    service: str
    action: str
    agreement_ref: str | None
    from_party: Party
    to_party: Party
    parts: tuple[PayloadPart, ...]
    sbd: etree._Element | None

    @property
    def attachments(self) -> tuple[PayloadPart, ...]:
        return tuple(p for p in self.parts if p.is_attachment)


@dataclass(frozen=True)
class PullRequestSignal:
    """A PullRequest: "send me the next message on this MPC" (DIGEST 7.5, 8.1)."""

    message_id: str
    timestamp: dt.datetime
    mpc: str


@dataclass(frozen=True)
class ReceiptSignal:
    """An eb:Receipt: the transport receipt, or a sender's confirmation (DIGEST 7.5, 8.1).

    `references` are the copies of the acknowledged message's signed ds:References; comparing
    them with what was signed proves what the other side received (non-repudiation).
    """

    message_id: str
    timestamp: dt.datetime
    ref_to_message_id: str | None
    references: tuple[NonRepudiationReference, ...]


@dataclass(frozen=True)
class EbmsErrorInfo:
    """One eb:Error, every attribute kept (DIGEST 7.5, 9.4)."""

    code: str
    severity: str
    category: str | None
    origin: str | None
    short_description: str | None
    description: str | None
    detail: str | None
    ref_to_message_in_error: str | None

    def exception(self, *, ref_to_message_id: str | None = None,
                  authenticated: bool = False, context: str | None = None) -> EbmsError:
        """The exception to raise; `EmptyQueueError` for EBMS:0006 (DIGEST 8.3)."""
        cls = EmptyQueueError if self.code == EMPTY_MPC else EbmsError
        text = " ".join(
            x for x in (self.short_description, self.description, self.detail) if x
        ) or "ebMS error"
        return cls(
            f"{self.severity}: {text}" + (f" ({context})" if context else ""),
            code=self.code,
            category=self.category or "",
            severity=self.severity,
            origin=self.origin or "",
            description=self.description or self.short_description or "",
            ref_to_message_id=self.ref_to_message_in_error or ref_to_message_id,
            authenticated=authenticated,
        )


def _pick(errors: Sequence[EbmsErrorInfo]) -> EbmsErrorInfo:
    # A failure matters more than a warning that came with it.
    return next((e for e in errors if e.severity == "failure"), errors[0])


@dataclass(frozen=True)
class ErrorSignal:
    """A SignalMessage with eb:Error(s): EBMS:0006 on an empty queue, or a rejection."""

    message_id: str
    timestamp: dt.datetime
    ref_to_message_id: str | None
    errors: tuple[EbmsErrorInfo, ...]

    @property
    def is_empty_queue(self) -> bool:
        return _pick(self.errors).code == EMPTY_MPC

    def exception(self, *, authenticated: bool = False) -> EbmsError:
        """The EbmsError (or EmptyQueueError) for the most severe error.

        `authenticated` is for the caller to set once the WS-Security signature verified.
        """
        return _pick(self.errors).exception(ref_to_message_id=self.ref_to_message_id,
                                            authenticated=authenticated)


@dataclass(frozen=True)
class SoapFault:
    """A SOAP 1.2 fault, with the eb:Error(s) from the header when there are any (DIGEST 9.2).

    Faults may be unsigned (DIGEST 9.2, 15 #26), so `exception()` defaults to
    `authenticated=False`.
    """

    code: str | None
    subcode: str | None
    reason: str | None
    errors: tuple[EbmsErrorInfo, ...]
    message_id: str | None
    ref_to_message_id: str | None

    def exception(self, *, authenticated: bool = False) -> EbmsError:
        if self.errors:
            return _pick(self.errors).exception(
                ref_to_message_id=self.ref_to_message_id,
                authenticated=authenticated,
                context=f"SOAP fault {self.code}: {self.reason}",
            )
        return EbmsError(
            f"SOAP fault {self.code or '?'}: {self.reason or 'no reason given'}",
            code=self.code or "",
            category="",
            severity="failure",
            origin="SOAP",
            description=self.reason or "",
            ref_to_message_id=self.ref_to_message_id,
            authenticated=authenticated,
        )


EbmsMessage = PulledUserMessage | PullRequestSignal | ReceiptSignal | ErrorSignal | SoapFault


def _party(value: ebms.From | ebms.To) -> Party:
    if len(value.party_id) != 1:
        raise ProtocolError("exactly one eb:PartyId is expected (DIGEST 7.4)",
                            subject="eb:PartyInfo")
    pid = value.party_id[0]
    return Party(pid.value, pid.type_value, value.role)


def _error_info(error: ebms.Error) -> EbmsErrorInfo:
    return EbmsErrorInfo(
        code=error.error_code,
        severity=error.severity,
        category=error.category,
        origin=error.origin,
        short_description=error.short_description,
        description=None if error.description is None else error.description.value,
        detail=error.error_detail,
        ref_to_message_in_error=error.ref_to_message_in_error,
    )


def _user_message(env: ParsedEnvelope, um: ebms.UserMessage) -> PulledUserMessage:
    info = um.message_info
    parts = tuple(
        PayloadPart(
            p.href,
            {prop.name: prop.value for prop in p.part_properties.property}
            if p.part_properties else {},
        )
        for p in (um.payload_info.part_info if um.payload_info else [])
    )
    body_parts = [p for p in parts if not p.is_attachment]
    for p in body_parts:
        # An href other than cid: must name the Body, e.g. `#soapBody` (DIGEST 7.4, 15 #6).
        if p.href is not None and p.href != f"#{env.body_id}":
            raise ProtocolError(f"PartInfo href {p.href!r} names neither the Body nor a cid:",
                                subject="eb:PayloadInfo")
    children = env.body_children
    if len(body_parts) > 1:
        raise ProtocolError("more than one PartInfo for the SOAP Body", subject="eb:PayloadInfo")
    if body_parts and len(children) != 1:
        raise ProtocolError(
            f"env:Body must hold exactly one SBD (DIGEST 6.1), found {len(children)} elements",
            subject="SOAP envelope",
        )
    if not body_parts and children:
        raise ProtocolError("env:Body has content no PartInfo describes",
                            subject="eb:PayloadInfo")
    if um.mpc is not None:
        parse_mpc(um.mpc)
    ci = um.collaboration_info
    return PulledUserMessage(
        message_id=info.message_id,
        timestamp=_datetime(info.timestamp),
        ref_to_message_id=info.ref_to_message_id,
        conversation_id=ci.conversation_id,
        mpc=um.mpc,
        service=ci.service.value,
        action=ci.action,
        agreement_ref=None if ci.agreement_ref is None else ci.agreement_ref.value,
        from_party=_party(um.party_info.from_value),
        to_party=_party(um.party_info.to),
        parts=parts,
        sbd=children[0] if body_parts else None,
    )


def _signal(sm: ebms.SignalMessage) -> PullRequestSignal | ReceiptSignal | ErrorSignal:
    info = sm.message_info
    kinds = [k for k, present in (("PullRequest", sm.pull_request is not None),
                                  ("Receipt", sm.receipt is not None),
                                  ("Error", bool(sm.error))) if present]
    if len(kinds) != 1:
        raise ProtocolError(
            f"a SignalMessage must carry exactly one of PullRequest, Receipt, Error; "
            f"found {kinds or 'none'}",
            subject="eb:SignalMessage",
        )
    when = _datetime(info.timestamp)
    if sm.pull_request is not None:
        if sm.pull_request.mpc is None:
            raise ProtocolError("PullRequest without mpc (DIGEST 7.5)", subject="eb:PullRequest")
        parse_mpc(sm.pull_request.mpc)
        return PullRequestSignal(info.message_id, when, sm.pull_request.mpc)
    if sm.receipt is not None:
        refs: list[NonRepudiationReference] = []
        for item in sm.receipt.other_element:
            if not isinstance(item, ebbp.NonRepudiationInformation):
                raise ProtocolError(
                    "eb:Receipt must hold ebbp:NonRepudiationInformation (DIGEST 7.5)",
                    subject="eb:Receipt",
                )
            for part in item.message_part_nrinformation:
                if part.reference is None:
                    raise ProtocolError("MessagePartNRInformation without ds:Reference",
                                        subject="eb:Receipt")
                refs.append(NonRepudiationReference.from_binding(part.reference))
        if not refs:
            raise ProtocolError("eb:Receipt without references", subject="eb:Receipt")
        return ReceiptSignal(info.message_id, when, info.ref_to_message_id, tuple(refs))
    return ErrorSignal(info.message_id, when, info.ref_to_message_id,
                       tuple(_error_info(e) for e in sm.error))


def _child_text(element: etree._Element, *tags: str) -> str | None:
    # Step by step: ElementPath cannot take a path of Clark names whose URIs contain "/".
    node: etree._Element | None = element
    for tag in tags:
        node = node.find(tag) if node is not None else None
    return None if node is None else (node.text or "")


def _lenient_errors(messaging: etree._Element) -> tuple[
    tuple[EbmsErrorInfo, ...], str | None, str | None
]:
    # Only for faults whose eb:Messaging the bindings refused (the template, DIGEST 15 #30).
    errors: list[EbmsErrorInfo] = []
    message_id = ref = None
    for sm in messaging.iter(f"{{{NS_EBMS}}}SignalMessage"):
        message_id = _child_text(sm, f"{{{NS_EBMS}}}MessageInfo", f"{{{NS_EBMS}}}MessageId")
        ref = _child_text(sm, f"{{{NS_EBMS}}}MessageInfo", f"{{{NS_EBMS}}}RefToMessageId")
        for e in sm.iter(f"{{{NS_EBMS}}}Error"):
            errors.append(EbmsErrorInfo(
                code=e.get("errorCode", ""),
                severity=e.get("severity", "failure"),
                category=e.get("category"),
                origin=e.get("origin"),
                short_description=e.get("shortDescription"),
                description=e.findtext(f"{{{NS_EBMS}}}Description"),
                detail=e.findtext(f"{{{NS_EBMS}}}ErrorDetail"),
                ref_to_message_in_error=e.get("refToMessageInError"),
            ))
    return tuple(errors), message_id, ref


def _soap_fault(env: ParsedEnvelope, fault: etree._Element) -> SoapFault:
    def text(*path: str) -> str | None:
        # Qualified as SOAP 1.2 requires, or unqualified as in the template.
        for ns in (f"{{{NS_SOAP12}}}", ""):
            found = _child_text(fault, *(ns + p for p in path))
            if found is not None:
                return found.strip()
        return None

    errors: tuple[EbmsErrorInfo, ...] = ()
    message_id = ref = None
    if env.messaging is not None:
        signals = [_signal(sm) for sm in env.messaging.signal_message]
        for s in signals:
            if isinstance(s, ErrorSignal):
                errors += s.errors
                message_id, ref = s.message_id, s.ref_to_message_id
    elif env.messaging_element is not None:
        errors, message_id, ref = _lenient_errors(env.messaging_element)
    return SoapFault(
        code=text("Code", "Value"),
        subcode=text("Code", "Subcode", "Value"),
        reason=text("Reason", "Text"),
        errors=errors,
        message_id=message_id,
        ref_to_message_id=ref,
    )


def messages(env: ParsedEnvelope) -> list[EbmsMessage]:
    """Every UserMessage and SignalMessage in eb:Messaging, in document order, typed.

    A SOAP fault is a single `SoapFault`. Mixing a UserMessage with signals, or more than one
    UserMessage, is refused: SDP never does it (DIGEST 7.3, 8.4).
    """
    if env.fault is not None:
        return [_soap_fault(env, env.fault)]
    m = env.messaging
    if m is None:  # parse_envelope only allows this for a fault
        raise ProtocolError("no eb:Messaging", subject="SOAP envelope")
    if m.other_element:
        raise ProtocolError("unknown content in eb:Messaging", subject="eb:Messaging")
    if m.user_message:
        if len(m.user_message) > 1 or m.signal_message:
            raise ProtocolError("a UserMessage must travel alone in eb:Messaging",
                                subject="eb:Messaging")
        return [_user_message(env, m.user_message[0])]
    if not m.signal_message:
        raise ProtocolError("eb:Messaging is empty", subject="eb:Messaging")
    if env.body_children:
        raise ProtocolError("a signal message has an empty env:Body (DIGEST 7.5, 8.3)",
                            subject="SOAP envelope")
    return [_signal(sm) for sm in m.signal_message]


def classify(env: ParsedEnvelope) -> EbmsMessage:
    """The one message in a response: receipt, error, pulled user message or fault.

    Responses from the broker carry exactly one; use `messages` for a combined
    Receipt + PullRequest (the simulator's side of DIGEST 8.4).
    """
    found = messages(env)
    if len(found) != 1:
        raise ProtocolError(f"{len(found)} messages where one was expected",
                            subject="eb:Messaging")
    return found[0]


def raise_for_error(message: EbmsMessage, *, authenticated: bool = False) -> None:
    """Raise the EbmsError (EmptyQueueError for EBMS:0006) an error signal or fault stands for.

    `authenticated`: whether the envelope's WS-Security signature verified (DIGEST 9.2, 15 #26).
    """
    if isinstance(message, ErrorSignal | SoapFault):
        raise message.exception(authenticated=authenticated)
