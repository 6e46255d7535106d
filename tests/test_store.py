"""The consignment store: lifecycle, receipts applied once, personal data at rest,
concurrency and crash safety (DIGEST 8.1, 8.2, 9.5, 11.1)."""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sdp import devpki
from sdp.client import TransportReceipt
from sdp.ebms import NonRepudiationReference, ReferenceTransform
from sdp.identifiers import parse_person_number
from sdp.receipts import Kind, Kvittering
from sdp.store import (
    FINAL_STATES,
    MANUAL_STATES,
    RECEIPT_TARGET,
    SCHEMA_VERSION,
    TERMINAL_STATES,
    TRANSITIONS,
    ConsignmentKind,
    Effect,
    RecipientProtection,
    SqliteStore,
    State,
    StateTransitionError,
    StoreConfigurationError,
    StoreError,
    decide,
    open_store,
)
from sdp.store.protection import KEY_ENV, MODE_ENV

FNR = "15038610020"
OTHER_FNR = "01010012356"
KEY = bytes(range(32))
MPC = "urn:normal"
DIGITAL = ConsignmentKind.DIGITAL
PHYSICAL = ConsignmentKind.PHYSICAL


def _id() -> str:
    return str(uuid.uuid4())


def _refs() -> tuple[NonRepudiationReference, ...]:
    c14n = "http://www.w3.org/2001/10/xml-exc-c14n#"
    return (
        NonRepudiationReference("#soapBody", "http://www.w3.org/2001/04/xmlenc#sha256",
                                b"\x01\x02" * 16, (ReferenceTransform(c14n, ()),)),
        NonRepudiationReference("cid:att", "http://www.w3.org/2001/04/xmlenc#sha256",
                                b"\xff" * 32, (ReferenceTransform(c14n, ("env", "eb")),)),
    )


def make_receipt(kind: Kind, conversation_id: str, signer: x509.Certificate, *,
                 instance: str | None = None, message_id: str | None = None,
                 envelope_size: int = 0, **extra: Any) -> Kvittering:
    """A receipt as `from_verified` would build it; the bytes are fake but exact bytes."""
    instance = instance or _id()
    return Kvittering(
        kind, dt.datetime(2024, 5, 19, 12, 0, tzinfo=dt.UTC), conversation_id=conversation_id,
        sbd_instance_identifier=instance, message_id=message_id or _id(),
        ref_to_message_id=_id(), mpc=MPC, sender_orgnr="996460320", signer=signer,
        sbd_xml=f"<sbd id='{instance}' kind='{kind.value}'/>".encode() + b"\x00\xff\r\n",
        envelope_xml=b"<env>\xc3\xa5" + b"x" * envelope_size + b"</env>",
        signed_references=_refs(), **extra)


def make_transport_receipt(message_id: str) -> TransportReceipt:
    return TransportReceipt(_id(), message_id, dt.datetime(2024, 5, 19, 11, 59, tzinfo=dt.UTC),
                            _refs(), b"<signed-receipt ref='" + message_id.encode() + b"'/>\xff",
                            "984661185")


@pytest.fixture(scope="module")
def cert(mailbox: devpki.Identity) -> x509.Certificate:
    return mailbox.certificate


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sdp.sqlite"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db, protection=RecipientProtection.hashed(KEY))
    yield s
    s.close()


def send(store: SqliteStore, *, kind: ConsignmentKind = DIGITAL, recipient: str = FNR,
         sent: bool = True) -> tuple[str, str]:
    """Record a consignment and, unless `sent` is False, acknowledge it."""
    message_id, cid = _id(), _id()
    store.record_outgoing(message_id, cid, recipient=recipient, kind=kind, mpc=MPC)
    if sent:
        store.mark_sent(message_id, make_transport_receipt(message_id),
                        sbd_instance_identifier=_id(), fingerprint=b"\x00fp")
    return message_id, cid


def states(store: SqliteStore, cid: str) -> list[State | None]:
    record = store.get(cid)
    assert record is not None
    return [record.history[0].from_state] + [h.to_state for h in record.history]


# --- lifecycle -------------------------------------------------------------------------------


def test_whole_digital_lifecycle(store: SqliteStore, cert: x509.Certificate) -> None:
    message_id, cid = _id(), _id()
    store.record_outgoing(message_id, cid, recipient=parse_person_number(FNR), kind=DIGITAL,
                          mpc=MPC)
    assert [p.message_id for p in store.pending_sends()] == [message_id]
    record = store.get(cid)
    assert record is not None and record.state is State.SENDING
    assert record.message_id == message_id

    tr = make_transport_receipt(message_id)
    store.mark_sent(message_id, tr, sbd_instance_identifier="sbd-1", fingerprint=b"\x01fp")
    assert store.pending_sends() == []

    levering = make_receipt(Kind.LEVERING, cid, cert)
    out = store.store_receipt(levering)
    assert (out.duplicate, out.orphan, out.effect) == (False, False, Effect.APPLIED)
    assert (out.state_before, out.state_after) == (State.SENT, State.DELIVERED)
    assert [r.kvittering.sbd_instance_identifier
            for r in store.unconfirmed_receipts()] == [levering.sbd_instance_identifier]
    store.mark_confirmed(levering)
    assert store.unconfirmed_receipts() == []

    aapning = make_receipt(Kind.AAPNING, cid, cert)
    assert store.store_receipt(aapning).state_after is State.OPENED
    store.mark_confirmed(aapning)
    store.transition(cid, State.CLOSED, "archived")

    record = store.get(cid)
    assert record is not None
    assert record.state is State.CLOSED and record.is_final
    assert [(h.from_state, h.to_state) for h in record.history] == [
        (None, State.SENDING), (State.SENDING, State.SENT), (State.SENT, State.DELIVERED),
        (State.DELIVERED, State.OPENED), (State.OPENED, State.CLOSED)]
    assert [h.reason for h in record.history][-1] == "archived"
    assert record.history[2].receipt_id == record.receipts[0].id
    # The transport receipt: exact signed bytes and parsed fields.
    (s,) = record.sends
    assert (s.status, s.sbd_instance_identifier, s.fingerprint) == ("sent", "sbd-1", b"\x01fp")
    assert s.receipt_envelope_xml == tr.envelope_xml
    assert (s.receipt_message_id, s.receipt_timestamp) == (tr.message_id, tr.timestamp)
    assert s.receipt_references == tr.references and s.receipt_signer_orgnr == "984661185"
    # Business receipts: exact bytes, parsed fields, signer and references round-trip.
    stored = record.receipts[0]
    k = stored.kvittering
    assert k.sbd_xml == levering.sbd_xml and k.envelope_xml == levering.envelope_xml
    assert k == levering
    assert k.signer.public_bytes(Encoding.DER) == cert.public_bytes(Encoding.DER)
    assert stored.confirmed_at is not None and stored.effect is Effect.APPLIED
    assert record.recipient is None  # hashed: not readable back

    events = store.timeline(cid)
    assert [(e.what, e.state) for e in events] == [
        ("state", State.SENDING), ("state", State.SENT), ("receipt", None),
        ("state", State.DELIVERED), ("receipt", None), ("state", State.OPENED),
        ("state", State.CLOSED)]
    assert "Leveringskvittering" in events[2].detail
    assert store.counts()[State.CLOSED] == 1 and sum(store.counts().values()) == 1
    assert store.check() == []


def test_physical_lifecycle_and_notification_failure(store: SqliteStore,
                                                      cert: x509.Certificate) -> None:
    _, print_cid = send(store, kind=PHYSICAL, recipient="Ola Nordmann, 0150 Oslo")
    for kind, expected in ((Kind.MOTTAK, State.ACCEPTED_FOR_PRINT),
                           (Kind.LEVERING, State.DELIVERED), (Kind.RETURPOST, State.RETURNED)):
        assert store.store_receipt(make_receipt(kind, print_cid, cert)).state_after is expected

    _, cid = send(store)
    store.store_receipt(make_receipt(Kind.LEVERING, cid, cert))
    out = store.store_receipt(make_receipt(Kind.VARSLINGFEILET, cid, cert,
                                           varslingskanal="SMS", beskrivelse="ugyldig nummer"))
    assert (out.effect, out.state_after) == (Effect.RECORDED, State.DELIVERED)
    record = store.get(cid)
    assert record is not None
    assert record.state is State.DELIVERED and record.notification_failures == 1
    assert len(record.history) == 3  # SENDING, SENT, DELIVERED: the notice moved nothing
    assert record.receipts[-1].kvittering.varslingskanal == "SMS"
    assert "SMS" in store.timeline(cid)[-1].detail
    assert {r.state for r in store.list()} == {State.RETURNED, State.DELIVERED}
    assert [r.conversation_id for r in store.list(State.RETURNED)] == [print_cid]
    assert len(store.list(limit=1)) == 1


def test_feil_fails_and_later_levering_conflicts(store: SqliteStore,
                                                 cert: x509.Certificate) -> None:
    _, cid = send(store)
    out = store.store_receipt(make_receipt(Kind.FEIL, cid, cert, feiltype="KLIENT",
                                           detaljer="Feil i manifest"))
    assert out.state_after is State.FAILED
    late = store.store_receipt(make_receipt(Kind.LEVERING, cid, cert))
    assert (late.effect, late.state_after) == (Effect.CONFLICT, State.FAILED)
    record = store.get(cid)
    assert record is not None and record.state is State.FAILED
    assert [r.effect for r in record.receipts] == [Effect.APPLIED, Effect.CONFLICT]
    assert record.receipts[0].kvittering.detaljer == "Feil i manifest"


def test_opening_before_delivery_keeps_most_advanced_state(store: SqliteStore,
                                                           cert: x509.Certificate) -> None:
    _, cid = send(store)
    assert store.store_receipt(make_receipt(Kind.AAPNING, cid, cert)).state_after is State.OPENED
    late = store.store_receipt(make_receipt(Kind.LEVERING, cid, cert))
    assert (late.effect, late.state_before, late.state_after) == (
        Effect.OUT_OF_ORDER, State.OPENED, State.OPENED)
    record = store.get(cid)
    assert record is not None and record.state is State.OPENED
    assert [r.kvittering.kind for r in record.receipts] == [Kind.AAPNING, Kind.LEVERING]
    assert states(store, cid)[-1] is State.OPENED and len(record.history) == 3


def test_receipt_for_wrong_kind_of_post_is_kept_as_conflict(store: SqliteStore,
                                                            cert: x509.Certificate) -> None:
    _, cid = send(store)  # digital
    out = store.store_receipt(make_receipt(Kind.RETURPOST, cid, cert))
    assert (out.effect, out.state_after) == (Effect.CONFLICT, State.SENT)
    mottak = store.store_receipt(make_receipt(Kind.MOTTAK, cid, cert))
    assert (mottak.effect, mottak.state_after) == (Effect.RECORDED, State.SENT)


def test_duplicate_receipt_is_not_applied_twice(store: SqliteStore,
                                                cert: x509.Certificate) -> None:
    _, cid = send(store)
    first = make_receipt(Kind.LEVERING, cid, cert)
    store.store_receipt(first)
    history = store.get(cid).history  # type: ignore[union-attr]
    # Redelivered after the lease: same SBD, a new ebMS MessageId (DIGEST 8.2) ...
    again = make_receipt(Kind.LEVERING, cid, cert, instance=first.sbd_instance_identifier)
    # ... or the same ebMS MessageId.
    same_msg = make_receipt(Kind.AAPNING, cid, cert, message_id=first.message_id)
    for dup in (again, same_msg):
        out = store.store_receipt(dup)
        assert out.duplicate and out.receipt_id == store.get(cid).receipts[0].id  # type: ignore
        assert out.state_after is State.DELIVERED
    record = store.get(cid)
    assert record is not None
    assert record.history == history and len(record.receipts) == 1
    # Confirming the redelivery settles the stored original.
    store.mark_confirmed(again)
    assert store.unconfirmed_receipts() == []


def test_orphan_receipt_is_kept_and_reported(store: SqliteStore,
                                             cert: x509.Certificate) -> None:
    stray = make_receipt(Kind.LEVERING, _id(), cert)
    out = store.store_receipt(stray)
    assert out.orphan and not out.duplicate and out.state_after is None
    (orphan,) = store.orphan_receipts()
    assert orphan.orphan and orphan.kvittering.sbd_xml == stray.sbd_xml
    assert [r.id for r in store.unconfirmed_receipts()] == [orphan.id]
    assert store.get(stray.conversation_id) is None
    assert store.store_receipt(stray).duplicate and len(store.orphan_receipts()) == 1


def test_confirming_an_unstored_receipt_is_refused(store: SqliteStore,
                                                   cert: x509.Certificate) -> None:
    with pytest.raises(StoreError, match="store_receipt comes first"):
        store.mark_confirmed(make_receipt(Kind.LEVERING, _id(), cert))


def test_receipt_before_transport_receipt_implies_sent(store: SqliteStore,
                                                       cert: x509.Certificate) -> None:
    """The transport receipt was lost in a crash, but the broker did accept the send."""
    message_id, cid = send(store, sent=False)
    out = store.store_receipt(make_receipt(Kind.LEVERING, cid, cert))
    assert (out.state_before, out.state_after) == (State.SENDING, State.DELIVERED)
    assert store.pending_sends() == []
    assert states(store, cid) == [None, State.SENDING, State.SENT, State.DELIVERED]
    # The resumed send's transport receipt arrives later: kept, state not moved back.
    store.mark_sent(message_id, make_transport_receipt(message_id))
    record = store.get(cid)
    assert record is not None and record.state is State.DELIVERED
    assert record.sends[0].receipt_envelope_xml is not None


def test_transport_failure_and_resend(store: SqliteStore) -> None:
    message_id, cid = send(store, sent=False)
    store.record_outgoing(message_id, cid, recipient=FNR, kind=DIGITAL, mpc=MPC)  # idempotent
    assert len(store.pending_sends()) == 1
    store.mark_send_failed(message_id, StoreError("EBMS:0004 Other", subject="x"))
    assert store.pending_sends() == []
    record = store.get(cid)
    assert record is not None and record.state is State.TRANSPORT_FAILED
    assert record.sends[0].error == "StoreError: x: EBMS:0004 Other"
    with pytest.raises(StateTransitionError):
        store.mark_sent(message_id, make_transport_receipt(message_id))
    with pytest.raises(StoreError, match="same recipient"):
        store.record_outgoing(_id(), cid, recipient=OTHER_FNR, kind=DIGITAL, mpc=MPC)

    resend = _id()
    store.record_outgoing(resend, cid, recipient=FNR, kind=DIGITAL, mpc=MPC)
    store.mark_sent(resend, make_transport_receipt(resend))
    assert states(store, cid) == [None, State.SENDING, State.TRANSPORT_FAILED, State.SENDING,
                                  State.SENT]
    assert [s.message_id for s in store.get(cid).sends] == [message_id, resend]  # type: ignore
    with pytest.raises(StateTransitionError, match="only a consignment in TRANSPORT_FAILED"):
        store.record_outgoing(_id(), cid, recipient=FNR, kind=DIGITAL, mpc=MPC)
    with pytest.raises(StoreError, match="already used"):
        store.record_outgoing(resend, _id(), recipient=FNR, kind=DIGITAL, mpc=MPC)
    with pytest.raises(StoreError, match="refers to"):
        store.mark_sent(resend, make_transport_receipt("someone-else"))


def test_manual_transitions(store: SqliteStore, cert: x509.Certificate) -> None:
    _, cid = send(store)
    with pytest.raises(StateTransitionError, match="only by a receipt"):
        store.transition(cid, State.DELIVERED, "trust me")
    with pytest.raises(StateTransitionError, match="SENT -> CLOSED"):
        store.transition(cid, State.CLOSED, "too early")
    store.transition(cid, State.OVERDUE, "no Leveringskvittering after 2 h")
    # A late receipt is still the truth.
    assert store.store_receipt(make_receipt(Kind.LEVERING, cid, cert)).effect is Effect.APPLIED
    store.transition(cid, State.CLOSED, "done")
    with pytest.raises(StateTransitionError):
        store.transition(cid, State.DEVIATION, "after closing")
    out = store.store_receipt(make_receipt(Kind.AAPNING, cid, cert))
    assert (out.effect, out.state_after) == (Effect.RECORDED, State.CLOSED)
    with pytest.raises(StoreError, match="no such consignment"):
        store.transition(_id(), State.CLOSED, "x")


def test_state_machine_table() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TERMINAL_STATES == {State.CLOSED}
    assert FINAL_STATES == {State.DELIVERED, State.OPENED, State.RETURNED, State.FAILED,
                            State.CLOSED}
    assert MANUAL_STATES == {State.OVERDUE, State.DEVIATION, State.CLOSED}
    assert RECEIPT_TARGET[Kind.VARSLINGFEILET] is None
    # Every state can reach CLOSED.
    for start in State:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert State.CLOSED in seen, start
    # Every final receipt kind leads to a final state.
    for kind, target in RECEIPT_TARGET.items():
        if target is not None:
            assert (target in FINAL_STATES) == (kind is not Kind.MOTTAK), kind


@pytest.mark.parametrize(("current", "receipt", "kind", "new", "effect"), [
    (State.SENT, Kind.LEVERING, DIGITAL, State.DELIVERED, Effect.APPLIED),
    (State.SENT, Kind.AAPNING, DIGITAL, State.OPENED, Effect.APPLIED),
    (State.OPENED, Kind.LEVERING, DIGITAL, None, Effect.OUT_OF_ORDER),
    (State.DELIVERED, Kind.LEVERING, DIGITAL, None, Effect.RECORDED),
    (State.DELIVERED, Kind.FEIL, DIGITAL, None, Effect.CONFLICT),
    (State.SENT, Kind.AAPNING, PHYSICAL, None, Effect.CONFLICT),
    (State.ACCEPTED_FOR_PRINT, Kind.FEIL, PHYSICAL, State.FAILED, Effect.APPLIED),
    (State.RETURNED, Kind.MOTTAK, PHYSICAL, None, Effect.OUT_OF_ORDER),
    (State.SENT, Kind.RETURPOST, PHYSICAL, State.RETURNED, Effect.APPLIED),
    (State.TRANSPORT_FAILED, Kind.LEVERING, DIGITAL, None, Effect.CONFLICT),
    (State.DELIVERED, Kind.VARSLINGFEILET, DIGITAL, None, Effect.RECORDED),
])
def test_decide(current: State, receipt: Kind, kind: ConsignmentKind, new: State | None,
                effect: Effect) -> None:
    d = decide(current, receipt, kind)
    assert (d.new_state, d.effect) == (new, effect)
    assert d.note


# --- surviving a restart ---------------------------------------------------------------------


def test_unconfirmed_receipts_and_pending_sends_survive_reopening(
        db: Path, cert: x509.Certificate) -> None:
    protection = RecipientProtection.hashed(KEY)
    s = SqliteStore(db, protection=protection)
    pending_id, _ = send(s, sent=False)
    _, cid = send(s)
    receipt = make_receipt(Kind.LEVERING, cid, cert)
    s.store_receipt(receipt)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.pending_sends()

    with SqliteStore(db, protection=protection) as again:
        assert [p.message_id for p in again.pending_sends()] == [pending_id]
        (unconfirmed,) = again.unconfirmed_receipts()
        assert unconfirmed.kvittering == receipt  # ready to confirm as is
        again.mark_confirmed(unconfirmed.kvittering)
    with SqliteStore(db, protection=protection) as third:
        assert third.unconfirmed_receipts() == []
        assert third.get(cid).state is State.DELIVERED  # type: ignore[union-attr]


def test_schema_is_versioned_and_durable(db: Path) -> None:
    SqliteStore(db, protection=RecipientProtection.plain()).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this code"):
        SqliteStore(db, protection=RecipientProtection.plain())


def test_connection_is_set_up_for_durability(store: SqliteStore) -> None:
    conn = store._conn  # the settings are per connection, so look at the store's own
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_sqlite_errors_are_typed(tmp_path: Path) -> None:
    junk = tmp_path / "not.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        SqliteStore(junk, protection=RecipientProtection.plain())


def test_open_store(db: Path) -> None:
    with pytest.raises(StoreConfigurationError):
        open_store("postgresql://host/db")
    store = open_store(f"sqlite:///{db}", protection=RecipientProtection.plain())
    assert isinstance(store, SqliteStore) and store.path == db
    store.close()


# --- personal data ---------------------------------------------------------------------------


def _file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_hash_protection_keeps_the_fodselsnummer_out_of_the_file(db: Path) -> None:
    with SqliteStore(db, protection=RecipientProtection.hashed(KEY)) as s:
        _, mine = send(s)
        send(s, recipient=OTHER_FNR)
        assert FNR.encode() not in _file_bytes(db)  # WAL included, before checkpoint
        assert [r.conversation_id for r in s.find_by_recipient(FNR)] == [mine]
        assert [r.conversation_id for r in
                s.find_by_recipient(parse_person_number(FNR))] == [mine]
        assert s.get(mine).recipient is None  # type: ignore[union-attr]
    data = _file_bytes(db)
    assert len(data) > 4096 and FNR.encode() not in data and OTHER_FNR.encode() not in data
    # Another key finds nobody, so it is refused rather than silently accepted.
    with pytest.raises(StoreConfigurationError, match="another store key"):
        SqliteStore(db, protection=RecipientProtection.hashed(b"k" * 32))


def test_encrypt_protection_round_trips_and_is_not_in_the_file(db: Path) -> None:
    with SqliteStore(db, protection=RecipientProtection.encrypted(KEY)) as s:
        _, cid = send(s)
        _, other = send(s, recipient=OTHER_FNR)
        assert s.get(cid).recipient == FNR  # type: ignore[union-attr]
        assert [r.recipient for r in s.find_by_recipient(OTHER_FNR)] == [OTHER_FNR]
    assert FNR.encode() not in _file_bytes(db)
    with pytest.raises(StoreConfigurationError, match="another recipient protection mode"):
        SqliteStore(db, protection=RecipientProtection.hashed(KEY))
    # A ciphertext moved to another row does not open (bound to its conversation id).
    conn = sqlite3.connect(db)
    conn.execute("UPDATE consignments SET recipient_sealed = (SELECT recipient_sealed FROM "
                 "consignments WHERE conversation_id = ?) WHERE conversation_id = ?",
                 (other, cid))
    conn.commit()
    conn.close()
    with SqliteStore(db, protection=RecipientProtection.encrypted(KEY)) as s:
        with pytest.raises(StoreError, match="does not decrypt"):
            s.get(cid)


def test_plain_protection_is_readable(db: Path) -> None:
    with SqliteStore(db, protection=RecipientProtection.plain()) as s:
        _, cid = send(s)
        assert s.get(cid).recipient == FNR  # type: ignore[union-attr]
    assert FNR.encode() in _file_bytes(db)


def test_protection_from_environment() -> None:
    with pytest.raises(StoreConfigurationError, match=KEY_ENV):
        RecipientProtection.from_env({})
    hashed = RecipientProtection.from_env({KEY_ENV: KEY.hex()})
    assert hashed.key == KEY and hashed.mode.value == "hash"
    import base64
    enc = RecipientProtection.from_env({MODE_ENV: "encrypt",
                                        KEY_ENV: base64.b64encode(KEY).decode()})
    assert enc.key == KEY and enc.mode.value == "encrypt"
    assert RecipientProtection.from_env({MODE_ENV: "plain"}).key is None
    with pytest.raises(StoreConfigurationError, match=MODE_ENV):
        RecipientProtection.from_env({MODE_ENV: "rot13", KEY_ENV: KEY.hex()})
    with pytest.raises(StoreConfigurationError, match="at least 16"):
        RecipientProtection.hashed(b"short")
    assert KEY not in repr(hashed).encode() and KEY.hex() not in repr(hashed)


# --- concurrency and crashes -----------------------------------------------------------------


def _full_flow(s: SqliteStore, signer: x509.Certificate, n: int) -> None:
    for _ in range(n):
        message_id, cid = _id(), _id()
        s.record_outgoing(message_id, cid, recipient=FNR, kind=DIGITAL, mpc=MPC)
        s.mark_sent(message_id, make_transport_receipt(message_id))
        k = make_receipt(Kind.LEVERING, cid, signer)
        s.store_receipt(k)
        s.mark_confirmed(k)
        s.get(cid)
        s.counts()


def _writer_process(db: str, signer_der: bytes, n: int) -> None:
    s = SqliteStore(db, protection=RecipientProtection.hashed(KEY))
    _full_flow(s, x509.load_der_x509_certificate(signer_der), n)
    s.close()


def test_two_threads_and_two_processes_write_at_once(db: Path, cert: x509.Certificate) -> None:
    SqliteStore(db, protection=RecipientProtection.hashed(KEY)).close()
    ctx = mp.get_context("spawn")
    der = cert.public_bytes(Encoding.DER)
    procs = [ctx.Process(target=_writer_process, args=(str(db), der, 25)) for _ in range(2)]
    for p in procs:
        p.start()
    errors: list[BaseException] = []
    shared = SqliteStore(db, protection=RecipientProtection.hashed(KEY))

    def run() -> None:
        try:
            _full_flow(shared, cert, 25)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(timeout=60)
    assert errors == []
    assert [p.exitcode for p in procs] == [0, 0]
    counts = shared.counts()
    assert counts[State.DELIVERED] == 100 and sum(counts.values()) == 100
    assert shared.unconfirmed_receipts() == [] and shared.check() == []
    shared.close()


def _loop_writer(db: str, signer_der: bytes) -> None:
    """Writes until killed; large envelopes make each transaction take a while."""
    s = SqliteStore(db, protection=RecipientProtection.hashed(KEY))
    signer = x509.load_der_x509_certificate(signer_der)
    while True:
        message_id, cid = _id(), _id()
        s.record_outgoing(message_id, cid, recipient=FNR, kind=DIGITAL, mpc=MPC)
        s.mark_sent(message_id, make_transport_receipt(message_id))
        s.store_receipt(make_receipt(Kind.LEVERING, cid, signer, envelope_size=200_000))


def _blocked_writer(db: str, started: Any) -> None:
    """Blocks forever inside the fourth record_outgoing, after some of its rows are written
    (the clock is read for the history row, after the consignment and send rows)."""
    calls = itertools.count()

    def clock() -> dt.datetime:
        if next(calls) == 7:
            started.set()
            time.sleep(600)
        return dt.datetime.now(dt.UTC)

    s = SqliteStore(db, protection=RecipientProtection.hashed(KEY), clock=clock)
    for i in range(10):
        s.record_outgoing(f"msg-{i}", f"conv-{i}", recipient=FNR, kind=DIGITAL, mpc=MPC)


def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_during_writes_leaves_the_store_consistent(db: Path,
                                                           cert: x509.Certificate) -> None:
    protection = RecipientProtection.hashed(KEY)
    SqliteStore(db, protection=protection).close()
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_loop_writer, args=(str(db), cert.public_bytes(Encoding.DER)))
    p.start()
    with SqliteStore(db, protection=protection) as watcher:
        _wait_for(lambda: watcher.counts()[State.DELIVERED] >= 5)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert p.exitcode == -signal.SIGKILL

    with SqliteStore(db, protection=protection) as s:
        assert s.check() == []
        for record in s.list(limit=10_000):
            full = s.get(record.conversation_id)
            assert full is not None
            # Each step is atomic: a state has exactly the rows that lead to it.
            expected = {State.SENDING: (1, 0), State.SENT: (2, 0), State.DELIVERED: (3, 1)}
            assert (len(full.history), len(full.receipts)) == expected[full.state]
        assert len(s.unconfirmed_receipts()) == s.counts()[State.DELIVERED]


def test_sigkill_inside_a_transaction_rolls_it_back(db: Path) -> None:
    protection = RecipientProtection.hashed(KEY)
    SqliteStore(db, protection=protection).close()
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    p = ctx.Process(target=_blocked_writer, args=(str(db), started))
    p.start()
    assert started.wait(30)
    # The child holds the write lock: it is inside the transaction right now ...
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        probe.execute("BEGIN IMMEDIATE")
    # ... and readers are not blocked meanwhile (WAL).
    assert probe.execute("SELECT COUNT(*) FROM consignments").fetchone()[0] == 3
    probe.close()
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join()

    with SqliteStore(db, protection=protection) as s:
        assert s.check() == []
        assert [r.conversation_id for r in s.list()] == ["conv-2", "conv-1", "conv-0"]
        assert s.get("conv-3") is None
        assert [x.message_id for x in s.pending_sends()] == ["msg-0", "msg-1", "msg-2"]
        s.record_outgoing("msg-3", "conv-3", recipient=FNR, kind=DIGITAL, mpc=MPC)
        assert s.get("conv-3").state is State.SENDING  # type: ignore[union-attr]
