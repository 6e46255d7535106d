"""Crash safety: a sender killed with SIGKILL at random moments loses and duplicates nothing.

A batch of consignments and the receipt loop run in a child process (`tests.crash_worker`)
that is killed at a random moment after it has started working, at least `KILLS` times, and
restarted each time; a last run is left to finish. The moment is drawn in units of the
worker's progress plus a random fraction of a unit, so that the kills are spread over the
whole batch however fast the machine is, and the batch does not finish before the last
kill. The simulator runs in this process with its own data directory, so its SQLite state
is the broker's view. Then: every consignment is in its final state, the broker took each
MessageId as a new message once and each consignment once, and the store holds exactly the
receipts the broker queued, all confirmed.

The kill moments come from `random.Random(seed)`; set `SDP_CRASH_SEED` to repeat a run. The
seed is printed and named in every failure message.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sdp import devpki
from sdp.broker import Broker, serve
from sdp.store import State
from tests import crash_worker as worker

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 20
KILLS = 20
#: Each kill is placed at a random unit of the batch's work (a send acknowledged, a receipt
#: stored and confirmed), never in the last few, then 0 to MAX_KILL_DELAY seconds later:
#: anywhere inside the next unit. A send takes a few milliseconds since the fast bindings
#: landed, so the delay is short and the spare generous: otherwise the batch could finish
#: before the last kill.
SPARE_UNITS = 10
MAX_KILL_DELAY = 0.03
#: Short, so that a receipt leased by a killed worker comes back soon (real clock).
WINDOW = dt.timedelta(seconds=1)


def _seed() -> int:
    given = os.environ.get("SDP_CRASH_SEED")
    return int(given) if given else time.time_ns() % 2**32


def _write_pki(work: Path, ca: devpki.Identity, intermediate: devpki.Identity,
               sender: devpki.Identity, mailbox: devpki.Identity) -> None:
    pem = serialization.Encoding.PEM
    (work / "sender.p12").write_bytes(sender.to_pkcs12(worker.PASSWORD))
    (work / "ca.pem").write_bytes(ca.certificate.public_bytes(pem))
    (work / "intermediate.pem").write_bytes(intermediate.certificate.public_bytes(pem))
    (work / "mailbox.pem").write_bytes(mailbox.certificate.public_bytes(pem))


def _start(work: Path, url: str) -> subprocess.Popen[str]:
    """A worker; its stderr goes to `worker.log` so that it can never block on a full pipe."""
    with (work / "worker.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crash_worker", str(work), url, str(BATCH_SIZE)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)


def _log_tail(work: Path) -> str:
    return (work / "worker.log").read_text(errors="replace")[-3000:]


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
        tmp_path: Path, ca: devpki.Identity, intermediate: devpki.Identity,
        sender: devpki.Identity, mailbox: devpki.Identity, broker: devpki.Identity,
        caplog: pytest.LogCaptureFixture) -> None:
    seed = _seed()
    print(f"SDP_CRASH_SEED={seed}")
    rng = random.Random(seed)
    caplog.set_level(logging.INFO, logger="sdp.broker")
    work = tmp_path / "sender"
    work.mkdir()
    _write_pki(work, ca, intermediate, sender, mailbox)
    running = serve(Broker(identity=broker, mailbox=mailbox, trust=[ca.certificate],
                           intermediates=[intermediate.certificate],
                           data_dir=tmp_path / "broker", invisibility_window=WINDOW))
    total = worker.total_units(BATCH_SIZE)
    targets = sorted(rng.randrange(total - SPARE_UNITS) for _ in range(KILLS))
    kills = 0
    proc: subprocess.Popen[str] | None = None
    try:
        while kills < KILLS:
            proc = _start(work, running.url)
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if not line or line[0] != "ready":
                proc.wait(timeout=30)
                pytest.fail(f"SDP_CRASH_SEED={seed}: worker failed to start "
                            f"(exit {proc.returncode}): {_log_tail(work)}")
            steps = targets[kills] - int(line[1])
            while steps > 0 and proc.stdout.readline() == "step\n":
                steps -= 1
            try:
                code = proc.wait(timeout=rng.uniform(0, MAX_KILL_DELAY))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
            else:  # the batch was complete before the kill came: nothing left to crash
                assert code == 0, (f"SDP_CRASH_SEED={seed}: worker exited {code}: "
                                   f"{_log_tail(work)}")
                break
            finally:
                proc.stdout.close()
        with worker.open_store(work) as store:
            done_before_last_run = sum(r.is_final for r in store.list(limit=1000))
        proc = _start(work, running.url)
        proc.communicate(timeout=worker.DEADLINE + 30)
        assert proc.returncode == 0, (f"SDP_CRASH_SEED={seed}: the last run exited "
                                      f"{proc.returncode}: {_log_tail(work)}")
        try:
            _check(work, running.broker, caplog)
        except AssertionError as exc:
            raise AssertionError(f"SDP_CRASH_SEED={seed} ({kills} kills): {exc}") from exc
        assert kills >= KILLS, (f"SDP_CRASH_SEED={seed}: the batch finished after only "
                                f"{kills} kills; make it bigger or the kills sooner")
        duplicates = sum(r.getMessage().startswith("duplicate ") for r in caplog.records
                         if r.name == "sdp.broker")
        redelivered = sum(r.deliveries - 1 for r in running.broker.state.receipts())
        print(f"{done_before_last_run}/{BATCH_SIZE} final before the last run")
        print(f"{kills} kills; the broker de-duplicated {duplicates} resends and re-delivered "
              f"{redelivered} receipts after their lease")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        running.stop()


def _check(work: Path, broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    state = broker.state
    messages = [r.getMessage().split() for r in caplog.records if r.name == "sdp.broker"]
    accepted = Counter(m[1] for m in messages if m[0] == "accepted")
    assert accepted and max(accepted.values()) == 1, "a MessageId was taken as new twice"
    consignments = state.consignments()
    by_conversation = Counter(str(c["conversation_id"]) for c in consignments)
    expected_ids = {worker.conversation_id(i) for i in range(BATCH_SIZE)}
    assert set(by_conversation) == expected_ids and max(by_conversation.values()) == 1, (
        f"consignments per conversation at the broker: {by_conversation}")
    assert set(accepted) == {str(c["message_id"]) for c in consignments}
    queued = {r.instance_id for r in state.receipts()}
    unconfirmed = [r for r in state.receipts() if r.confirmed_at is None]
    assert not unconfirmed, f"left on the broker's queue: {unconfirmed}"
    broker_mid = {str(c["conversation_id"]): str(c["message_id"]) for c in consignments}
    with worker.open_store(work) as store:
        assert store.check() == []
        assert store.pending_sends() == [] and store.unconfirmed_receipts() == []
        stored: list[str] = []
        for i in range(BATCH_SIZE):
            cid = worker.conversation_id(i)
            record = store.get(cid)
            assert record is not None, f"consignment {i} never recorded"
            want = State.OPENED if worker.wants_opening(i) else State.DELIVERED
            assert record.state is want, f"consignment {i}: {record.state}, not {want}"
            (send,) = record.sends
            assert send.status == "sent" and send.message_id == broker_mid[cid]
            entered = Counter(t.to_state for t in record.history)
            assert max(entered.values()) == 1, f"consignment {i}: {entered}"
            stored += [r.kvittering.sbd_instance_identifier for r in record.receipts]
        assert len(stored) == len(set(stored)), "a receipt stored twice"
        assert set(stored) == queued, "the store and the broker disagree on the receipts"
        assert len(store.list(limit=1000)) == BATCH_SIZE
        assert store.orphan_receipts() == []
