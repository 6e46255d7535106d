"""The SQLite store: one file, safe for the sender and the receipt loop at the same time.

Durability settings and why:

- WAL journal: readers never block the writer, so `sdp status` can run during a send.
- `synchronous=FULL`: a commit is on disk before `record_outgoing` or `store_receipt`
  returns. The durability protocol (see `sdp.store`) relies on exactly that: a receipt is
  confirmed to the broker only after its commit (DIGEST 8.1).
- Every write is one `BEGIN IMMEDIATE` transaction: it takes the write lock up front, so
  two writers queue on the busy timeout instead of failing with "database is locked" when a
  read lock would have to be upgraded. A process killed mid-transaction leaves nothing
  behind; SQLite rolls the partial transaction back on the next open.
- One connection per store object, shared between threads under a lock; other processes
  open their own store object on the same file.
- The schema is versioned with `PRAGMA user_version`; `_MIGRATIONS[n]` takes a file from
  version n to n + 1 inside one transaction, so two processes opening a fresh file at once
  migrate it exactly once.
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sdp.ebms import NonRepudiationReference, ReferenceTransform
from sdp.identifiers import PersonNumber
from sdp.receipts import Kind, Kvittering
from sdp.store.model import (
    MANUAL_STATES,
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
    check_transition,
    decide,
)
from sdp.store.protection import RecipientProtection

if TYPE_CHECKING:
    from sdp.client import TransportReceipt

log = logging.getLogger("sdp.store")

#: Default wait for another writer (another process sending or pulling), in seconds.
DEFAULT_BUSY_TIMEOUT = 30.0

_V1 = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE consignments (
        conversation_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('digital', 'physical')),
        mpc TEXT NOT NULL,
        state TEXT NOT NULL,
        recipient_lookup TEXT NOT NULL,
        recipient_sealed BLOB,
        notification_failures INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX consignments_state ON consignments (state, created_at)",
    "CREATE INDEX consignments_recipient ON consignments (recipient_lookup)",
    """CREATE TABLE sends (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES consignments (conversation_id),
        sbd_instance_identifier TEXT,
        fingerprint BLOB,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
        created_at TEXT NOT NULL,
        error TEXT,
        tr_message_id TEXT,
        tr_timestamp TEXT,
        tr_signer_orgnr TEXT,
        tr_references TEXT,
        tr_envelope_xml BLOB
    )""",
    "CREATE INDEX sends_conversation ON sends (conversation_id)",
    "CREATE INDEX sends_pending ON sends (status) WHERE status = 'pending'",
    """CREATE TABLE receipts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sbd_instance_identifier TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        tidspunkt TEXT NOT NULL,
        ref_to_message_id TEXT,
        mpc TEXT NOT NULL,
        sender_orgnr TEXT NOT NULL,
        signer_der BLOB NOT NULL,
        sbd_xml BLOB NOT NULL,
        envelope_xml BLOB NOT NULL,
        signed_references TEXT NOT NULL,
        varslingskanal TEXT,
        beskrivelse TEXT,
        feiltype TEXT,
        detaljer TEXT,
        received_at TEXT NOT NULL,
        confirmed_at TEXT,
        confirmed_message_id TEXT,
        effect TEXT NOT NULL,
        note TEXT NOT NULL
    )""",
    "CREATE INDEX receipts_conversation ON receipts (conversation_id)",
    "CREATE INDEX receipts_unconfirmed ON receipts (id) WHERE confirmed_at IS NULL",
    """CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES consignments (conversation_id),
        at TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL,
        message_id TEXT,
        receipt_id INTEGER REFERENCES receipts (id)
    )""",
    "CREATE INDEX history_conversation ON history (conversation_id, id)",
)

_MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
#: The schema version this code writes (`PRAGMA user_version`).
SCHEMA_VERSION = len(_MIGRATIONS)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(value: dt.datetime) -> str:
    return value.isoformat()


def _dt(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _refs_json(refs: Sequence[NonRepudiationReference]) -> str:
    return json.dumps([
        {"uri": r.uri, "digest_method": r.digest_method,
         "digest_value": base64.b64encode(r.digest_value).decode(),
         "transforms": [{"algorithm": t.algorithm,
                         "inclusive_prefixes": (None if t.inclusive_prefixes is None
                                                else list(t.inclusive_prefixes))}
                        for t in r.transforms]}
        for r in refs])


def _refs(text: str | None) -> tuple[NonRepudiationReference, ...]:
    if not text:
        return ()
    return tuple(
        NonRepudiationReference(
            r["uri"], r["digest_method"], base64.b64decode(r["digest_value"]),
            tuple(ReferenceTransform(t["algorithm"], None if t["inclusive_prefixes"] is None
                                     else tuple(t["inclusive_prefixes"]))
                  for t in r["transforms"]))
        for r in json.loads(text))


class SqliteStore:
    """The consignment store in one SQLite file (see the module docstring for why each
    setting). Implements `sdp.store.Store`.

    `protection` defaults to `RecipientProtection.from_env()`: hash, with `SDP_STORE_KEY`.
    `clock` is injectable so that tests control timestamps.
    """

    def __init__(self, path: str | Path, *, protection: RecipientProtection | None = None,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.path = Path(path)
        self.protection = protection or RecipientProtection.from_env()
        self._clock = clock
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(str(exc), subject=str(self.path)) from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot use WAL journal (got {mode})", subject=str(path))
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._check_protection()
        except BaseException as exc:
            conn.close()
            self._conn = None
            if isinstance(exc, sqlite3.Error):
                raise StoreError(str(exc), subject=str(self.path)) from exc
            raise

    # --- plumbing --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> dt.datetime:
        # Stored as UTC ISO-8601 so that text order is time order.
        return self._clock().astimezone(dt.UTC)

    @contextmanager
    def _tx(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction; a write takes the write lock at BEGIN (see module docstring)."""
        with self._lock:
            if self._conn is None:
                raise StoreError("the store is closed", subject=str(self.path))
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(str(exc), subject=str(self.path)) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(str(exc), subject=str(self.path)) from exc
                raise

    def _migrate(self) -> None:
        assert self._conn is not None
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self._tx(write=True) as conn:
            # Read again under the write lock: another process may have just migrated.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"schema version {version} is newer than this code "
                                 f"({SCHEMA_VERSION}); upgrade sikker-digital-post",
                                 subject=str(self.path))
            for target in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target + 1}")
                log.info("store %s migrated to schema version %d", self.path, target + 1)

    def _check_protection(self) -> None:
        """The protection mode and key are fixed per file: another key would silently find
        nobody, another mode would mix hashed and readable rows."""
        mine = {"protection": self.protection.mode.value,
                "key_check": self.protection.key_check()}
        with self._tx(write=True) as conn:
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            for key, value in mine.items():
                if key not in stored:
                    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                elif stored[key] != value:
                    what = "recipient protection mode" if key == "protection" else "store key"
                    raise StoreConfigurationError(
                        f"this file was created with another {what}"
                        + (f" ({stored[key]})" if key == "protection" else ""),
                        subject=str(self.path))

    def _transition(self, conn: sqlite3.Connection, conversation_id: str,
                    current: State | None, target: State, reason: str, *,
                    message_id: str | None = None, receipt_id: int | None = None) -> None:
        check_transition(current, target)
        now = _ts(self._now())
        conn.execute("UPDATE consignments SET state = ?, updated_at = ? "
                     "WHERE conversation_id = ?", (target.value, now, conversation_id))
        conn.execute("INSERT INTO history (conversation_id, at, from_state, to_state, reason, "
                     "message_id, receipt_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (conversation_id, now, current.value if current else None, target.value,
                      reason, message_id, receipt_id))

    @staticmethod
    def _state_of(conn: sqlite3.Connection, conversation_id: str) -> tuple[State, str] | None:
        row = conn.execute("SELECT state, kind FROM consignments WHERE conversation_id = ?",
                           (conversation_id,)).fetchone()
        return None if row is None else (State(row[0]), row[1])

    # --- sending ---------------------------------------------------------------------------

    def record_outgoing(self, message_id: str, conversation_id: str, *,
                        recipient: str | PersonNumber | None, kind: ConsignmentKind, mpc: str,
                        sbd_instance_identifier: str | None = None,
                        fingerprint: bytes | None = None) -> None:
        """Record a send before it goes out, in state SENDING (DIGEST 9.5, 11.1 Start).

        Calling it again with the same MessageId is a no-op, so a restarted job may call it
        unconditionally. For a consignment in TRANSPORT_FAILED it records a resend, which must
        have a new MessageId (DIGEST 9.5).
        """
        lookup = self.protection.lookup(recipient or "")
        with self._tx(write=True) as conn:
            same = conn.execute("SELECT conversation_id FROM sends WHERE message_id = ?",
                                (message_id,)).fetchone()
            if same is not None:
                if same[0] != conversation_id:
                    raise StoreError(f"already used for conversation {same[0]}",
                                     subject=message_id)
                return
            existing = conn.execute(
                "SELECT state, recipient_lookup, kind FROM consignments "
                "WHERE conversation_id = ?", (conversation_id,)).fetchone()
            created = _ts(self._now())
            if existing is None:
                conn.execute(
                    "INSERT INTO consignments (conversation_id, kind, mpc, state, "
                    "recipient_lookup, recipient_sealed, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (conversation_id, kind.value, mpc, State.SENDING.value, lookup,
                     self.protection.seal(recipient or "", conversation_id), created,
                     created))
                current: State | None = None
                reason = "recorded before sending"
            else:
                current = State(existing[0])
                if current is not State.TRANSPORT_FAILED:
                    raise StateTransitionError(
                        f"already recorded in state {current.value}; only a consignment in "
                        f"TRANSPORT_FAILED may be sent again", subject=conversation_id)
                if existing[1] != lookup or existing[2] != kind.value:
                    raise StoreError("a resend must have the same recipient and kind",
                                     subject=conversation_id)
                reason = "resend after transport failure (new MessageId)"
            conn.execute(
                "INSERT INTO sends (message_id, conversation_id, sbd_instance_identifier, "
                "fingerprint, status, created_at) VALUES (?, ?, ?, ?, 'pending', ?)",
                (message_id, conversation_id, sbd_instance_identifier, fingerprint, created))
            if current is None:
                conn.execute("INSERT INTO history (conversation_id, at, from_state, to_state, "
                             "reason, message_id) VALUES (?, ?, NULL, ?, ?, ?)",
                             (conversation_id, _ts(self._now()), State.SENDING.value, reason,
                              message_id))
            else:
                self._transition(conn, conversation_id, current, State.SENDING, reason,
                                 message_id=message_id)

    def mark_sent(self, message_id: str, transport_receipt: TransportReceipt, *,
                  sbd_instance_identifier: str | None = None,
                  fingerprint: bytes | None = None) -> None:
        """Keep the verified transport receipt and move SENDING -> SENT (DIGEST 7.5, 11.1).

        A resumed send rebuilds the package and SBD, so their new identifier and
        fingerprint may be given here. Idempotent; when a business receipt already proved
        the send (and moved the state on), only the transport receipt is added.
        """
        with self._tx(write=True) as conn:
            row = conn.execute("SELECT conversation_id, status FROM sends WHERE message_id = ?",
                               (message_id,)).fetchone()
            if row is None:
                raise StoreError("no such send; record_outgoing comes first", subject=message_id)
            conversation_id, status = row
            if status == "failed":
                raise StateTransitionError("this send was marked failed", subject=message_id)
            if transport_receipt.ref_to_message_id != message_id:
                raise StoreError(f"transport receipt refers to "
                                 f"{transport_receipt.ref_to_message_id}", subject=message_id)
            conn.execute(
                "UPDATE sends SET status = 'sent', "
                "sbd_instance_identifier = COALESCE(?, sbd_instance_identifier), "
                "fingerprint = COALESCE(?, fingerprint), tr_message_id = ?, tr_timestamp = ?, "
                "tr_signer_orgnr = ?, tr_references = ?, tr_envelope_xml = ? "
                "WHERE message_id = ?",
                (sbd_instance_identifier, fingerprint, transport_receipt.message_id,
                 _ts(transport_receipt.timestamp), transport_receipt.signer_orgnr,
                 _refs_json(transport_receipt.references), transport_receipt.envelope_xml,
                 message_id))
            state = self._state_of(conn, conversation_id)
            assert state is not None
            if state[0] is State.SENDING:
                self._transition(conn, conversation_id, State.SENDING, State.SENT,
                                 "transport receipt", message_id=message_id)

    def mark_send_failed(self, message_id: str, error: str | BaseException) -> None:
        """A definite rejection (an ebMS error, a SOAP fault, HTTP 4xx): SENDING ->
        TRANSPORT_FAILED.

        Not for an unknown outcome (timeout, 5xx) nor for a transport receipt that fails
        verification (it proves neither delivery nor refusal): those sends stay pending and
        are resumed with the same MessageId (DIGEST 9.5).
        """
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._tx(write=True) as conn:
            row = conn.execute("SELECT conversation_id, status FROM sends WHERE message_id = ?",
                               (message_id,)).fetchone()
            if row is None:
                raise StoreError("no such send", subject=message_id)
            conversation_id, status = row
            if status == "failed":
                return
            if status == "sent":
                raise StateTransitionError("already acknowledged by the broker",
                                           subject=message_id)
            conn.execute("UPDATE sends SET status = 'failed', error = ? WHERE message_id = ?",
                         (text, message_id))
            state = self._state_of(conn, conversation_id)
            assert state is not None
            self._transition(conn, conversation_id, state[0], State.TRANSPORT_FAILED, text,
                             message_id=message_id)

    def pending_sends(self) -> builtins.list[SendRecord]:
        """Sends recorded but neither acknowledged nor rejected: resume each with its
        MessageId (DIGEST 9.5). Oldest first."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"{_SEND_SELECT} WHERE s.status = 'pending' ORDER BY s.seq").fetchall()
        return [_send(r) for r in rows]

    # --- receipts --------------------------------------------------------------------------

    def store_receipt(self, receipt: Kvittering) -> ReceiptOutcome:
        """Commit a verified receipt before it is confirmed (DIGEST 8.1), apply it once.

        A redelivery (same SBD InstanceIdentifier or ebMS MessageId, DIGEST 8.2) writes
        nothing and says `duplicate`. A receipt whose conversation id matches nothing is
        kept as an orphan, never dropped.
        """
        with self._tx(write=True) as conn:
            dup = conn.execute(
                "SELECT id, effect, note, conversation_id, sbd_xml FROM receipts "
                "WHERE sbd_instance_identifier = ? OR message_id = ? ORDER BY id LIMIT 1",
                (receipt.sbd_instance_identifier, receipt.message_id)).fetchone()
            if dup is not None:
                if bytes(dup[4]) != receipt.sbd_xml:
                    log.warning("redelivered receipt %s differs from the stored one",
                                receipt.sbd_instance_identifier)
                state = self._state_of(conn, dup[3])
                now_state = state[0] if state else None
                return ReceiptOutcome(dup[0], True, Effect(dup[1]) is Effect.ORPHAN,
                                      Effect(dup[1]), now_state, now_state, dup[2])
            found = self._state_of(conn, receipt.conversation_id)
            now = _ts(self._now())
            if found is None:
                rid = self._insert_receipt(conn, receipt, now, Effect.ORPHAN,
                                           "no consignment with this conversation id")
                log.warning("orphan receipt %s (%s) for unknown conversation %s",
                            receipt.sbd_instance_identifier, receipt.kind.value,
                            receipt.conversation_id)
                return ReceiptOutcome(rid, False, True, Effect.ORPHAN, None, None,
                                      "no consignment with this conversation id")
            before, kind = found
            current = before
            rid = self._insert_receipt(conn, receipt, now, Effect.RECORDED, "")
            cid = receipt.conversation_id
            if current is State.SENDING:
                # Any business receipt proves the MF accepted the send, even if its transport
                # receipt was lost in a crash (DIGEST 1.5, 9.5).
                conn.execute("UPDATE sends SET status = 'sent' "
                             "WHERE conversation_id = ? AND status = 'pending'", (cid,))
                self._transition(conn, cid, current, State.SENT,
                                 f"implied by {receipt.kind.value} (no transport receipt)",
                                 receipt_id=rid)
                current = State.SENT
            decision = decide(current, receipt.kind, ConsignmentKind(kind))
            if decision.new_state is not None:
                self._transition(conn, cid, current, decision.new_state, decision.note,
                                 receipt_id=rid)
            if receipt.kind is Kind.VARSLINGFEILET:
                conn.execute("UPDATE consignments SET notification_failures = "
                             "notification_failures + 1, updated_at = ? "
                             "WHERE conversation_id = ?", (now, cid))
            conn.execute("UPDATE receipts SET effect = ?, note = ? WHERE id = ?",
                         (decision.effect.value, decision.note, rid))
            if decision.effect in (Effect.CONFLICT, Effect.OUT_OF_ORDER):
                log.warning("receipt %s for %s: %s", receipt.sbd_instance_identifier, cid,
                            decision.note)
            return ReceiptOutcome(rid, False, False, decision.effect, before,
                                  decision.new_state or current, decision.note)

    @staticmethod
    def _insert_receipt(conn: sqlite3.Connection, r: Kvittering, now: str, effect: Effect,
                        note: str) -> int:
        cur = conn.execute(
            "INSERT INTO receipts (sbd_instance_identifier, message_id, conversation_id, kind, "
            "tidspunkt, ref_to_message_id, mpc, sender_orgnr, signer_der, sbd_xml, "
            "envelope_xml, signed_references, varslingskanal, beskrivelse, feiltype, detaljer, "
            "received_at, effect, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.sbd_instance_identifier, r.message_id, r.conversation_id, r.kind.value,
             _ts(r.tidspunkt), r.ref_to_message_id, r.mpc, r.sender_orgnr,
             r.signer.public_bytes(Encoding.DER), r.sbd_xml, r.envelope_xml,
             _refs_json(r.signed_references), r.varslingskanal, r.beskrivelse, r.feiltype,
             r.detaljer, now, effect.value, note))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def mark_confirmed(self, receipt: Kvittering) -> None:
        """Note that the broker has our eb:Receipt for it (DIGEST 8.1). Confirming any
        delivery of a receipt removes it from the queue, so a redelivery's confirmation
        also settles the stored original."""
        with self._tx(write=True) as conn:
            cur = conn.execute(
                "UPDATE receipts SET confirmed_at = COALESCE(confirmed_at, ?), "
                "confirmed_message_id = COALESCE(confirmed_message_id, ?) "
                "WHERE sbd_instance_identifier = ? OR message_id = ?",
                (_ts(self._now()), receipt.message_id, receipt.sbd_instance_identifier,
                 receipt.message_id))
            if cur.rowcount == 0:
                raise StoreError("confirming a receipt that was never stored; store_receipt "
                                 "comes first", subject=receipt.sbd_instance_identifier)

    def unconfirmed_receipts(self) -> builtins.list[StoredReceipt]:
        """Stored but not yet confirmed: confirm these after a restart. Oldest first."""
        with self._tx(write=False) as conn:
            rows = conn.execute(f"{_RECEIPT_SELECT} WHERE confirmed_at IS NULL "
                                "ORDER BY id").fetchall()
        return [_receipt(r) for r in rows]

    def orphan_receipts(self) -> builtins.list[StoredReceipt]:
        """Receipts for conversation ids that match no consignment."""
        with self._tx(write=False) as conn:
            rows = conn.execute(f"{_RECEIPT_SELECT} WHERE effect = ? ORDER BY id",
                                (Effect.ORPHAN.value,)).fetchall()
        return [_receipt(r) for r in rows]

    # --- manual transitions ----------------------------------------------------------------

    def transition(self, conversation_id: str, state: State, reason: str) -> None:
        """The sender's own steps: OVERDUE (receipt missing), DEVIATION, CLOSED (DIGEST
        11.1). States that need proof come only from receipts."""
        if state not in MANUAL_STATES:
            raise StateTransitionError(f"{state.value} is set only by a receipt",
                                       subject=conversation_id)
        with self._tx(write=True) as conn:
            found = self._state_of(conn, conversation_id)
            if found is None:
                raise StoreError("no such consignment", subject=conversation_id)
            self._transition(conn, conversation_id, found[0], state, reason)

    # --- queries ---------------------------------------------------------------------------

    def get(self, conversation_id: str) -> ConsignmentRecord | None:
        with self._tx(write=False) as conn:
            row = conn.execute(f"{_CONSIGNMENT_SELECT} WHERE conversation_id = ?",
                               (conversation_id,)).fetchone()
            if row is None:
                return None
            sends = conn.execute(f"{_SEND_SELECT} WHERE s.conversation_id = ? ORDER BY s.seq",
                                 (conversation_id,)).fetchall()
            history = conn.execute(
                "SELECT at, from_state, to_state, reason, message_id, receipt_id FROM history "
                "WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
            receipts = conn.execute(f"{_RECEIPT_SELECT} WHERE conversation_id = ? ORDER BY id",
                                    (conversation_id,)).fetchall()
        return self._consignment(
            row, tuple(_send(s) for s in sends),
            tuple(Transition(_req(h[0]), State(h[1]) if h[1] else None, State(h[2]), h[3],
                             h[4], h[5]) for h in history),
            tuple(_receipt(r) for r in receipts))

    def list(self, state: State | None = None, *, limit: int = 100,
             offset: int = 0) -> builtins.list[ConsignmentRecord]:
        """Consignments, newest first, without sends, history and receipts (use `get`)."""
        where, args = ("WHERE state = ?", [state.value]) if state else ("", [])
        with self._tx(write=False) as conn:
            rows = conn.execute(f"{_CONSIGNMENT_SELECT} {where} "
                                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                                (*args, limit, offset)).fetchall()
        return [self._consignment(r) for r in rows]

    def find_by_recipient(self, recipient: str | PersonNumber, *,
                          limit: int = 100) -> builtins.list[ConsignmentRecord]:
        """What was sent to this person, found through the keyed lookup value."""
        with self._tx(write=False) as conn:
            rows = conn.execute(f"{_CONSIGNMENT_SELECT} WHERE recipient_lookup = ? "
                                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                (self.protection.lookup(recipient), limit)).fetchall()
        return [self._consignment(r) for r in rows]

    def timeline(self, conversation_id: str) -> builtins.list[Event]:
        """State changes and receipts in the order they were recorded (for `sdp status`)."""
        record = self.get(conversation_id)
        if record is None:
            raise StoreError("no such consignment", subject=conversation_id)
        keyed: builtins.list[tuple[tuple[dt.datetime, int, int], Event]] = []
        for i, h in enumerate(record.history):
            keyed.append(((h.at, 1, i), Event(h.at, "state", h.to_state, h.reason)))
        for r in record.receipts:
            k = r.kvittering
            detail = f"{k.kind.value} at {k.tidspunkt.isoformat()} ({r.effect.value})"
            if k.varslingskanal:
                detail += f": {k.varslingskanal}"
            if k.feiltype:
                detail += f": {k.feiltype}"
            # A receipt sorts before the transition it caused (same timestamp).
            keyed.append(((r.received_at, 0, r.id), Event(r.received_at, "receipt", None,
                                                          detail)))
        return [e for _, e in sorted(keyed, key=lambda pair: pair[0])]

    def counts(self) -> dict[State, int]:
        """Consignments per state; every state is present, zero included."""
        result = dict.fromkeys(State, 0)
        with self._tx(write=False) as conn:
            for state, n in conn.execute("SELECT state, COUNT(*) FROM consignments "
                                         "GROUP BY state"):
                result[State(state)] = n
        return result

    def check(self) -> builtins.list[str]:
        """Problems found in the file: SQLite's integrity and foreign-key checks plus the
        store's own invariants. Empty when the store is consistent."""
        problems: builtins.list[str] = []
        with self._tx(write=False) as conn:
            problems += [f"integrity: {r[0]}" for r in conn.execute("PRAGMA integrity_check")
                         if r[0] != "ok"]
            problems += [f"foreign key: {tuple(r)}" for r in
                         conn.execute("PRAGMA foreign_key_check")]
            for cid, state, last in conn.execute(
                    "SELECT c.conversation_id, c.state, (SELECT h.to_state FROM history h "
                    "WHERE h.conversation_id = c.conversation_id ORDER BY h.id DESC LIMIT 1) "
                    "FROM consignments c"):
                if last != state:
                    problems.append(f"{cid}: state {state} but history ends at {last}")
            for (cid,) in conn.execute(
                    "SELECT conversation_id FROM consignments c WHERE NOT EXISTS "
                    "(SELECT 1 FROM sends s WHERE s.conversation_id = c.conversation_id)"):
                problems.append(f"{cid}: no send recorded")
        return problems

    def _consignment(self, row: Any, sends: tuple[SendRecord, ...] = (),
                     history: tuple[Transition, ...] = (),
                     receipts: tuple[StoredReceipt, ...] = ()) -> ConsignmentRecord:
        cid = row[0]
        return ConsignmentRecord(
            conversation_id=cid, kind=ConsignmentKind(row[1]), mpc=row[2], state=State(row[3]),
            created_at=_req(row[6]), updated_at=_req(row[7]),
            recipient=self.protection.open(row[4], cid) or None,
            notification_failures=row[5], sends=sends, history=history, receipts=receipts)


_CONSIGNMENT_SELECT = (
    "SELECT conversation_id, kind, mpc, state, recipient_sealed, notification_failures, "
    "created_at, updated_at FROM consignments")

_SEND_SELECT = (
    "SELECT s.message_id, s.conversation_id, s.sbd_instance_identifier, s.fingerprint, c.mpc, "
    "c.kind, s.status, s.created_at, s.error, s.tr_message_id, s.tr_timestamp, "
    "s.tr_signer_orgnr, s.tr_references, s.tr_envelope_xml "
    "FROM sends s JOIN consignments c ON c.conversation_id = s.conversation_id")

_RECEIPT_SELECT = (
    "SELECT id, kind, tidspunkt, conversation_id, sbd_instance_identifier, message_id, "
    "ref_to_message_id, mpc, sender_orgnr, signer_der, sbd_xml, envelope_xml, "
    "signed_references, varslingskanal, beskrivelse, feiltype, detaljer, received_at, "
    "confirmed_at, effect, note FROM receipts")


def _req(value: str) -> dt.datetime:
    parsed = _dt(value)
    assert parsed is not None
    return parsed


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _send(r: Any) -> SendRecord:
    return SendRecord(
        message_id=r[0], conversation_id=r[1], sbd_instance_identifier=r[2],
        fingerprint=_bytes(r[3]), mpc=r[4], kind=ConsignmentKind(r[5]), status=r[6],
        created_at=_req(r[7]), error=r[8], receipt_message_id=r[9],
        receipt_timestamp=_dt(r[10]), receipt_signer_orgnr=r[11],
        receipt_references=_refs(r[12]), receipt_envelope_xml=_bytes(r[13]))


def _receipt(r: Any) -> StoredReceipt:
    k = Kvittering(
        Kind(r[1]), _req(r[2]), conversation_id=r[3], sbd_instance_identifier=r[4],
        message_id=r[5], ref_to_message_id=r[6], mpc=r[7], sender_orgnr=r[8],
        signer=x509.load_der_x509_certificate(bytes(r[9])), sbd_xml=bytes(r[10]),
        envelope_xml=bytes(r[11]), signed_references=_refs(r[12]), varslingskanal=r[13],
        beskrivelse=r[14], feiltype=r[15], detaljer=r[16])
    return StoredReceipt(r[0], k, _req(r[17]), _dt(r[18]), Effect(r[19]), r[20])
