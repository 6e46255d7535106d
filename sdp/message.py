"""Business message + Standard Business Document, and the end-to-end SBD signature.

DIGEST 3.11 and 6: the business message (`sdp:digitalPost`, or `sdp:kvittering` /
`sdp:feil` coming back) sits in an SBD whose header names the technical endpoints. One
enveloped XML signature, the first child of the business message, covers the whole SBD:
`Reference URI=""` over the SBD as a standalone document, enveloped-signature transform,
inclusive C14N 1.0 (the XML-DSig default) for the digest, exclusive C14N for SignedInfo,
RSA-SHA256, the signer's certificate in KeyInfo. The signed SBD is then embedded in the SOAP
Body without changing a byte, and a verifier takes it out again as a standalone document.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from lxml import etree
from xsdata.models.datatype import XmlDateTime

from sdp import xmldsig as ds
from sdp.bindings import from_xml, to_xml
from sdp.certificates import orgnr_of, subject_of, validate_path
from sdp.consignment import Forsendelse
from sdp.errors import InputError, ProtocolError, SignatureError, TrustError
from sdp.identifiers import parse_orgnr, party_id
from sdp.keys import SigningIdentity
from sdp.schemas import NS_DS, NS_SBDH, NS_SDP, validate
from sdp.xmlparse import parse
from sdp_bindings import sbdh
from sdp_bindings import sdp as s
from sdp_bindings import xmldsig as xd

#: SBDH constants (DIGEST 0.3, 6.2).
HEADER_VERSION = "1.0"
STANDARD = "urn:no:difi:sdp:1.0"
TYPE_VERSION = "1.0"
CONVERSATION_ID_SCOPE = "ConversationId"
#: The SBDH Identifier authority every wire example uses; the documented alternative
#: `iso6523-actorid-upis` is accepted on input (DIGEST 6.2, 15 item 8).
AUTHORITY = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:9908"
AUTHORITY_OLD = "iso6523-actorid-upis"

#: The only prefixes an SBD we write declares: embedding it in SOAP must not depend on
#: anything outside it.
SBD_NS_MAP = {"sbdh": NS_SBDH, "sdp": NS_SDP, "ds": NS_DS}

_SBD = f"{{{NS_SBDH}}}StandardBusinessDocument"
_SIG = f"{{{NS_DS}}}Signature"


class SignerIdentityError(TrustError):
    """The SBD is signed by someone other than the party its header names as Sender."""


@dataclass(frozen=True)
class SignedSbd:
    """A signed SBD ready to embed: its exact bytes and the ids that tie things together."""

    xml: bytes
    instance_identifier: str
    conversation_id: str
    document_type: str
    created: dt.datetime


def _partner(orgnr: str) -> sbdh.Partner:
    return sbdh.Partner(identifier=sbdh.PartnerIdentification(value=party_id(orgnr),
                                                              authority=AUTHORITY))


def _placeholder_signature() -> xd.Signature:
    # The schema makes ds:Signature mandatory; a structurally complete placeholder lets the
    # unsigned message be schema-validated before signing, then is replaced in place.
    return xd.Signature(
        signed_info=xd.SignedInfo(
            canonicalization_method=xd.CanonicalizationMethod(algorithm=ds.EXC_C14N),
            signature_method=xd.SignatureMethod(algorithm=ds.RSA_SHA256),
            reference=[xd.Reference(uri="", digest_method=xd.DigestMethod(algorithm=ds.SHA256),
                                    digest_value=xd.DigestValue(value=b""))],
        ),
        signature_value=xd.SignatureValue(value=b""),
    )


def header(*, sender_orgnr: str, receiver_orgnr: str, document_type: str,
           conversation_id: str, instance_identifier: str | None = None,
           created: dt.datetime | None = None) -> sbdh.StandardBusinessDocumentHeader:
    """SBDH as SDP profiles it (DIGEST 6.2): one Sender, one Receiver, BusinessScope."""
    when = created or dt.datetime.now(dt.UTC)
    return sbdh.StandardBusinessDocumentHeader(
        header_version=HEADER_VERSION,
        sender=[_partner(sender_orgnr)],
        receiver=[_partner(receiver_orgnr)],
        document_identification=sbdh.DocumentIdentification(
            standard=STANDARD,
            type_version=TYPE_VERSION,
            instance_identifier=instance_identifier or str(uuid.uuid4()),
            type_value=document_type,
            creation_date_and_time=XmlDateTime.from_datetime(when),
        ),
        business_scope=sbdh.BusinessScope(scope=[sbdh.Scope(
            type_value=CONVERSATION_ID_SCOPE, instance_identifier=conversation_id,
            identifier=STANDARD)]),
    )


def digital_post(forsendelse: Forsendelse, fingerprint: bytes) -> s.DigitalPost:
    """`sdp:digitalPost` for digital or physical post, with the package fingerprint."""
    return s.DigitalPost(
        signature=_placeholder_signature(),
        avsender=forsendelse.avsender,
        mottaker=forsendelse.mottaker,
        digital_post_info=forsendelse.digital_post_info,
        fysisk_post_info=forsendelse.fysisk_post_info,
        dokumentpakkefingeravtrykk=xd.ReferenceType(
            digest_method=xd.DigestMethod(algorithm=ds.SHA256),
            digest_value=xd.DigestValue(value=fingerprint)),
    )


def build_sbd(business_message: object, hdr: sbdh.StandardBusinessDocumentHeader,
              signer: SigningIdentity) -> SignedSbd:
    """Validate the SBD against the schemas, then sign it as a standalone document."""
    document = sbdh.StandardBusinessDocument(standard_business_document_header=hdr,
                                             other_element=business_message)
    try:
        unsigned = to_xml(document, ns_map=SBD_NS_MAP)
    except ValueError as exc:  # control characters, lone surrogates (found by property tests)
        raise InputError(f"a value cannot be written as XML: {exc}",
                         subject="StandardBusinessDocument") from exc
    root = parse(unsigned, what="StandardBusinessDocument")
    validate(root, what="StandardBusinessDocument (before signing)")
    sign_sbd(root, signer)
    xml = etree.tostring(root, xml_declaration=False, encoding="UTF-8")
    scope = hdr.business_scope.scope[0] if hdr.business_scope else None
    return SignedSbd(
        xml=xml,
        instance_identifier=hdr.document_identification.instance_identifier,
        conversation_id=scope.instance_identifier if scope else "",
        document_type=hdr.document_identification.type_value,
        created=hdr.document_identification.creation_date_and_time.to_datetime(),
    )


def build_digital_post_sbd(forsendelse: Forsendelse, fingerprint: bytes,
                           signer: SigningIdentity, *, created: dt.datetime | None = None,
                           instance_identifier: str | None = None) -> SignedSbd:
    """The signed SBD for a consignment. The SBDH Sender is the technical sender, who also
    signs (DIGEST 15 item 11); the Receiver is the mailbox or print provider (DIGEST 6.2)."""
    signer_orgnr = orgnr_of(signer.certificate)
    if signer_orgnr is not None and signer_orgnr != forsendelse.technical_sender_orgnr:
        raise SignerIdentityError(
            f"the signing certificate belongs to {signer_orgnr}, but the SBDH Sender is "
            f"{forsendelse.technical_sender_orgnr}; the broker requires them to be equal",
            subject=subject_of(signer.certificate))
    hdr = header(sender_orgnr=forsendelse.technical_sender_orgnr,
                 receiver_orgnr=forsendelse.receiver_orgnr, document_type="digitalPost",
                 conversation_id=forsendelse.conversation_id,
                 instance_identifier=instance_identifier, created=created)
    return build_sbd(digital_post(forsendelse, fingerprint), hdr, signer)


def sign_sbd(root: etree._Element, signer: SigningIdentity) -> None:
    """Replace the business message's placeholder ds:Signature with the real one."""
    if root.tag != _SBD or len(root) != 2:
        raise ProtocolError("expected an SBD with a header and one business message")
    message = root[1]
    old = message[0] if len(message) and message[0].tag == _SIG else None
    sig = ds.new_signature(ds_prefix="ds")
    if old is not None:
        message.replace(old, sig)
    else:
        message.insert(0, sig)
    signed_info = ds.add_signed_info(sig, c14n=ds.Transform(ds.EXC_C14N))
    transforms = (ds.Transform(ds.ENVELOPED_SIGNATURE),)
    template = ds.Reference("", ds.SHA256, b"", transforms)
    ds.add_reference(signed_info, uri="", transforms=transforms,
                     digest_value=ds.reference_digest(template, root, signature=sig))
    # Only the signer's certificate, as every example does (DIGEST 3.11).
    ds.add_key_info(sig, [signer.certificate])
    ds.add_signature_value(sig, signer.key)


def standalone_sbd(sbd_element: etree._Element) -> etree._Element:
    """The SBD taken out of its SOAP envelope as the document that was signed.

    A copy of a sub-element inherits the envelope's namespace declarations, and inclusive
    C14N would then digest them too. An embedded SBD declares everything it uses itself
    (it was signed standalone), so inherited declarations it does not use are dropped.
    """
    copy = etree.fromstring(etree.tostring(sbd_element))
    declared_inside: set[str] = set()
    for el in sbd_element.iter():
        parent = el.getparent()
        inherited = parent.nsmap if parent is not None else {}
        declared_inside.update(p or "" for p, uri in el.nsmap.items()
                               if inherited.get(p) != uri)
    etree.cleanup_namespaces(copy, keep_ns_prefixes=sorted(p for p in declared_inside if p))
    return copy


@dataclass(frozen=True)
class VerifiedSbd:
    """An SBD whose signature, signer chain and signer identity have been checked."""

    sbd: sbdh.StandardBusinessDocument
    message: object
    signer: x509.Certificate
    signer_orgnr: str | None
    sender_orgnr: str
    receiver_orgnr: str
    conversation_id: str
    instance_identifier: str
    document_type: str
    xml: bytes


def verify_sbd(sbd: bytes | etree._Element, *, trust: Sequence[x509.Certificate] | None,
               at: dt.datetime | None = None, intermediates: Sequence[x509.Certificate] = (),
               check_sender: bool = True) -> VerifiedSbd:
    """Verify the enveloped signature of an SBD, then parse it into typed objects.

    The signer must chain to `trust` at `at` (skipped only with trust=None, for
    diagnostics) and, with `check_sender`, carry the orgnr of the SBDH Sender
    (DIGEST 1.6, 10.3): a receipt signed by anyone else is refused.
    """
    root = standalone_sbd(sbd) if isinstance(sbd, etree._Element) else parse(
        sbd, what="StandardBusinessDocument")
    if root.tag != _SBD or len(root) != 2:
        raise ProtocolError("not an SBD with a header and exactly one business message",
                            subject=root.tag)
    message = root[1]
    signatures = [el for el in root.iter(_SIG)]
    if len(signatures) != 1 or signatures[0].getparent() is not message \
            or message.index(signatures[0]) != 0:
        raise SignatureError("expected exactly one ds:Signature, the first child of the "
                             "business message", subject=etree.QName(message).localname)
    sig = signatures[0]
    certs = ds.certificates_from_key_info(sig)
    if not certs:
        raise SignatureError("KeyInfo carries no certificate", subject="SBD signature")
    leaf = certs[0]
    info = ds.verify(sig, profile=ds.SBD_PROFILE, public_key=leaf.public_key(),
                     resolve=lambda ref: root)
    if len(info.references) != 1 or info.references[0].uri != "":
        raise SignatureError('the SBD signature must have one Reference with URI=""',
                             subject="SBD signature")
    if trust is not None:
        validate_path(leaf, [*certs[1:], *intermediates], trust, at or dt.datetime.now(dt.UTC))
    xml = etree.tostring(root)
    validate(root, what="StandardBusinessDocument")
    typed = from_xml(root, sbdh.StandardBusinessDocument, what="StandardBusinessDocument")
    hdr = typed.standard_business_document_header
    if hdr is None or not hdr.sender or not hdr.receiver or hdr.business_scope is None:
        raise ProtocolError("SBDH lacks Sender, Receiver or BusinessScope (DIGEST 6.1)")
    sender_orgnr = _orgnr(hdr.sender[0])
    signer_orgnr = orgnr_of(leaf)
    if check_sender and signer_orgnr != sender_orgnr:
        raise SignerIdentityError(
            f"signed by {signer_orgnr} but the SBDH Sender is {sender_orgnr}",
            subject=subject_of(leaf))
    scopes = [sc for sc in hdr.business_scope.scope if sc.type_value == CONVERSATION_ID_SCOPE]
    if len(scopes) != 1:
        raise ProtocolError("BusinessScope must hold exactly one ConversationId scope")
    return VerifiedSbd(
        sbd=typed, message=typed.other_element, signer=leaf, signer_orgnr=signer_orgnr,
        sender_orgnr=sender_orgnr, receiver_orgnr=_orgnr(hdr.receiver[0]),
        conversation_id=scopes[0].instance_identifier,
        instance_identifier=hdr.document_identification.instance_identifier,
        document_type=hdr.document_identification.type_value, xml=xml)


def _orgnr(partner: sbdh.Partner) -> str:
    if partner.identifier.authority not in (None, AUTHORITY, AUTHORITY_OLD):
        raise ProtocolError(f"unknown SBDH Identifier authority {partner.identifier.authority}")
    return parse_orgnr(partner.identifier.value, field="SBDH Identifier")


#: Receipt kinds by their element in sdp:kvittering (DIGEST 3.8); `feil` is its own root.
RECEIPT_KINDS = ("levering", "aapning", "mottak", "returpost", "varslingfeilet", "feil")


def receipt_sbd(*, kind: str, conversation_id: str, sender_orgnr: str, receiver_orgnr: str,
                signer: SigningIdentity, tidspunkt: dt.datetime | None = None,
                varslingskanal: str = "EPOST", beskrivelse: str | None = None,
                feiltype: str = "KLIENT", detaljer: str | None = None) -> SignedSbd:
    """A business receipt or error as the mailbox or print provider sends it (DIGEST 3.8,
    3.9, 6.3): Sender is the provider, Receiver the original technical sender, and the
    BusinessScope carries the consignment's conversation id."""
    when = XmlDateTime.from_datetime(tidspunkt or dt.datetime.now(dt.UTC))
    message: object
    if kind == "feil":
        message = s.Feil(signature=_placeholder_signature(), tidspunkt=when,
                         feiltype=s.Feiltype(feiltype), detaljer=detaljer)
    elif kind in RECEIPT_KINDS:
        k = s.Kvittering(signature=_placeholder_signature(), tidspunkt=when)
        if kind == "levering":
            k.levering = s.Levering()
        elif kind == "aapning":
            k.aapning = s.Aapning()
        elif kind == "mottak":
            k.mottak = s.Mottak()
        elif kind == "returpost":
            k.returpost = s.Returpost()
        else:
            k.varslingfeilet = s.Varslingfeilet(
                varslingskanal=s.Varslingskanal(varslingskanal), beskrivelse=beskrivelse)
        message = k
    else:
        raise InputError(f"unknown receipt kind; one of {', '.join(RECEIPT_KINDS)}",
                         subject=kind)
    hdr = header(sender_orgnr=sender_orgnr, receiver_orgnr=receiver_orgnr,
                 document_type="feil" if kind == "feil" else "kvittering",
                 conversation_id=conversation_id)
    return build_sbd(message, hdr, signer)
