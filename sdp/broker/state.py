"""The simulator's durable state: received messages, consignments and receipt queues.

One SQLite file (stdlib sqlite3, WAL, synchronous=FULL) so that a restart loses nothing: a
transport receipt is only sent after the message, its consignment and every receipt it will
produce are committed in one transaction; a pulled receipt is leased (hidden) in a committed
transaction before it is sent, and deleted from the queue only by the sender's eb:Receipt
(DIGEST 8.2). Times are seconds since the epoch on the broker's (injectable) clock.

No personal data is stored: rules are matched when a consignment arrives, so the SBD and
the recipient's identifiers are not needed afterwards.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BrokerState", "NewConsignment", "NewReceipt", "QueuedReceipt", "StoredMessage"]

DB_NAME = "broker.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id      TEXT PRIMARY KEY,
    sender_orgnr    TEXT NOT NULL,
    received_at     REAL NOT NULL,
    response        BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consignments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL UNIQUE REFERENCES messages(message_id),
    conversation_id TEXT NOT NULL,
    sbd_instance_id TEXT NOT NULL,
    sender_orgnr    TEXT NOT NULL,
    avsender_orgnr  TEXT NOT NULL,
    receiver_orgnr  TEXT NOT NULL,
    digital         INTEGER NOT NULL,
    mpc             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    package_status  TEXT NOT NULL,
    received_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    consignment_id  INTEGER NOT NULL REFERENCES consignments(id),
    recipient_orgnr TEXT NOT NULL,
    mpc             TEXT NOT NULL,
    kind            TEXT NOT NULL,
    instance_id     TEXT NOT NULL,
    sbd             BLOB NOT NULL,
    available_at    REAL NOT NULL,
    hidden_until    REAL,
    deliveries      INTEGER NOT NULL DEFAULT 0,
    confirmed_at    REAL
);
CREATE INDEX IF NOT EXISTS receipts_queue
    ON receipts (recipient_orgnr, mpc, confirmed_at, available_at, id);
CREATE TABLE IF NOT EXISTS deliveries (
    message_id      TEXT PRIMARY KEY,
    receipt_id      INTEGER NOT NULL REFERENCES receipts(id),
    pull_message_id TEXT NOT NULL,
    delivered_at    REAL NOT NULL
);
"""


@dataclass(frozen=True)
class StoredMessage:
    message_id: str
    sender_orgnr: str
    response: bytes


@dataclass(frozen=True)
class NewConsignment:
    conversation_id: str
    sbd_instance_id: str
    sender_orgnr: str
    avsender_orgnr: str
    receiver_orgnr: str
    digital: bool
    mpc: str
    fingerprint: str
    #: "ok", or the feil detaljer the package earned ("Kan ikke dekryptere", ...).
    package_status: str


@dataclass(frozen=True)
class NewReceipt:
    kind: str
    instance_id: str
    sbd: bytes
    available_at: float


@dataclass(frozen=True)
class QueuedReceipt:
    """A receipt as the queue holds it; `message_id` is set when it was just leased."""

    id: int
    consignment_id: int
    recipient_orgnr: str
    mpc: str
    kind: str
    instance_id: str
    sbd: bytes
    available_at: float
    hidden_until: float | None
    deliveries: int
    confirmed_at: float | None
    message_id: str | None = None


class BrokerState:
    """Thread-safe access to the SQLite file; every public method is one transaction."""

    def __init__(self, data_dir: str | Path | None) -> None:
        """`None` keeps everything in memory (tests and throw-away runs)."""
        if data_dir is None:
            target = ":memory:"
        else:
            directory = Path(data_dir)
            directory.mkdir(parents=True, exist_ok=True)
            target = str(directory / DB_NAME)
        self.path = target
        self._lock = threading.Lock()
        # One connection guarded by a lock: the handler threads share it, and SQLite
        # serialises writers anyway. isolation_level=None: we issue BEGIN ourselves.
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- messages and consignments ------------------------------------------------------

    def find_message(self, message_id: str) -> StoredMessage | None:
        with self._tx() as db:
            row = db.execute("SELECT message_id, sender_orgnr, response FROM messages "
                             "WHERE message_id = ?", (message_id,)).fetchone()
        return None if row is None else StoredMessage(row[0], row[1], bytes(row[2]))

    def accept(self, message_id: str, sender_orgnr: str, response: bytes, now: float,
               consignment: NewConsignment, receipts: Sequence[NewReceipt]
               ) -> tuple[StoredMessage, bool]:
        """Store a message with its answer, consignment and receipts, all or nothing.

        If the MessageId is already known (a concurrent or late duplicate), nothing is
        written and the stored message comes back with `False` (DIGEST 9.5, 14 item 5).
        """
        with self._tx() as db:
            row = db.execute("SELECT message_id, sender_orgnr, response FROM messages "
                             "WHERE message_id = ?", (message_id,)).fetchone()
            if row is not None:
                return StoredMessage(row[0], row[1], bytes(row[2])), False
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)",
                       (message_id, sender_orgnr, now, response))
            c = consignment
            cur = db.execute(
                "INSERT INTO consignments (message_id, conversation_id, sbd_instance_id, "
                "sender_orgnr, avsender_orgnr, receiver_orgnr, digital, mpc, fingerprint, "
                "package_status, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (message_id, c.conversation_id, c.sbd_instance_id, c.sender_orgnr,
                 c.avsender_orgnr, c.receiver_orgnr, int(c.digital), c.mpc, c.fingerprint,
                 c.package_status, now))
            consignment_id = cur.lastrowid
            db.executemany(
                "INSERT INTO receipts (consignment_id, recipient_orgnr, mpc, kind, "
                "instance_id, sbd, available_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(consignment_id, c.sender_orgnr, c.mpc, r.kind, r.instance_id, r.sbd,
                  r.available_at) for r in receipts])
        return StoredMessage(message_id, sender_orgnr, response), True

    # --- the queue (DIGEST 8.2) ---------------------------------------------------------

    def lease_next(self, recipient_orgnr: str, mpc: str, now: float, window: float,
                   message_id: str, pull_message_id: str,
                   retention: float | None = None) -> QueuedReceipt | None:
        """The oldest visible, unconfirmed receipt for this sender and MPC, hidden for
        `window` seconds under the new ebMS `message_id`; None when there is none.

        Receipts older than `retention` seconds are dropped first (DIGEST 14 item 10).
        """
        with self._tx() as db:
            if retention is not None:
                db.execute("DELETE FROM deliveries WHERE receipt_id IN (SELECT id FROM "
                           "receipts WHERE mpc = ? AND available_at < ?)",
                           (mpc, now - retention))
                db.execute("DELETE FROM receipts WHERE mpc = ? AND available_at < ?",
                           (mpc, now - retention))
            row = db.execute(
                "SELECT * FROM receipts WHERE recipient_orgnr = ? AND mpc = ? "
                "AND confirmed_at IS NULL AND available_at <= ? "
                "AND (hidden_until IS NULL OR hidden_until <= ?) "
                "ORDER BY available_at, id LIMIT 1",
                (recipient_orgnr, mpc, now, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE receipts SET hidden_until = ?, deliveries = deliveries + 1 "
                       "WHERE id = ?", (now + window, row["id"]))
            db.execute("INSERT INTO deliveries VALUES (?, ?, ?, ?)",
                       (message_id, row["id"], pull_message_id, now))
        leased = _queued(row)
        return QueuedReceipt(**{**leased.__dict__, "hidden_until": now + window,
                                "deliveries": leased.deliveries + 1,
                                "message_id": message_id})

    def confirm(self, message_id: str, sender_orgnr: str, now: float) -> bool:
        """Take a delivered receipt off the queue for good: any of its deliveries' MessageIds
        counts (a late confirmation of an earlier delivery still proves receipt)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT r.id FROM deliveries d JOIN receipts r ON r.id = d.receipt_id "
                "WHERE d.message_id = ? AND r.recipient_orgnr = ?",
                (message_id, sender_orgnr)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE receipts SET confirmed_at = COALESCE(confirmed_at, ?) "
                       "WHERE id = ?", (now, row[0]))
        return True

    # --- inspection (tests, `sdp broker` diagnostics) -----------------------------------

    def consignment_count(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT COUNT(*) FROM consignments").fetchone()[0])

    def consignments(self) -> list[dict[str, object]]:
        with self._tx() as db:
            return [dict(r) for r in db.execute("SELECT * FROM consignments ORDER BY id")]

    def receipts(self) -> list[QueuedReceipt]:
        with self._tx() as db:
            return [_queued(r) for r in db.execute("SELECT * FROM receipts ORDER BY id")]


def _queued(row: sqlite3.Row) -> QueuedReceipt:
    return QueuedReceipt(
        id=row["id"], consignment_id=row["consignment_id"],
        recipient_orgnr=row["recipient_orgnr"], mpc=row["mpc"], kind=row["kind"],
        instance_id=row["instance_id"], sbd=bytes(row["sbd"]),
        available_at=row["available_at"], hidden_until=row["hidden_until"],
        deliveries=row["deliveries"], confirmed_at=row["confirmed_at"])
