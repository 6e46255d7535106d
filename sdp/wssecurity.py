"""WS-Security for the SOAP envelopes SDP exchanges: the `wsse:Security` header (DIGEST 7.8).

`sign` adds the header the way the reference MSH (WSS4J) writes it in the request examples
(`eksempler/soap/1_request…`): a `wsse:BinarySecurityToken` with the signer's certificate, a
`wsu:Timestamp` and one `ds:Signature` over env:Body, the Timestamp, eb:Messaging and every
attachment, with exclusive c14n, RSA-SHA256 and SHA-256, and a KeyInfo that points at the
token through a `wsse:SecurityTokenReference`.

`verify` is the strict mirror. Besides the cryptography it checks that the signed elements are
the ones a SOAP processor acts on: the env:Body that is the Envelope's child, the eb:Messaging
that is a child of env:Header and the Timestamp inside the one wsse:Security. Id-based
references make XML signatures prone to wrapping attacks (the signed element is moved or
copied, and an unsigned one put where the processor looks), so repeated Ids, extra Body or
Messaging elements and references to anything else are refused rather than resolved.

The XML-DSig mechanics (canonicalization, reference digests, SignatureValue, algorithm
allow-list) come from `sdp.xmldsig` with `WSS_PROFILE`; what is WS-Security-specific lives
here: the token, the SecurityTokenReference KeyInfo (the engine only writes X509Data), the
Timestamp and the structural checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from lxml import etree

from sdp import xmldsig
from sdp.certificates import load_der, orgnr_of, subject_of, validate_path
from sdp.errors import (
    DigestMismatchError,
    InputError,
    ReferenceMismatchError,
    SignatureError,
    TrustError,
)
from sdp.keys import SigningIdentity
from sdp.xmldsig import (
    DS_NS,
    EXC_C14N,
    RSA_SHA256,
    SHA256,
    SWA_ATTACHMENT_CONTENT,
    WSS_PROFILE,
    WSSE_NS,
    WSU_NS,
    XML_NS,
    Reference,
    SignatureProfileError,
    Transform,
)

__all__ = [
    "BASE64_BINARY",
    "DEFAULT_CLOCK_SKEW",
    "DEFAULT_TTL",
    "EB_NS",
    "SOAP12_NS",
    "X509V3",
    "AttachmentDigest",
    "SecurityHeaderError",
    "SignatureWrappingError",
    "SignerIdentityError",
    "TimestampError",
    "VerifiedReference",
    "WssDigestMismatchError",
    "WssResult",
    "WssSigned",
    "attachment_digest",
    "find_signature",
    "format_timestamp",
    "sign",
    "signed_references",
    "verify",
]

# --- constants (DIGEST 0.1, 7.8) --------------------------------------------------------------

SOAP12_NS: Final = "http://www.w3.org/2003/05/soap-envelope"
EB_NS: Final = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"
X509V3: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
)
BASE64_BINARY: Final = (
    "http://docs.oasis-open.org/wss/2004/01/"
    "oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)

#: Timestamp time-to-live required by the spec (DIGEST 0.4, 15 item 1; the examples use 300 s).
DEFAULT_TTL: Final = dt.timedelta(seconds=120)
#: Clock skew tolerated when checking a received Timestamp (DIGEST 10.3: "allowing some skew").
DEFAULT_CLOCK_SKEW: Final = dt.timedelta(seconds=60)

_ENVELOPE = f"{{{SOAP12_NS}}}Envelope"
_HEADER = f"{{{SOAP12_NS}}}Header"
_BODY = f"{{{SOAP12_NS}}}Body"
_MUST_UNDERSTAND = f"{{{SOAP12_NS}}}mustUnderstand"
_MESSAGING = f"{{{EB_NS}}}Messaging"
_SECURITY = f"{{{WSSE_NS}}}Security"
_BST = f"{{{WSSE_NS}}}BinarySecurityToken"
_STR = f"{{{WSSE_NS}}}SecurityTokenReference"
_WSSE_REFERENCE = f"{{{WSSE_NS}}}Reference"
_TIMESTAMP = f"{{{WSU_NS}}}Timestamp"
_CREATED = f"{{{WSU_NS}}}Created"
_EXPIRES = f"{{{WSU_NS}}}Expires"
_WSU_ID = f"{{{WSU_NS}}}Id"
_SIGNATURE = f"{{{DS_NS}}}Signature"
_SIGNED_INFO = f"{{{DS_NS}}}SignedInfo"
_SIGNATURE_VALUE = f"{{{DS_NS}}}SignatureValue"
_KEY_INFO = f"{{{DS_NS}}}KeyInfo"

#: Attributes an Id-based URI may be resolved through by some XML-DSig implementation. All of
#: them count when looking for repeated Ids, so that no verifier downstream can pick a
#: different element than we did.
_ID_ATTRIBUTES: Final = (_WSU_ID, "Id", "ID", "id", f"{{{XML_NS}}}id")

Target = Literal["body", "timestamp", "messaging", "attachment"]


# --- errors -----------------------------------------------------------------------------------


class SecurityHeaderError(SignatureProfileError):
    """The wsse:Security header is missing or breaks the SDP profile (token, KeyInfo, parts)."""


class SignatureWrappingError(SignatureError):
    """A signed Id does not lead to the element a SOAP processor acts on: a repeated Id, a second
    Body or eb:Messaging, or a reference to an element elsewhere (XML signature wrapping)."""


class TimestampError(SignatureError):
    """The wsu:Timestamp is missing, malformed, expired or not yet valid (DIGEST 7.8, 10.3)."""


class SignerIdentityError(TrustError):
    """The signer certificate is trusted but issued to another organisation (DIGEST 10.3)."""


class WssDigestMismatchError(DigestMismatchError):
    """One or more references do not match; `references` lists every one with its outcome."""

    def __init__(self, message: str, *, subject: str | None = None,
                 references: Sequence[VerifiedReference] = ()) -> None:
        self.references: tuple[VerifiedReference, ...] = tuple(references)
        super().__init__(message, subject=subject)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttachmentDigest:
    """An attachment's SHA-256, computed by the caller over the raw (transfer-decoded) octets.

    For `verify`, in place of the attachment bytes when the caller hashed the MIME part while
    streaming it. It must come from the received octets themselves, never from the message
    (e.g. not the `dokumentpakkefingeravtrykk` in the Body): then the check proves nothing.
    """

    sha256: bytes

    def __post_init__(self) -> None:
        if len(self.sha256) != 32:
            raise InputError("a SHA-256 digest has 32 bytes", subject="AttachmentDigest")


@dataclass(frozen=True)
class WssSigned:
    """What `sign` wrote: the signed references and the Timestamp's times."""

    signature: etree._Element
    #: The references in SignedInfo order (Body, Timestamp, eb:Messaging, attachments), as
    #: written into the signature: copy these into NonRepudiationInformation.
    references: tuple[Reference, ...]
    created: dt.datetime
    expires: dt.datetime

    @property
    def digests(self) -> dict[str, bytes]:
        """Reference URI (`#id` or `cid:…`) -> SHA-256 digest value."""
        return {ref.uri or "": ref.digest_value for ref in self.references}


@dataclass(frozen=True)
class VerifiedReference:
    """One reference of a verified signature: what it points at and whether its digest held."""

    uri: str
    target: Target
    digest_method: str
    digest_value: bytes
    ok: bool
    reference: Reference


@dataclass(frozen=True)
class WssResult:
    """A verified wsse:Security header."""

    certificate: x509.Certificate
    #: Organisation number in the certificate (DIGEST 10.1), None if it carries none.
    orgnr: str | None
    created: dt.datetime
    expires: dt.datetime
    references: tuple[VerifiedReference, ...]
    #: The validated path, leaf first; empty when `verify` was called with `trust=None`.
    chain: tuple[x509.Certificate, ...]

    def reference_for(self, target: Target) -> VerifiedReference:
        """The single reference to Body, Timestamp or Messaging."""
        for ref in self.references:
            if ref.target == target:
                return ref
        raise KeyError(target)

    @property
    def attachment_references(self) -> dict[str, VerifiedReference]:
        """Content-ID (without `cid:`) -> its reference."""
        return {r.uri[4:]: r for r in self.references if r.target == "attachment"}


# --- helpers ----------------------------------------------------------------------------------


def format_timestamp(value: dt.datetime) -> str:
    """xs:dateTime in UTC with milliseconds and `Z`, as the examples write wsu:Created."""
    if value.tzinfo is None:
        raise InputError("must be timezone-aware", subject="timestamp")
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _parse_timestamp(text: str | None, what: str) -> dt.datetime:
    value = (text or "").strip()
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TimestampError(f"not an xs:dateTime: {value!r}", subject=what) from None
    if "T" not in value or parsed.tzinfo is None:
        raise TimestampError(f"needs a date, a time and a time zone: {value!r}", subject=what)
    return parsed.astimezone(dt.UTC)


def _children(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


_SPACE = re.compile(r"\s")  # exactly what str.isspace() matches


def _cid_uri(cid: str) -> str:
    if not cid or cid.startswith(("<", "cid:")) or cid.endswith(">") or _SPACE.search(cid):
        raise InputError("a Content-ID without angle brackets or cid: prefix is expected",
                         subject=repr(cid))
    return f"cid:{cid}"


def _load_token_certificate(text: str | None) -> x509.Certificate:
    der = xmldsig.b64decode(text, subject="wsse:BinarySecurityToken")
    try:
        cert = load_der(der)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise SecurityHeaderError(f"not a DER X.509 certificate: {exc}",
                                  subject="wsse:BinarySecurityToken") from None
    return cert


# --- the envelope's parts ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    envelope: etree._Element
    header: etree._Element
    body: etree._Element
    messaging: etree._Element


def _envelope_parts(envelope: etree._Element, *, signing: bool) -> _Parts:
    """Envelope, its one Header and one Body (in that order) and the one eb:Messaging header.

    Counts over the whole document, not just the expected places: a second Body or Messaging
    anywhere is how a wrapped, signed copy would be smuggled along.
    """
    def fail(message: str, subject: str) -> Exception:
        if signing:
            return InputError(message, subject=subject)
        return SignatureWrappingError(message, subject=subject)

    if envelope.tag != _ENVELOPE:
        raise fail(f"expected a SOAP 1.2 env:Envelope, found {envelope.tag}", "SOAP envelope")
    kids = _children(envelope)
    if [k.tag for k in kids] != [_HEADER, _BODY]:
        raise fail("env:Envelope must hold exactly env:Header and env:Body, in that order",
                   "SOAP envelope")
    header, body = kids
    for tag, name in ((_BODY, "env:Body"), (_HEADER, "env:Header")):
        found = sum(1 for _ in envelope.iter(tag))
        if found != 1:
            raise fail(f"{found} {name} elements in the document", name)
    messaging = list(envelope.iter(_MESSAGING))
    if len(messaging) != 1:
        raise fail(f"{len(messaging)} eb:Messaging elements in the document, expected 1",
                   "eb:Messaging")
    if messaging[0].getparent() is not header:
        raise fail("eb:Messaging is not a child of env:Header", "eb:Messaging")
    return _Parts(envelope, header, body, messaging[0])


def _wsu_id(el: etree._Element, what: str) -> str:
    value = el.get(_WSU_ID)
    if not value:
        raise InputError("needs a wsu:Id to be signed (DIGEST 7.8)", subject=what)
    return value


# --- signing ----------------------------------------------------------------------------------


def sign(envelope: etree._Element, signer: SigningIdentity, *,
         attachments: Mapping[str, bytes] | None = None,
         now: dt.datetime | None = None,
         ttl: dt.timedelta = DEFAULT_TTL) -> WssSigned:
    """Add the `wsse:Security` header and sign the envelope in place (DIGEST 7.8).

    `envelope` is a SOAP 1.2 env:Envelope with env:Header/eb:Messaging and env:Body, both with
    a `wsu:Id` (as `sdp.ebms.build_envelope` makes it) and no wsse:Security yet.
    `attachments` maps each attachment's Content-ID (without `<>` and `cid:`) to the SHA-256 of
    its raw octets; for SDP that is the dokumentpakkefingeravtrykk (DIGEST 4.7). Created is
    `now` (default: the current time) truncated to milliseconds; Expires = Created + `ttl`.

    The references are, in order, Body, Timestamp, eb:Messaging and the attachments; each
    same-document reference gets the exclusive-c14n transform with the examples' PrefixList
    (the SOAP prefix and `wsse` for the Timestamp, none for Body and Messaging).
    """
    parts = _envelope_parts(envelope, signing=True)
    if any(True for _ in envelope.iter(_SECURITY)):
        raise InputError("already has a wsse:Security header", subject="SOAP envelope")
    body_id = _wsu_id(parts.body, "env:Body")
    messaging_id = _wsu_id(parts.messaging, "eb:Messaging")
    if body_id == messaging_id:
        raise InputError("env:Body and eb:Messaging have the same wsu:Id", subject=body_id)
    digests = {_cid_uri(cid): bytes(value) for cid, value in (attachments or {}).items()}
    for uri, value in digests.items():
        if len(value) != 32:
            raise InputError("the attachment digest must be a 32-byte SHA-256", subject=uri)
    if ttl <= dt.timedelta(0):
        raise InputError("must be positive", subject="ttl")
    created = (now or dt.datetime.now(dt.UTC))
    if created.tzinfo is None:
        raise InputError("must be timezone-aware", subject="now")
    created = created.astimezone(dt.UTC)
    created = created.replace(microsecond=created.microsecond // 1000 * 1000)
    expires = created + ttl

    soap_prefix = envelope.prefix or "#default"
    # Created inside the Header so that mustUnderstand takes the envelope's SOAP prefix, then
    # moved first, where the examples have it.
    security = etree.SubElement(parts.header, _SECURITY, nsmap={"wsse": WSSE_NS, "wsu": WSU_NS})
    security.set(_MUST_UNDERSTAND, "true")
    parts.header.insert(0, security)

    token_id = _new_id("X509")
    token = etree.SubElement(security, _BST, EncodingType=BASE64_BINARY, ValueType=X509V3)
    token.set(_WSU_ID, token_id)
    token.text = xmldsig.b64(signer.certificate.public_bytes(serialization.Encoding.DER))

    timestamp_id = _new_id("TS")
    timestamp = etree.SubElement(security, _TIMESTAMP)
    timestamp.set(_WSU_ID, timestamp_id)
    etree.SubElement(timestamp, _CREATED).text = format_timestamp(created)
    etree.SubElement(timestamp, _EXPIRES).text = format_timestamp(expires)

    signature = xmldsig.new_signature(security, ds_prefix="ds", id=_new_id("SIG"))
    signed_info = xmldsig.add_signed_info(
        signature, c14n=Transform(EXC_C14N, (soap_prefix,)), signature_method=RSA_SHA256)
    xml_targets = (
        (body_id, parts.body, Transform(EXC_C14N)),
        (timestamp_id, timestamp, Transform(EXC_C14N, ("wsse", soap_prefix))),
        (messaging_id, parts.messaging, Transform(EXC_C14N)),
    )
    written: list[Reference] = []
    for target_id, element, transform in xml_targets:
        probe = Reference(f"#{target_id}", SHA256, b"", (transform,))
        value = xmldsig.reference_digest(probe, element)
        ref = xmldsig.add_reference(signed_info, uri=probe.uri or "", digest_value=value,
                                    transforms=probe.transforms)
        written.append(dataclasses.replace(probe, digest_value=value, element=ref))
    for uri, value in digests.items():
        transforms = (Transform(SWA_ATTACHMENT_CONTENT),)
        ref = xmldsig.add_reference(signed_info, uri=uri, digest_value=value,
                                    transforms=transforms)
        written.append(Reference(uri, SHA256, value, transforms, element=ref))

    key_info = etree.SubElement(signature, f"{{{DS_NS}}}KeyInfo", Id=_new_id("KI"))
    str_el = etree.SubElement(key_info, _STR)
    str_el.set(_WSU_ID, _new_id("STR"))
    etree.SubElement(str_el, _WSSE_REFERENCE, URI=f"#{token_id}", ValueType=X509V3)

    xmldsig.add_signature_value(signature, signer.key)
    return WssSigned(signature, tuple(written), created, expires)


# --- reading a signature ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    security: etree._Element
    token: etree._Element
    timestamp: etree._Element
    signature: etree._Element


def _security_header(parts: _Parts) -> _Header:
    found = list(parts.envelope.iter(_SECURITY))
    if not found:
        raise SecurityHeaderError("no wsse:Security header: the message is not signed",
                                  subject="wsse:Security")
    if len(found) > 1:
        raise SecurityHeaderError(f"{len(found)} wsse:Security elements, expected 1",
                                  subject="wsse:Security")
    security = found[0]
    if security.getparent() is not parts.header:
        raise SecurityHeaderError("not a child of env:Header", subject="wsse:Security")
    by_tag: dict[str, list[etree._Element]] = {}
    for child in _children(security):
        by_tag.setdefault(str(child.tag), []).append(child)
    unexpected = set(by_tag) - {_BST, _TIMESTAMP, _SIGNATURE}
    if unexpected:
        raise SecurityHeaderError(f"unexpected {sorted(unexpected)[0]}", subject="wsse:Security")
    for tag, name in ((_SIGNATURE, "ds:Signature"), (_BST, "wsse:BinarySecurityToken")):
        if len(by_tag.get(tag, [])) != 1:
            raise SecurityHeaderError(f"{len(by_tag.get(tag, []))} {name}, exactly 1 is required",
                                      subject="wsse:Security")
    stamps = by_tag.get(_TIMESTAMP, [])
    if len(stamps) != 1:
        raise TimestampError(f"{len(stamps)} wsu:Timestamp elements, exactly 1 is required",
                             subject="wsse:Security")
    signature = by_tag[_SIGNATURE][0]
    if sum(1 for _ in parts.envelope.iter(_TIMESTAMP)) != 1:
        raise SignatureWrappingError("a second wsu:Timestamp in the document",
                                     subject="wsu:Timestamp")
    return _Header(security, by_tag[_BST][0], stamps[0], signature)


def find_signature(envelope: etree._Element) -> etree._Element:
    """The single `ds:Signature` of the envelope's single `wsse:Security` header."""
    found = list(envelope.iter(_SECURITY))
    if len(found) != 1:
        raise SecurityHeaderError(f"{len(found)} wsse:Security elements, expected 1",
                                  subject="wsse:Security")
    signatures = [c for c in _children(found[0]) if c.tag == _SIGNATURE]
    if len(signatures) != 1:
        raise SecurityHeaderError(f"{len(signatures)} ds:Signature, expected 1",
                                  subject="wsse:Security")
    return signatures[0]


def signed_references(source: etree._Element) -> tuple[Reference, ...]:
    """The `ds:Reference`s of a WS-Security signature: URI, transforms (with PrefixList),
    digest method and value, and the element (for `ebms.NonRepudiationReference`).

    `source` is an envelope or its `ds:Signature`. Algorithms are checked against the profile,
    but nothing is verified: call `verify` first when the references come from outside, and
    build NonRepudiationInformation (DIGEST 7.5) only from a verified signature.
    """
    signature = source if source.tag == _SIGNATURE else find_signature(source)
    return xmldsig.parse_signed_info(signature, WSS_PROFILE).references


#: Every element (the context node included) that carries one of _ID_ATTRIBUTES, found by
#: libxml2 rather than by visiting each element in Python.
_WITH_ID: Final = etree.XPath(
    "descendant-or-self::*[@wsu:Id or @Id or @ID or @id or @xml:id]",
    namespaces={"wsu": WSU_NS})
_WSU_IDS: Final = etree.XPath("descendant-or-self::*/@wsu:Id", namespaces={"wsu": WSU_NS})


def _id_index(root: etree._Element) -> dict[str, list[etree._Element]]:
    index: dict[str, list[etree._Element]] = {}
    for el in cast("list[etree._Element]", _WITH_ID(root)):
        for value in {el.get(a) for a in _ID_ATTRIBUTES} - {None}:
            assert value is not None
            index.setdefault(value, []).append(el)
    return index


def _check_ids(root: etree._Element, index: dict[str, list[etree._Element]],
               referenced: Iterable[str]) -> None:
    """No repeated wsu:Id anywhere; no referenced Id carried by two elements in any form."""
    wsu_values = {str(v) for v in cast("list[str]", _WSU_IDS(root))}
    for value in sorted(wsu_values | set(referenced)):
        if len(index.get(value, [])) > 1:
            raise SignatureWrappingError(f"{len(index[value])} elements carry this Id",
                                         subject=f"#{value}")


def _token_certificate(header: _Header, index: dict[str, list[etree._Element]]
                       ) -> x509.Certificate:
    """The certificate in the BinarySecurityToken that KeyInfo's SecurityTokenReference names."""
    token = header.token
    if token.get("ValueType") != X509V3:
        raise SecurityHeaderError(f"ValueType {token.get('ValueType')!r} is not X509v3",
                                  subject="wsse:BinarySecurityToken")
    if token.get("EncodingType", BASE64_BINARY) != BASE64_BINARY:
        raise SecurityHeaderError(f"EncodingType {token.get('EncodingType')!r} is not "
                                  "Base64Binary", subject="wsse:BinarySecurityToken")
    kids = _children(header.signature)
    if [k.tag for k in kids] != [_SIGNED_INFO, _SIGNATURE_VALUE, _KEY_INFO]:
        raise SecurityHeaderError("must hold SignedInfo, SignatureValue and KeyInfo only",
                                  subject="ds:Signature")
    key_info = _children(kids[2])
    if len(key_info) != 1 or key_info[0].tag != _STR:
        raise SecurityHeaderError("must hold exactly one wsse:SecurityTokenReference",
                                  subject="ds:KeyInfo")
    refs = _children(key_info[0])
    if len(refs) != 1 or refs[0].tag != _WSSE_REFERENCE:
        raise SecurityHeaderError("must hold exactly one wsse:Reference",
                                  subject="wsse:SecurityTokenReference")
    uri = refs[0].get("URI") or ""
    value_type = refs[0].get("ValueType")
    if value_type is not None and value_type != X509V3:
        raise SecurityHeaderError(f"ValueType {value_type!r} is not X509v3",
                                  subject="wsse:SecurityTokenReference")
    if not uri.startswith("#") or index.get(uri[1:]) != [token]:
        raise SecurityHeaderError(f"URI {uri!r} does not name the BinarySecurityToken",
                                  subject="wsse:SecurityTokenReference")
    return _load_token_certificate(token.text)


# --- verifying --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    reference: Reference
    target: Target
    data: xmldsig.Resolved | AttachmentDigest


def _plan(info: xmldsig.SignedInfo, parts: _Parts, header: _Header,
          index: dict[str, list[etree._Element]],
          attachments: Mapping[str, bytes | AttachmentDigest]) -> list[_Planned]:
    """Match every reference to its target, refusing anything but the SDP set (DIGEST 7.8)."""
    positions: dict[int, tuple[Target, etree._Element]] = {
        id(parts.body): ("body", parts.body),
        id(header.timestamp): ("timestamp", header.timestamp),
        id(parts.messaging): ("messaging", parts.messaging),
    }
    expected_cids = {_cid_uri(cid): cid for cid in attachments}
    seen: dict[str, str] = {}
    plan: list[_Planned] = []
    for ref in info.references:
        uri = ref.uri or ""
        algorithms = [t.algorithm for t in ref.transforms]
        if uri.startswith("#"):
            if algorithms != [EXC_C14N]:
                raise SignatureProfileError("a same-document reference needs exactly the "
                                            "exclusive c14n transform", subject=ref.name)
            hits = index.get(uri[1:], [])
            if len(hits) != 1:
                raise SignatureWrappingError(f"{len(hits)} elements carry this Id",
                                             subject=ref.name)
            if id(hits[0]) not in positions:
                raise SignatureWrappingError(
                    f"points at {hits[0].tag}, which is not env:Body, eb:Messaging in env:Header "
                    "or the wsu:Timestamp in wsse:Security", subject=ref.name)
            target, element = positions[id(hits[0])]
            data: xmldsig.Resolved | AttachmentDigest = element
        elif uri.startswith("cid:"):
            if algorithms != [SWA_ATTACHMENT_CONTENT]:
                raise SignatureProfileError("an attachment reference needs exactly the "
                                            "SwA content transform", subject=ref.name)
            if uri not in expected_cids:
                raise ReferenceMismatchError("signs an attachment that was not received",
                                             subject=ref.name)
            target = "attachment"
            data = attachments[expected_cids[uri]]
        else:
            raise SignatureWrappingError("only #id and cid: references are allowed",
                                         subject=ref.name)
        key = uri if target == "attachment" else target
        if key in seen:
            raise ReferenceMismatchError(f"{key} is referenced twice", subject=ref.name)
        seen[key] = uri
        plan.append(_Planned(ref, target, data))
    for target in ("body", "timestamp", "messaging"):
        if target not in seen:
            raise ReferenceMismatchError(f"the {target} is not signed (DIGEST 7.8)",
                                         subject="ds:SignedInfo")
    unsigned = sorted(set(expected_cids) - set(seen))
    if unsigned:
        raise ReferenceMismatchError("attachment is not covered by the signature",
                                     subject=unsigned[0])
    return plan


def _check_reference(item: _Planned, signature: etree._Element) -> bool:
    if isinstance(item.data, AttachmentDigest):
        if item.reference.digest_method != SHA256:
            raise SignatureProfileError("an AttachmentDigest is a SHA-256",
                                        subject=item.reference.name)
        return item.data.sha256 == item.reference.digest_value
    computed = xmldsig.reference_digest(item.reference, item.data, signature=signature)
    return computed == item.reference.digest_value


def _check_timestamp(timestamp: etree._Element, at: dt.datetime,
                     skew: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    kids = _children(timestamp)
    if [k.tag for k in kids] != [_CREATED, _EXPIRES]:
        raise TimestampError("must hold wsu:Created and wsu:Expires", subject="wsu:Timestamp")
    created = _parse_timestamp(kids[0].text, "wsu:Created")
    expires = _parse_timestamp(kids[1].text, "wsu:Expires")
    if expires < created:
        raise TimestampError("Expires is before Created", subject="wsu:Timestamp")
    if created > at + skew:
        raise TimestampError(f"created in the future ({format_timestamp(created)}, "
                             f"now {format_timestamp(at)})", subject="wsu:Timestamp")
    if expires < at - skew:
        raise TimestampError(f"expired at {format_timestamp(expires)} "
                             f"(now {format_timestamp(at)})", subject="wsu:Timestamp")
    return created, expires


def verify(envelope: etree._Element, *,
           attachments: Mapping[str, bytes | AttachmentDigest] | None = None,
           trust: Sequence[x509.Certificate] | None,
           at: dt.datetime | None = None,
           clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
           expected_orgnr: str | None = None,
           intermediates: Sequence[x509.Certificate] = ()) -> WssResult:
    """Verify the envelope's WS-Security header strictly, or raise a typed `SignatureError`.

    `attachments`: every attachment that arrived with the message, Content-ID (without `<>`)
    -> its raw octets after transfer decoding, or an `AttachmentDigest` the caller computed
    over those octets. Each must be signed exactly once and no other `cid:` may be signed.

    `trust`: the trust anchors of the environment (DIGEST 10.2); the signer certificate must
    chain to one at `at` (with `intermediates` as untrusted path candidates; the token carries
    only the leaf). `None` skips the chain check: only for tests and old examples whose
    certificates expired; production callers always pass the trust store. `expected_orgnr`,
    when given, must be the certificate's organisation number (DIGEST 10.3).

    Checks, in order: envelope shape (one Header, Body, Messaging; SignatureWrappingError),
    the header (SecurityHeaderError, TimestampError when there is no Timestamp), repeated Ids,
    algorithms (`xmldsig.AlgorithmNotAllowedError`), that the references are exactly Body,
    Timestamp, Messaging and the attachments (SignatureWrappingError, ReferenceMismatchError),
    the SignatureValue (SignatureValueError), every digest (WssDigestMismatchError, listing
    all references), the Timestamp against `at` ± `clock_skew` (TimestampError), the chain
    (CertificateChainError) and the orgnr (SignerIdentityError).
    """
    at = at or dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        raise InputError("must be timezone-aware", subject="at")
    at = at.astimezone(dt.UTC)
    if not any(True for _ in envelope.iter(_SECURITY)):
        raise SecurityHeaderError("no wsse:Security header: the message is not signed",
                                  subject="wsse:Security")
    parts = _envelope_parts(envelope, signing=False)
    header = _security_header(parts)
    index = _id_index(envelope)
    info = xmldsig.parse_signed_info(header.signature, WSS_PROFILE)
    referenced = [r.uri[1:] for r in info.references if r.uri and r.uri.startswith("#")]
    _check_ids(envelope, index, referenced)
    plan = _plan(info, parts, header, index, attachments or {})
    certificate = _token_certificate(header, index)

    xmldsig.verify_signature_value(header.signature, info, certificate.public_key())
    results = tuple(
        VerifiedReference(item.reference.uri or "", item.target, item.reference.digest_method,
                          item.reference.digest_value, _check_reference(item, header.signature),
                          item.reference)
        for item in plan
    )
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(f"{r.target} ({r.uri})" for r in failed)
        raise WssDigestMismatchError(f"digest does not match the signed DigestValue: {names}",
                                     subject=failed[0].reference.name, references=results)

    created, expires = _check_timestamp(header.timestamp, at, clock_skew)
    chain: tuple[x509.Certificate, ...] = ()
    if trust is not None:
        chain = validate_path(certificate, intermediates, trust, at)
    orgnr = orgnr_of(certificate)
    if expected_orgnr is not None and orgnr != expected_orgnr:
        raise SignerIdentityError(
            f"certificate is issued to orgnr {orgnr or 'none'}, expected {expected_orgnr}",
            subject=subject_of(certificate))
    return WssResult(certificate, orgnr, created, expires, results, chain)


def attachment_digest(data: bytes) -> AttachmentDigest:
    """SHA-256 of an attachment's raw octets, for `sign` (its `.sha256`) or `verify`."""
    return AttachmentDigest(hashlib.sha256(data).digest())
