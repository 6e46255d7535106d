"""What the store records, and the sender state machine, independent of any database.

Everything here is pure: the transition table and the rule that turns a business receipt
into a state change are shared by every `Store` implementation (SQLite now, PostgreSQL
later), so both apply receipts identically.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from sdp.ebms import NonRepudiationReference
from sdp.errors import ConfigurationError, SdpError
from sdp.receipts import Kind, Kvittering

if TYPE_CHECKING:
    from sdp.consignment import Forsendelse


# --- errors ----------------------------------------------------------------------------------


class StoreError(SdpError):
    """The store cannot do what was asked: unknown id, inconsistent data, unusable file."""


class StateTransitionError(StoreError):
    """A transition the sender state machine does not allow (DIGEST 11.1)."""


class StoreConfigurationError(StoreError, ConfigurationError):
    """Missing or wrong store key, or a protection mode that differs from the file's."""


# --- states ----------------------------------------------------------------------------------


class State(Enum):
    """The sender's view of one consignment (DIGEST 11.1, with its practical mapping).

    `SENDING` is "Start" made durable: recorded before the first byte goes out, so that an
    interrupted send is resumed with the same MessageId (DIGEST 9.5).
    """

    SENDING = "SENDING"
    SENT = "SENT"  # Sendt: the MF's transport receipt (eb:Receipt) was verified
    TRANSPORT_FAILED = "TRANSPORT_FAILED"  # Transportfeil: definitely rejected, resend
    ACCEPTED_FOR_PRINT = "ACCEPTED_FOR_PRINT"  # Mottakskvittering from the print provider
    DELIVERED = "DELIVERED"  # Sending OK: Leveringskvittering (digital) / posted (print)
    OPENED = "OPENED"  # Melding åpnet: Aapningskvittering
    RETURNED = "RETURNED"  # Returpostkvittering: came back and was shredded
    FAILED = "FAILED"  # Feil registrert: an sdp:feil from the mailbox or print provider
    OVERDUE = "OVERDUE"  # Feil registrert: "Kvittering mangler", set by the sender's timer
    DEVIATION = "DEVIATION"  # Avvikshåndtering
    CLOSED = "CLOSED"  # Melding avsluttet


class ConsignmentKind(Enum):
    DIGITAL = "digital"
    PHYSICAL = "physical"

    @classmethod
    def of(cls, forsendelse: Forsendelse) -> ConsignmentKind:
        return cls.DIGITAL if forsendelse.is_digital else cls.PHYSICAL


S = State

#: Every allowed transition (DIGEST 11.1). Receipts may arrive in any order because pulling
#: runs in parallel (DIGEST 8.2), so a later stage may be entered directly: an opening
#: implies delivery, a return implies posting. The initial `None -> SENDING` is
#: `record_outgoing`.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.SENDING: frozenset({S.SENT, S.TRANSPORT_FAILED}),
    S.SENT: frozenset({S.ACCEPTED_FOR_PRINT, S.DELIVERED, S.OPENED, S.RETURNED, S.FAILED,
                       S.OVERDUE}),
    # Transportfeil -> Sendt is a resend: a new ebMS message with a new MessageId (DIGEST 9.5).
    S.TRANSPORT_FAILED: frozenset({S.SENDING, S.DEVIATION, S.CLOSED}),
    S.ACCEPTED_FOR_PRINT: frozenset({S.DELIVERED, S.RETURNED, S.FAILED, S.OVERDUE}),
    # A late receipt after the sender's timer fired is still the truth (DIGEST 9.5, 11.10).
    S.OVERDUE: frozenset({S.ACCEPTED_FOR_PRINT, S.DELIVERED, S.OPENED, S.RETURNED, S.FAILED,
                          S.DEVIATION, S.CLOSED}),
    S.DELIVERED: frozenset({S.OPENED, S.RETURNED, S.DEVIATION, S.CLOSED}),
    S.OPENED: frozenset({S.DEVIATION, S.CLOSED}),
    S.RETURNED: frozenset({S.DEVIATION, S.CLOSED}),
    # Feil registrert: handle as a deviation, never resend as is (DIGEST 3.9, 11.1).
    S.FAILED: frozenset({S.DEVIATION, S.CLOSED}),
    S.DEVIATION: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}

#: The outcome is known; a later receipt can only add detail (cf. `Kvittering.is_final`).
FINAL_STATES: frozenset[State] = frozenset(
    {S.DELIVERED, S.OPENED, S.RETURNED, S.FAILED, S.CLOSED})
#: No transition leaves these.
TERMINAL_STATES: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: States the sender sets by hand (timer, deviation handling); the rest need proof: a
#: transport receipt or a signed business receipt.
MANUAL_STATES: frozenset[State] = frozenset({S.OVERDUE, S.DEVIATION, S.CLOSED})

#: Which state each business receipt proves (DIGEST 3.8, 3.9). A VarslingfeiletKvittering
#: changes none: the post stays available whatever happens to the notice (DIGEST 3.8, 11.1).
RECEIPT_TARGET: dict[Kind, State | None] = {
    Kind.MOTTAK: S.ACCEPTED_FOR_PRINT,
    Kind.LEVERING: S.DELIVERED,
    Kind.AAPNING: S.OPENED,
    Kind.RETURPOST: S.RETURNED,
    Kind.FEIL: S.FAILED,
    Kind.VARSLINGFEILET: None,
}

#: The success path per kind of post, to tell a late receipt (an earlier stage arriving after
#: a later one) from a contradiction (DIGEST 1.3, 1.4, 8.2).
PROGRESS: dict[ConsignmentKind, tuple[State, ...]] = {
    ConsignmentKind.DIGITAL: (S.SENT, S.DELIVERED, S.OPENED),
    ConsignmentKind.PHYSICAL: (S.SENT, S.ACCEPTED_FOR_PRINT, S.DELIVERED, S.RETURNED),
}

#: Receipts only one kind of post gets: opening from a mailbox, returns from print.
_ONLY_FOR: dict[State, ConsignmentKind] = {
    S.OPENED: ConsignmentKind.DIGITAL,
    S.ACCEPTED_FOR_PRINT: ConsignmentKind.PHYSICAL,
    S.RETURNED: ConsignmentKind.PHYSICAL,
}


def check_transition(current: State | None, target: State) -> None:
    """Raise unless the table allows `current -> target`."""
    allowed = frozenset({S.SENDING}) if current is None else TRANSITIONS[current]
    if target not in allowed:
        name = current.value if current else "(new)"
        raise StateTransitionError(f"{name} -> {target.value} is not allowed; from {name}: "
                                   f"{', '.join(sorted(s.value for s in allowed)) or 'none'}",
                                   subject="state")


class Effect(Enum):
    """What a stored business receipt did to its consignment."""

    APPLIED = "applied"  # moved the state
    RECORDED = "recorded"  # kept, no change meant (Varslingfeilet, repeat, after closing)
    OUT_OF_ORDER = "out_of_order"  # an earlier stage after a later one: state kept
    CONFLICT = "conflict"  # contradicts the state or kind of post: state kept, review it
    ORPHAN = "orphan"  # no consignment has its conversation id


@dataclass(frozen=True)
class Decision:
    new_state: State | None
    effect: Effect
    note: str


def decide(current: State, receipt: Kind, kind: ConsignmentKind) -> Decision:
    """Turn a receipt into a state change, or explain why the state is kept.

    Never refuses: the receipt is signed evidence and is always kept; the most advanced
    state wins when receipts arrive out of order (DIGEST 8.2: parallel pulls, redelivery).
    `current` is never SENDING here: a receipt first implies SENT (the MF accepted it).
    """
    target = RECEIPT_TARGET[receipt]
    if target is None:
        return Decision(None, Effect.RECORDED,
                        "notification failed; the post stays available (DIGEST 3.8)")
    only = _ONLY_FOR.get(target)
    if only is not None and only is not kind:
        if receipt is Kind.MOTTAK:
            # The XSD note lets a mailbox send mottak too (DIGEST 3.8): informational.
            return Decision(None, Effect.RECORDED, "Mottakskvittering for digital post")
        return Decision(None, Effect.CONFLICT, f"{receipt.value} is not expected for "
                                               f"{kind.value} post; state kept")
    if current is target:
        return Decision(None, Effect.RECORDED, f"repeats {current.value}")
    if current in (S.DEVIATION, S.CLOSED):
        return Decision(None, Effect.RECORDED, f"arrived after {current.value}; kept")
    if target in TRANSITIONS[current]:
        return Decision(target, Effect.APPLIED, receipt.value)
    path = PROGRESS[kind]
    if current in path and target in path and path.index(target) < path.index(current):
        return Decision(None, Effect.OUT_OF_ORDER,
                        f"{receipt.value} arrived after {current.value}; state kept")
    return Decision(None, Effect.CONFLICT,
                    f"{receipt.value} contradicts {current.value}; state kept, review it")


def recipient_of(forsendelse: Forsendelse) -> str:
    """The personal datum that identifies the recipient, to be protected by the store:
    the personidentifikator (digital) or name and postal address (physical)."""
    if forsendelse.mottaker is not None:
        person = forsendelse.mottaker.person
        return person.personidentifikator or person.postkasseadresse or ""
    assert forsendelse.fysisk_post_info is not None
    addr = forsendelse.fysisk_post_info.mottaker
    if addr.norsk_adresse is not None:
        where = f"{addr.norsk_adresse.postnummer} {addr.norsk_adresse.poststed}"
    elif addr.utenlandsk_adresse is not None:
        where = addr.utenlandsk_adresse.landkode or addr.utenlandsk_adresse.land or ""
    else:
        where = ""
    return f"{addr.navn}, {where}"


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendRecord:
    """One ebMS UserMessage carrying the consignment (a resend gets a new one, DIGEST 9.5).

    `status`: `pending` (recorded, not acknowledged), `sent`, or `failed`. The transport
    receipt is kept as the broker's exact signed envelope plus its parsed fields (DIGEST 7.5).
    """

    message_id: str
    conversation_id: str
    sbd_instance_identifier: str | None
    fingerprint: bytes | None
    mpc: str
    kind: ConsignmentKind
    status: str
    created_at: dt.datetime
    error: str | None = None
    receipt_message_id: str | None = None
    receipt_timestamp: dt.datetime | None = None
    receipt_signer_orgnr: str | None = None
    receipt_references: tuple[NonRepudiationReference, ...] = ()
    receipt_envelope_xml: bytes | None = None


@dataclass(frozen=True)
class Transition:
    """One row of a consignment's state history."""

    at: dt.datetime
    from_state: State | None
    to_state: State
    reason: str
    message_id: str | None = None
    receipt_id: int | None = None


@dataclass(frozen=True)
class StoredReceipt:
    """A business receipt as stored: `kvittering` rebuilt from the exact signed bytes and
    parsed fields, ready to be confirmed again after a restart (DIGEST 8.1)."""

    id: int
    kvittering: Kvittering
    received_at: dt.datetime
    confirmed_at: dt.datetime | None
    effect: Effect
    note: str

    @property
    def orphan(self) -> bool:
        return self.effect is Effect.ORPHAN


@dataclass(frozen=True)
class ReceiptOutcome:
    """What `store_receipt` did. With `duplicate` nothing was written: the same receipt
    (by SBD InstanceIdentifier or ebMS MessageId) was stored before (DIGEST 8.2)."""

    receipt_id: int
    duplicate: bool
    orphan: bool
    effect: Effect
    state_before: State | None
    state_after: State | None
    note: str


@dataclass(frozen=True)
class ConsignmentRecord:
    """One consignment with everything known about it.

    `recipient` is readable only under `encrypt` or `plain` protection; under `hash` it is
    None and the person can only be looked up, not read back.
    """

    conversation_id: str
    kind: ConsignmentKind
    mpc: str
    state: State
    created_at: dt.datetime
    updated_at: dt.datetime
    recipient: str | None
    notification_failures: int
    sends: tuple[SendRecord, ...] = ()
    history: tuple[Transition, ...] = ()
    receipts: tuple[StoredReceipt, ...] = ()

    @property
    def message_id(self) -> str:
        """The MessageId of the latest send: the one a resumed send must reuse."""
        return self.sends[-1].message_id

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class Event:
    """One line of `sdp status`: a state change or a receipt, in the order they happened."""

    at: dt.datetime
    what: str  # "state" or "receipt"
    state: State | None
    detail: str
