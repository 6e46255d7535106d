"""The fault matrix: the simulator's request-level faults and receipt faults over loopback,
driven through `Outbox` and `pull_receipts` with a real SQLite store (DIGEST 8, 9.5, 14).

For every fault the test checks three things:

- the store's final state (and that nothing is left pending or unconfirmed);
- that the consignment was sent exactly once as far as the broker can tell: the store used
  one MessageId for every attempt, the broker accepted that MessageId once (its log and its
  `consignments` table), and every resend after the broker had processed the message hit its
  de-duplication (the broker's "duplicate ... original answer repeated" log line);
- that no receipt was lost or applied twice: the store holds exactly the receipts the broker
  queued (by SBD InstanceIdentifier), each once, the broker has a confirmation for every
  one, and every state in the history was entered once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sdp import devpki
from sdp.broker import Broker, Fault, Rule, RunningBroker, Scenarios, serve
from sdp.client import SdpClient
from sdp.consignment import Forsendelse, digital_post_info
from sdp.environment import Environment
from sdp.errors import CertificateChainError, OutcomeUnknownError, SignatureError
from sdp.outbox import Outbox, PullSummary, pull_receipts
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.store import RecipientProtection, SqliteStore, State
from sdp.transport import ConnectError, RetryPolicy, Timeouts
from sdp.wssecurity import SignerIdentityError
from tests.conftest import MAILBOX_ORGNR, SENDER_ORGNR

WINDOW = dt.timedelta(minutes=5)
ATTEMPTS = 3
#: Faults after which the broker has processed (and committed) the request.
PROCESSED = ("drop-after-processing", "slow", "truncate")
#: Faults that refuse the request before the broker looks at it.
UNPROCESSED = ("drop-before-read", "http-500")
#: What the client makes of each fault (all of them: the outcome is unknown).
HOW_IT_FAILS = {
    "drop-before-read": "Connection aborted|reset|RemoteDisconnected|Broken pipe",
    "http-500": "HTTP 500",
    "drop-after-processing": "Connection aborted|RemoteDisconnected|reset",
    "slow": "timed out",
    "truncate": "response not read completely",
}
#: The 'slow' fault waits this long; the client's read timeout is shorter.
SLOW_SECONDS = 3.0
SLOW_READ_TIMEOUT = 1.5


class Clock:
    """The broker's notion of time (the queue, leases), moved by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@dataclass
class Rig:
    """A simulator with its own data directory, a client, a store and an outbox."""

    running: RunningBroker
    client: SdpClient
    store: SqliteStore
    outbox: Outbox
    clock: Clock
    caplog: pytest.LogCaptureFixture
    restart: Callable[[], RunningBroker]
    mailbox: devpki.Identity
    sent: list[str] = field(default_factory=list)

    @property
    def broker(self) -> Broker:
        return self.running.broker

    def faults(self, *faults: Fault, rules: tuple[Rule, ...] = ()) -> None:
        self.broker.set_scenarios(Scenarios(rules, faults))

    def letter(self) -> Forsendelse:
        f = Forsendelse(
            avsender=avsender(SENDER_ORGNR),
            hoveddokument=Document(b"%PDF-1.7 brev", "brev.pdf", "application/pdf"),
            recipient_certificate=self.mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
            mottaker=mottaker("01043100358", "ola#1ABC"),
            digital_post_info=digital_post_info("Brev", aapningskvittering=True))
        self.sent.append(f.conversation_id)
        return f

    def drain(self) -> PullSummary:
        """Pull until empty, now and again after every lease has run out."""
        total = pull_receipts(self.client, self.store)
        self.clock.advance(WINDOW + dt.timedelta(seconds=1))
        again = pull_receipts(self.client, self.store)
        total.by_kind.update(again.by_kind)
        total.duplicates += again.duplicates
        total.reconfirmed += again.reconfirmed
        return total

    def log_count(self, prefix: str) -> Counter[str]:
        """Broker log lines starting with `prefix`, counted per MessageId."""
        return Counter(r.getMessage().split()[1].rstrip(":") for r in self.caplog.records
                       if r.name == "sdp.broker" and r.getMessage().startswith(prefix + " "))

    def failed_posts(self) -> int:
        """POSTs that failed as the client saw them (the faults that did hit)."""
        return sum(r.name == "sdp.transport" and (": outcome unknown (" in r.getMessage()
                                                  or r.getMessage().startswith("giving up"))
                   for r in self.caplog.records)


@pytest.fixture
def rig(tmp_path: Path, broker: devpki.Identity, mailbox: devpki.Identity,
        ca: devpki.Identity, intermediate: devpki.Identity, sender: devpki.Identity,
        caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[Rig]:
    caplog.set_level(logging.INFO, logger="sdp.broker")
    read = getattr(request, "param", 10.0)
    clock = Clock()
    data = tmp_path / "broker"

    def start(port: int = 0) -> RunningBroker:
        return serve(Broker(identity=broker, mailbox=mailbox, trust=[ca.certificate],
                            intermediates=[intermediate.certificate], data_dir=data,
                            invisibility_window=WINDOW, clock=clock,
                            fault_issuer=intermediate), port=port)

    running = start()

    def restart() -> RunningBroker:
        """The same port and data directory (stop the running one first)."""
        return start(running.port)

    env = Environment.custom(running.url, [ca.certificate, intermediate.certificate])
    client = SdpClient(env, sender, timeouts=Timeouts(connect=2, read=read),
                       retry=RetryPolicy(max_attempts=ATTEMPTS, initial_backoff=0.01,
                                         max_backoff=0.05, jitter=0))
    store = SqliteStore(tmp_path / "store.sqlite", protection=RecipientProtection.hashed(
        b"k" * 32))
    the_rig = Rig(running, client, store, Outbox(client, store, tmp_path / "outbox"), clock,
                  caplog, restart, mailbox)
    yield the_rig
    client.close()
    store.close()
    try:
        the_rig.running.stop()
    except Exception:
        pass


def assert_consistent(rig: Rig, final: State = State.OPENED) -> None:
    """The store's and the broker's views agree; nothing sent twice, lost or applied twice."""
    store, state = rig.store, rig.broker.state
    assert store.pending_sends() == []
    assert store.unconfirmed_receipts() == []
    assert store.check() == []
    by_cid = Counter(str(c["conversation_id"]) for c in state.consignments())
    assert by_cid == Counter(rig.sent), "each conversation reached the broker exactly once"
    broker_mid = {str(c["conversation_id"]): str(c["message_id"])
                  for c in state.consignments()}
    accepted = rig.log_count("accepted")
    for cid in rig.sent:
        record = store.get(cid)
        assert record is not None and record.state is final, (cid, record and record.state)
        (send,) = record.sends  # one MessageId for every attempt and every resume
        assert send.status == "sent" and send.message_id == broker_mid[cid]
        assert accepted[send.message_id] == 1
        entered = Counter(t.to_state for t in record.history)
        assert all(n == 1 for n in entered.values()), entered  # no receipt applied twice
    queued = {r.instance_id for r in state.receipts()}
    stored = [r.kvittering.sbd_instance_identifier
              for cid in rig.sent for r in store.get(cid).receipts]  # type: ignore[union-attr]
    assert len(stored) == len(set(stored)), "a receipt was stored twice"
    assert set(stored) == queued, "a receipt was lost"
    assert all(r.confirmed_at is not None for r in state.receipts()), "left on the queue"
    assert all(r.kvittering.kind.value in ("Leveringskvittering", "Aapningskvittering")
               for cid in rig.sent for r in store.get(cid).receipts)  # type: ignore[union-attr]


def _read_timeout(fault: str) -> float:
    return SLOW_READ_TIMEOUT if fault == "slow" else 10.0


# --- request-level faults on the send ------------------------------------------------------


@pytest.mark.parametrize(("fault", "times", "rig"), [
    pytest.param(f, t, _read_timeout(f), id=f"{f}-x{t}")
    for f in (*UNPROCESSED, *PROCESSED) for t in (1, ATTEMPTS)], indirect=["rig"])
def test_send_fault(fault: str, times: int, rig: Rig) -> None:
    """x1: the client's own retry (same MessageId) gets the answer. x3: every attempt fails,
    the Outbox leaves the send pending, and `resume` sends the same MessageId again."""
    rig.faults(Fault(fault, on="send", times=times, seconds=SLOW_SECONDS))
    letter = rig.letter()
    if times < ATTEMPTS:
        result = rig.outbox.send(letter)
        assert result.attempts == times + 1
    else:
        with pytest.raises(OutcomeUnknownError, match=HOW_IT_FAILS[fault]):
            rig.outbox.send(letter)
        (pending,) = rig.store.pending_sends()
        assert rig.store.get(letter.conversation_id).state is State.SENDING  # type: ignore[union-attr]
        (result,) = rig.outbox.resume()
        assert result.message_id == pending.message_id and result.attempts == 1
    assert rig.store.get(letter.conversation_id).state is State.SENT  # type: ignore[union-attr]
    assert rig.failed_posts() == times
    # Processed before the fault: every later attempt is a duplicate the broker recognised.
    # Refused before processing: the first attempt that got through was the only one.
    assert rig.log_count("duplicate")[result.message_id] == (
        times if fault in PROCESSED else 0)
    summary = rig.drain()
    assert summary.by_kind == {"Leveringskvittering": 1, "Aapningskvittering": 1}
    assert summary.duplicates == 0
    assert_consistent(rig)


# --- request-level faults on pulls: a lost pull response is re-delivered after the lease -----


@pytest.mark.parametrize(("fault", "rig"), [
    pytest.param(f, _read_timeout(f), id=f) for f in (*UNPROCESSED, *PROCESSED)],
    indirect=["rig"])
def test_pull_fault(fault: str, rig: Rig) -> None:
    rig.outbox.send(rig.letter())
    rig.faults(Fault(fault, on="signal", times=1, seconds=SLOW_SECONDS))
    first = pull_receipts(rig.client, rig.store)
    assert rig.failed_posts() == 1
    leased = [r for r in rig.broker.state.receipts() if r.confirmed_at is None]
    if fault in PROCESSED:
        # The Leveringskvittering was leased but its answer never arrived: it stays on the
        # queue, invisible, and nothing about it reached the store.
        assert first.by_kind == {"Aapningskvittering": 1}
        assert [r.kind for r in leased] == ["levering"] and leased[0].deliveries == 1
        # Out of order is fine: the opening implies the delivery.
        assert rig.store.get(rig.sent[0]).state is State.OPENED  # type: ignore[union-attr]
        rig.clock.advance(WINDOW - dt.timedelta(seconds=1))
        assert pull_receipts(rig.client, rig.store).total == 0  # still leased
    else:
        assert first.total == 2 and leased == []
    rest = rig.drain()
    assert rest.total == (1 if fault in PROCESSED else 0) and rest.duplicates == 0
    deliveries = sorted(r.deliveries for r in rig.broker.state.receipts())
    assert deliveries == ([1, 2] if fault in PROCESSED else [1, 1])
    assert_consistent(rig)


# --- receipts: duplicated, re-delivered after the window, stored but not confirmed ----------


def test_duplicated_receipts_are_stored_and_applied_once(rig: Rig) -> None:
    rig.faults(rules=(Rule(duplicate=True),))
    rig.outbox.send(rig.letter())
    summary = rig.drain()
    assert summary.by_kind == {"Leveringskvittering": 2, "Aapningskvittering": 2}
    assert summary.duplicates == 2
    queue = rig.broker.state.receipts()
    assert len(queue) == 4 and len({r.instance_id for r in queue}) == 2
    assert_consistent(rig)


def test_receipt_redelivered_after_its_window_is_recognised(rig: Rig) -> None:
    """A receipt loop dies after storing a receipt and before confirming it; the lease runs
    out and the broker offers the same receipt again under a new MessageId. The copy is a
    duplicate, changes nothing, and its confirmation settles the stored original."""
    rig.outbox.send(rig.letter())
    original = rig.client.pull()
    assert original is not None
    assert not rig.store.store_receipt(original).duplicate  # ... and the process dies
    rig.clock.advance(WINDOW + dt.timedelta(seconds=1))
    copy = rig.client.pull()  # another loop, started before the first one came back
    assert copy is not None
    assert copy.sbd_instance_identifier == original.sbd_instance_identifier
    assert copy.message_id != original.message_id
    again = rig.store.store_receipt(copy)
    assert again.duplicate and again.state_after is State.DELIVERED
    rig.client.confirm(copy)
    rig.store.mark_confirmed(copy)
    summary = rig.drain()
    assert summary.by_kind == {"Aapningskvittering": 1}
    assert summary.reconfirmed == 0  # the copy's confirmation settled the original
    assert_consistent(rig)


def test_receipt_stored_but_not_confirmed_is_confirmed_not_taken_again(rig: Rig) -> None:
    """Killed between storing and confirming, restarted after the lease ran out: the loop
    confirms the stored receipt first, so the broker never hands it out a second time."""
    rig.outbox.send(rig.letter())
    original = rig.client.pull()
    assert original is not None
    rig.store.store_receipt(original)
    rig.clock.advance(WINDOW + dt.timedelta(seconds=1))
    summary = rig.drain()
    assert summary.reconfirmed == 1
    assert summary.by_kind == {"Aapningskvittering": 1}
    assert sorted(r.deliveries for r in rig.broker.state.receipts()) == [1, 1]
    assert_consistent(rig)


# --- the broker restarts with receipts queued, leased and a send in flight ------------------


def test_broker_restart_mid_queue(rig: Rig) -> None:
    for _ in range(3):
        rig.outbox.send(rig.letter())
    assert pull_receipts(rig.client, rig.store, limit=2).total == 2  # the first letter's
    # Three pulls whose answers are lost: three receipts leased, none stored.
    rig.faults(Fault("drop-after-processing", on="signal", times=ATTEMPTS))
    with pytest.raises(OutcomeUnknownError):
        pull_receipts(rig.client, rig.store)
    leased = [r for r in rig.broker.state.receipts() if r.deliveries and r.confirmed_at is None]
    assert len(leased) == ATTEMPTS
    assert rig.client.pull(priority=True) is None  # leaves a kept-alive connection behind
    rig.running.stop()  # ... which must die with the broker, as in a real restart
    late = rig.letter()
    with pytest.raises(ConnectError):  # the broker is down: nothing reached it
        rig.outbox.send(late)
    assert rig.store.get(late.conversation_id).state is State.SENDING  # type: ignore[union-attr]
    rig.running = rig.restart()  # same port, same data directory, faults gone
    (resumed,) = rig.outbox.resume()
    assert resumed.conversation_id == late.conversation_id
    # The leases survived the restart: the leased receipts stay hidden until they run out.
    before_window = pull_receipts(rig.client, rig.store)
    assert before_window.total == 2 * 4 - 2 - ATTEMPTS
    states = {cid: rig.store.get(cid).state for cid in rig.sent}  # type: ignore[union-attr]
    assert states[rig.sent[1]] is State.SENT  # both of its receipts are leased
    rest = rig.drain()
    assert rest.total == ATTEMPTS and rest.duplicates == 0
    assert sum(r.deliveries == 2 for r in rig.broker.state.receipts()) == ATTEMPTS
    assert rig.broker.state.consignment_count() == 4
    assert_consistent(rig)


# --- transport receipts that cannot be trusted ----------------------------------------------


@pytest.mark.parametrize(("signer", "error"), [
    ("untrusted", CertificateChainError),
    ("expired", CertificateChainError),
    ("wrong-orgnr", SignerIdentityError),
])
def test_untrustworthy_transport_receipt_keeps_the_send_pending(
        signer: str, error: type[SignatureError], rig: Rig) -> None:
    """A transport receipt that fails verification proves nothing: not that the broker has
    the letter (so not SENT), and not that it refused it (so not TRANSPORT_FAILED, which
    invites a resend under a new MessageId: a second letter, DIGEST 9.5). The send stays
    pending; resuming it with the same MessageId is harmless (the broker de-duplicates); the
    mailbox's signed receipts then prove it was sent and delivered."""
    rig.faults(rules=(Rule(transport_receipt=signer),))
    letter = rig.letter()
    with pytest.raises(error):
        rig.outbox.send(letter)
    (pending,) = rig.store.pending_sends()
    record = rig.store.get(letter.conversation_id)
    assert record is not None and record.state is State.SENDING
    assert rig.broker.state.consignment_count() == 1  # it did reach the broker
    assert rig.outbox.resume() == []  # the same forged answer again: still pending
    assert [p.message_id for p in rig.store.pending_sends()] == [pending.message_id]
    assert rig.log_count("duplicate")[pending.message_id] == 1
    summary = rig.drain()
    assert summary.by_kind == {"Leveringskvittering": 1, "Aapningskvittering": 1}
    record = rig.store.get(letter.conversation_id)
    assert record is not None
    assert [t.to_state for t in record.history] == [
        State.SENDING, State.SENT, State.DELIVERED, State.OPENED]
    assert record.history[1].reason.startswith("implied by")
    assert record.sends[0].receipt_message_id is None  # the forged receipt is not kept
    assert rig.outbox.resume() == []  # nothing left to resend
    assert_consistent(rig)
