"""Typed business receipts (kvitteringer) and errors (feil), built only from verified SBDs.

A receipt object exists only after both signatures were checked: the broker's WS-Security
signature on the envelope and the mailbox or print provider's signature on the SBD (DIGEST
3.8, 3.9, 8.1). It keeps the exact signed bytes for archiving (the Leveringskvittering is the
sender's proof of delivery) and everything needed to confirm it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from xsdata.models.datatype import XmlDateTime

from sdp.ebms import NonRepudiationReference
from sdp.errors import ProtocolError
from sdp.message import VerifiedSbd
from sdp_bindings import sdp as s


class Kind(Enum):
    """What happened, in the spec's words (DIGEST 3.8, 3.9)."""

    LEVERING = "Leveringskvittering"
    AAPNING = "Aapningskvittering"
    MOTTAK = "Mottakskvittering"
    RETURPOST = "Returpostkvittering"
    VARSLINGFEILET = "VarslingfeiletKvittering"
    FEIL = "Feil"


@dataclass(frozen=True)
class Kvittering:
    """A verified business receipt or error, tied to its consignment by conversation id.

    `message_id` is the ebMS MessageId of the pulled UserMessage (what `confirm` refers to);
    `sbd_instance_identifier` identifies the receipt itself and is the de-duplication key
    for re-delivered receipts (DIGEST 8.2).
    """

    kind: Kind
    tidspunkt: dt.datetime
    conversation_id: str
    sbd_instance_identifier: str
    message_id: str
    ref_to_message_id: str | None
    mpc: str
    sender_orgnr: str
    signer: x509.Certificate
    #: The SBD exactly as signed by the mailbox or print provider, for archiving.
    sbd_xml: bytes
    #: The whole SOAP envelope as received, with the broker's signature.
    envelope_xml: bytes
    #: The broker's signed references, repeated in the confirming eb:Receipt (DIGEST 8.1).
    signed_references: tuple[NonRepudiationReference, ...]
    #: VarslingfeiletKvittering: the channel (`EPOST` or `SMS`) and description.
    varslingskanal: str | None = None
    beskrivelse: str | None = None
    #: Feil: `KLIENT` or `SERVER`, and the free-text details.
    feiltype: str | None = None
    detaljer: str | None = None

    @property
    def is_error(self) -> bool:
        return self.kind is Kind.FEIL

    @property
    def is_final(self) -> bool:
        """Whether the consignment's fate is settled by this receipt (DIGEST 11.1)."""
        return self.kind in (Kind.LEVERING, Kind.FEIL, Kind.RETURPOST, Kind.AAPNING)


def _tidspunkt(value: XmlDateTime, subject: str) -> dt.datetime:
    try:
        return value.to_datetime()
    except ValueError as exc:  # xs:dateTime allows years Python cannot hold (found by fuzzing)
        raise ProtocolError(f"tidspunkt out of range: {exc}", subject=subject) from None


def from_verified(sbd: VerifiedSbd, *, message_id: str, ref_to_message_id: str | None,
                  mpc: str, envelope_xml: bytes,
                  signed_references: tuple[NonRepudiationReference, ...]) -> Kvittering:
    """Turn a verified SBD carrying `sdp:kvittering` or `sdp:feil` into a typed receipt."""
    msg = sbd.message

    def make(kind: Kind, when: dt.datetime, **extra: str | None) -> Kvittering:
        return Kvittering(
            kind, when, conversation_id=sbd.conversation_id,
            sbd_instance_identifier=sbd.instance_identifier, message_id=message_id,
            ref_to_message_id=ref_to_message_id, mpc=mpc, sender_orgnr=sbd.sender_orgnr,
            signer=sbd.signer, sbd_xml=sbd.xml, envelope_xml=envelope_xml,
            signed_references=signed_references, **extra)

    if isinstance(msg, s.Kvittering):
        when = _tidspunkt(msg.tidspunkt, sbd.instance_identifier)
        if msg.levering is not None:
            return make(Kind.LEVERING, when)
        if msg.aapning is not None:
            return make(Kind.AAPNING, when)
        if msg.mottak is not None:
            return make(Kind.MOTTAK, when)
        if msg.returpost is not None:
            return make(Kind.RETURPOST, when)
        if msg.varslingfeilet is not None:
            return make(Kind.VARSLINGFEILET, when,
                        varslingskanal=msg.varslingfeilet.varslingskanal.value,
                        beskrivelse=msg.varslingfeilet.beskrivelse)
        raise ProtocolError("sdp:kvittering of no known kind", subject=sbd.instance_identifier)
    if isinstance(msg, s.Feil):
        return make(Kind.FEIL, _tidspunkt(msg.tidspunkt, sbd.instance_identifier),
                    feiltype=msg.feiltype.value, detaljer=msg.detaljer)
    raise ProtocolError(f"a pulled message must carry sdp:kvittering or sdp:feil, not "
                        f"{type(msg).__name__}", subject=sbd.instance_identifier)
