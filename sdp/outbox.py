"""Durable sending and the receipt loop: the client and the store, in the order that loses
nothing.

Sending: prepare (package + signed SBD + ids, written to the outbox folder) -> record in the
store (committed, state SENDING) -> transmit -> mark sent or failed. A process killed at any
point resumes from the outbox with the same MessageId and the same bytes, and the broker
de-duplicates (DIGEST 9.5). Receipts: pull -> verify -> store (committed) -> confirm ->
mark confirmed; a receipt stored but not confirmed is confirmed after a restart.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdp import ebms
from sdp.client import Prepared, SdpClient, SendResult
from sdp.consignment import Forsendelse
from sdp.errors import OutcomeUnknownError, SdpError, SignatureError
from sdp.receipts import Kvittering
from sdp.store import ConsignmentKind, ReceiptOutcome, Store, recipient_of
from sdp.transport import ConnectError

log = logging.getLogger("sdp.outbox")


class Outbox:
    """Sends consignments so that a crash never loses or duplicates one."""

    def __init__(self, client: SdpClient, store: Store, folder: Path) -> None:
        self.client = client
        self.store = store
        self.folder = folder

    def send(self, forsendelse: Forsendelse) -> SendResult:
        """Prepare, record, transmit. Raises the client's error after recording the outcome:
        a definite rejection marks the send failed; an unknown outcome or an answer that
        fails verification leaves it pending."""
        message_id = ebms.new_message_id()
        prepared = self.client.prepare(forsendelse, self.folder / message_id,
                                       message_id=message_id)
        self.store.record_outgoing(
            message_id, prepared.conversation_id, recipient=recipient_of(forsendelse),
            kind=ConsignmentKind.of(forsendelse), mpc=prepared.mpc,
            sbd_instance_identifier=prepared.sbd_instance_identifier,
            fingerprint=prepared.fingerprint)
        return self._transmit(prepared)

    def resume(self) -> list[SendResult]:
        """Transmit every send recorded but not acknowledged (after a crash or a network
        outage), each with its original MessageId and bytes."""
        done: list[SendResult] = []
        for pending in self.store.pending_sends():
            folder = self.folder / pending.message_id
            if not (folder / "prepared.json").exists():
                log.error("pending send %s has no prepared message in %s; cannot resume",
                          pending.message_id, folder)
                continue
            try:
                done.append(self._transmit(Prepared.load(folder)))
            except (OutcomeUnknownError, ConnectError, SignatureError):
                log.warning("send %s still has no answer; will try again", pending.message_id)
        self._remove_settled()
        return done

    def _remove_settled(self) -> None:
        """Delete prepared messages whose send the store has settled some other way: a
        business receipt proved it was sent although its transport receipt never came. A
        folder without a store record is left alone: its send may be being recorded now."""
        if not self.folder.is_dir():
            return
        for meta in self.folder.glob("*/prepared.json"):
            try:
                prepared = Prepared.load(meta.parent)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            record = self.store.get(prepared.conversation_id)
            send = next((x for x in record.sends if x.message_id == prepared.message_id),
                        None) if record else None
            if send is not None and send.status != "pending":
                shutil.rmtree(meta.parent, ignore_errors=True)

    def _transmit(self, prepared: Prepared) -> SendResult:
        try:
            result = self.client.transmit(prepared)
        except (OutcomeUnknownError, ConnectError):
            raise  # stays pending, resumed later with the same MessageId
        except SignatureError:
            # An answer that fails verification (untrusted, expired or wrong-orgnr signer, a
            # receipt for something else) is no answer: the broker may well have accepted
            # the message, so it is not a rejection. It stays pending: a resend with the same
            # MessageId is de-duplicated, and a signed business receipt proves it was sent.
            raise
        except SdpError as exc:
            self.store.mark_send_failed(prepared.message_id, exc)
            shutil.rmtree(prepared.folder, ignore_errors=True)
            raise
        self.store.mark_sent(prepared.message_id, result.transport_receipt,
                             sbd_instance_identifier=result.sbd_instance_identifier,
                             fingerprint=result.fingerprint)
        shutil.rmtree(prepared.folder, ignore_errors=True)
        return result


@dataclass
class PullSummary:
    """What one run of the receipt loop did."""

    by_kind: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    orphans: int = 0
    reconfirmed: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def pull_receipts(
    client: SdpClient,
    store: Store,
    *,
    priority: bool = False,
    mpc_id: str | None = None,
    limit: int | None = None,
    on_receipt: Callable[[Kvittering, ReceiptOutcome], None] | None = None,
) -> PullSummary:
    """Empty the queue once: pull -> verify -> store -> confirm, until EBMS:0006 or `limit`.

    Each receipt is confirmed in the same message as the next PullRequest (DIGEST 8.4),
    halving the round trips; it is marked confirmed once that message was answered. The
    last one is confirmed on its own. Receipts stored earlier but never confirmed (a crash
    between the two) are confirmed first, so the broker stops offering them.
    """
    summary = PullSummary()
    for stored in store.unconfirmed_receipts():
        client.confirm(stored.kvittering)
        store.mark_confirmed(stored.kvittering)
        summary.reconfirmed += 1
    previous: Kvittering | None = None
    while limit is None or summary.total < limit:
        receipt = client.pull(priority=priority, mpc_id=mpc_id, confirm=previous)
        if previous is not None:
            store.mark_confirmed(previous)
            previous = None
        if receipt is None:
            break
        outcome = store.store_receipt(receipt)  # committed before the broker forgets it
        previous = receipt
        summary.by_kind[receipt.kind.value] += 1
        summary.duplicates += outcome.duplicate
        summary.orphans += outcome.orphan
        if on_receipt is not None:
            on_receipt(receipt, outcome)
    if previous is not None:  # stopped by `limit`: nothing left to carry the confirmation
        client.confirm(previous)
        store.mark_confirmed(previous)
    return summary
