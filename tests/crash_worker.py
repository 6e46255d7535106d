"""The child process of `tests/test_crash.py`: a sender that may be SIGKILLed at any moment.

    python -m tests.crash_worker <work dir> <broker url> <batch size>

Every start does what a restarted sender does: resume the sends recorded but never
acknowledged, then send whichever consignments of the fixed batch the store does not know yet
(consignment i has the conversation id uuid5(BATCH, i), so a restart can tell which ones were
already recorded), then run the receipt loop until every consignment has all its receipts.
Exits 0 when the batch is complete. Prints "ready <units done>" once the store is open and
"step" after each further unit of work (a send acknowledged, a receipt stored and confirmed),
so the parent can place its kills by the work done rather than by the wall clock alone.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from cryptography import x509

from sdp.client import SdpClient
from sdp.consignment import Forsendelse, digital_post_info
from sdp.environment import Environment
from sdp.errors import OutcomeUnknownError, SignatureError
from sdp.keys import load_certificate, load_signing_identity
from sdp.outbox import Outbox, pull_receipts
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.receipts import Kind
from sdp.store import RecipientProtection, SqliteStore
from sdp.transport import ConnectError, RetryPolicy, Timeouts
from tests.conftest import MAILBOX_ORGNR, SENDER_ORGNR

#: Namespace of the batch's conversation ids.
BATCH = uuid.UUID("3f1c8f0e-5d7a-4c1b-9a43-0c3b2d9e8a61")
PASSWORD = b"crash-test"
STORE_KEY = b"c" * 32
#: Give up (exit 3) if the batch is not complete after this many seconds.
DEADLINE = 60.0


def conversation_id(i: int) -> str:
    return str(uuid.uuid5(BATCH, str(i)))


def wants_opening(i: int) -> bool:
    """Every other letter asks for an Aapningskvittering."""
    return i % 2 == 0


def expected_kinds(i: int) -> set[Kind]:
    return {Kind.LEVERING, Kind.AAPNING} if wants_opening(i) else {Kind.LEVERING}


def open_store(work: Path) -> SqliteStore:
    return SqliteStore(work / "store.sqlite", protection=RecipientProtection.hashed(STORE_KEY))


def _letter(i: int, mailbox_cert: x509.Certificate) -> Forsendelse:
    return Forsendelse(
        avsender=avsender(SENDER_ORGNR),
        hoveddokument=Document(f"%PDF-1.7 brev {i}".encode(), "brev.pdf", "application/pdf"),
        recipient_certificate=mailbox_cert,
        receiver_orgnr=MAILBOX_ORGNR, mottaker=mottaker("01043100358", "ola#1ABC"),
        digital_post_info=digital_post_info(f"Brev {i}", aapningskvittering=wants_opening(i)),
        conversation_id=conversation_id(i))


def total_units(count: int) -> int:
    """Units of work in a batch: one per send, one per receipt."""
    return sum(1 + len(expected_kinds(i)) for i in range(count))


def units_done(store: SqliteStore, count: int) -> int:
    done = 0
    for i in range(count):
        record = store.get(conversation_id(i))
        if record is not None:
            done += any(s.status == "sent" for s in record.sends)
            done += sum(r.confirmed_at is not None for r in record.receipts)
    return done


def complete(store: SqliteStore, count: int) -> bool:
    """Every consignment has all of its receipts, and none waits for confirmation."""
    if store.pending_sends() or store.unconfirmed_receipts():
        return False
    for i in range(count):
        record = store.get(conversation_id(i))
        if record is None or {r.kvittering.kind for r in record.receipts} != expected_kinds(i):
            return False
    return True


def step(*_: object) -> None:
    print("step", flush=True)


def main(argv: list[str]) -> int:
    work, url, count = Path(argv[0]), argv[1], int(argv[2])
    signer = load_signing_identity(work / "sender.p12", PASSWORD)
    env = Environment.custom(url, [load_certificate(work / "ca.pem"),
                                   load_certificate(work / "intermediate.pem")])
    mailbox_cert = load_certificate(work / "mailbox.pem")
    retry = RetryPolicy(max_attempts=5, initial_backoff=0.02, max_backoff=0.2, jitter=0)
    started = time.monotonic()
    with open_store(work) as store, SdpClient(env, signer, retry=retry,
                                             timeouts=Timeouts(connect=2, read=10)) as client:
        print(f"ready {units_done(store, count)}", flush=True)
        outbox = Outbox(client, store, work / "outbox")
        for _ in outbox.resume():
            step()
        for i in range(count):
            if store.get(conversation_id(i)) is not None:
                continue  # recorded by an earlier run: resumed above if still pending
            try:
                outbox.send(_letter(i, mailbox_cert))
                step()
            except (OutcomeUnknownError, ConnectError, SignatureError):
                pass  # pending: resumed below
        while not complete(store, count):
            if time.monotonic() - started > DEADLINE:
                print("deadline passed with the batch incomplete", file=sys.stderr)
                return 3
            pull_receipts(client, store, on_receipt=step)
            outbox.resume()
            time.sleep(0.05)  # a leased receipt comes back after the invisibility window
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
