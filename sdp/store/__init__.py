"""Durable record of every consignment, its state and its signed receipts.

The broker forgets: a receipt is deleted once confirmed, a consignment with an unknown
outcome exists only in our memory. The store is what lets the sender prove delivery (the
Leveringskvittering is the proof, DIGEST 3.8) and survive a crash without sending a letter
twice or losing a receipt. `SqliteStore` is the default; the `Store` protocol is kept
narrow so that a PostgreSQL implementation can follow with the same state machine
(`sdp.store.model`).

Durability protocol (what the client and the CLI do):

Sending (DIGEST 9.5, 11.1)::

    message_id = ebms.new_message_id()
    store.record_outgoing(message_id, f.conversation_id, recipient=recipient_of(f),
                          kind=ConsignmentKind.of(f), mpc=mpc)        # committed: SENDING
    try:
        result = client.send(f, message_id=message_id)
    except (OutcomeUnknownError, ConnectError, SignatureError):
        pass  # outcome unknown (an unverifiable answer proves nothing): stays pending,
              # resumed later with the SAME MessageId
    except SdpError as exc:  # definite: ebMS error, HTTP 4xx
        store.mark_send_failed(message_id, exc)                        # TRANSPORT_FAILED
    else:
        store.mark_sent(message_id, result.transport_receipt,
                        sbd_instance_identifier=result.sbd_instance_identifier,
                        fingerprint=result.fingerprint)                # SENT

After a restart, `pending_sends()` lists the sends to resume. `sdp.outbox.Outbox` does all
of this with `client.prepare` / `client.transmit`, keeping the prepared message on disk so a
resume sends the same bytes with the same MessageId; the broker de-duplicates on it, so a send
that did reach it is not delivered twice. A definite rejection is never retried as is; a
resend after TRANSPORT_FAILED is `record_outgoing` with a new MessageId for the same
conversation.

Receipts (DIGEST 8.1, 8.2)::

    for stored in store.unconfirmed_receipts():                    # after a restart
        client.confirm(stored.kvittering); store.mark_confirmed(stored.kvittering)
    while (k := client.pull()) is not None:                        # verified
        outcome = store.store_receipt(k)                           # committed first
        client.confirm(k)                                          # then acknowledged
        store.mark_confirmed(k)

A redelivered receipt (same SBD InstanceIdentifier or ebMS MessageId) comes back with
`outcome.duplicate` and changes nothing, but is still confirmed so the broker stops offering
it. A receipt for no known consignment is kept (`outcome.orphan`, `orphan_receipts()`).
Receipts move the state per `TRANSITIONS`; one arriving out of order is kept and the most
advanced state wins (`Effect.OUT_OF_ORDER`); a contradictory one is kept and flagged
(`Effect.CONFLICT`).
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sdp.identifiers import PersonNumber
from sdp.receipts import Kvittering
from sdp.store.model import (
    FINAL_STATES,
    MANUAL_STATES,
    RECEIPT_TARGET,
    TERMINAL_STATES,
    TRANSITIONS,
    ConsignmentKind,
    ConsignmentRecord,
    Effect,
    Event,
    ReceiptOutcome,
    SendRecord,
    State,
    StateTransitionError,
    StoreConfigurationError,
    StoredReceipt,
    StoreError,
    Transition,
    decide,
    recipient_of,
)
from sdp.store.protection import ProtectionMode, RecipientProtection
from sdp.store.sqlite import SCHEMA_VERSION, SqliteStore

if TYPE_CHECKING:
    from sdp.client import TransportReceipt

__all__ = [
    "FINAL_STATES",
    "MANUAL_STATES",
    "RECEIPT_TARGET",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "ConsignmentKind",
    "ConsignmentRecord",
    "Effect",
    "Event",
    "ProtectionMode",
    "ReceiptOutcome",
    "RecipientProtection",
    "SendRecord",
    "SqliteStore",
    "State",
    "StateTransitionError",
    "Store",
    "StoreConfigurationError",
    "StoreError",
    "StoredReceipt",
    "Transition",
    "decide",
    "open_store",
    "recipient_of",
]


class Store(Protocol):
    """What the client, the receipt loop and `sdp status` need from storage; nothing more."""

    def record_outgoing(self, message_id: str, conversation_id: str, *,
                        recipient: str | PersonNumber | None, kind: ConsignmentKind, mpc: str,
                        sbd_instance_identifier: str | None = None,
                        fingerprint: bytes | None = None) -> None: ...

    def mark_sent(self, message_id: str, transport_receipt: TransportReceipt, *,
                  sbd_instance_identifier: str | None = None,
                  fingerprint: bytes | None = None) -> None: ...

    def mark_send_failed(self, message_id: str, error: str | BaseException) -> None: ...

    def pending_sends(self) -> builtins.list[SendRecord]: ...

    def store_receipt(self, receipt: Kvittering) -> ReceiptOutcome: ...

    def mark_confirmed(self, receipt: Kvittering) -> None: ...

    def unconfirmed_receipts(self) -> builtins.list[StoredReceipt]: ...

    def orphan_receipts(self) -> builtins.list[StoredReceipt]: ...

    def transition(self, conversation_id: str, state: State, reason: str) -> None: ...

    def get(self, conversation_id: str) -> ConsignmentRecord | None: ...

    def list(self, state: State | None = None, *, limit: int = 100,
             offset: int = 0) -> builtins.list[ConsignmentRecord]: ...

    def find_by_recipient(self, recipient: str | PersonNumber, *,
                          limit: int = 100) -> builtins.list[ConsignmentRecord]: ...

    def timeline(self, conversation_id: str) -> builtins.list[Event]: ...

    def counts(self) -> dict[State, int]: ...

    def close(self) -> None: ...


def open_store(location: str | Path, *,
               protection: RecipientProtection | None = None) -> Store:
    """Open the store at `location`: a file path (SQLite); other schemes come later."""
    text = str(location)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
    elif "://" in text:
        raise StoreConfigurationError("only SQLite files are supported so far",
                                      subject=text.split("://", 1)[0])
    return SqliteStore(text, protection=protection)
