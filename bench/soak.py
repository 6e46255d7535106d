"""Soak test: many small consignments through the simulator with faults, the receipt loop running.

Three processes, so that each figure belongs to the part it describes:

* the broker (`sdp.broker`) in a child of its own, with its own data folder, injecting every
  request fault the simulator knows (`FAULT_TYPES`: dropped connections before and after
  processing, HTTP 500, slow and truncated answers) into sends, pulls and confirmations
  alike, a request meeting one with probability `--fault-rate` (the simulator's `Fault.rate`,
  seeded, so a run can be repeated);
* the sender, in another child: `--senders` threads each sending through an `Outbox` with
  its own `SdpClient` (a small back-off `RetryPolicy`), and a receipt-loop thread running
  `pull_receipts` over and over on its own client and store connection, all the while. After
  the last send it resumes every send still pending, then drains receipts until every
  consignment is final, then keeps pulling until nothing has come for longer than the
  broker's lease, so receipts hidden by a dropped answer come back and are collected;
* this process, which afterwards compares the broker's own SQLite record with the sender's
  store, so that nothing the sender says about itself is taken on trust.

Every second consignment asks for an Aapningskvittering; every twentieth goes to an address
for which the broker queues each receipt twice on purpose (the sender must store it once).

Figures: sent (consignments attempted), acknowledged (verified transport receipts in the
store), receipts stored, confirmed, lost (receipts the broker made that the store lacks),
duplicated (a consignment the broker accepted twice, a receipt or a state change applied
twice), p50/p99 of `Outbox.send` wall time (retries included), and the sender process's RSS
every COUNT/100 consignments: the median over the last tenth of the run may be at most
RSS_GROWTH_LIMIT_MIB above the median over 20-30 %, so memory must not grow with the count.

    python bench/soak.py [--count 10000] [--fault-rate 0.05] [--senders 2] [--seed 1]

Exit status 1 when a check fails, 2 when a child fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common

from sdp.broker import FAULT_TYPES, Broker, Fault, Rule, Scenarios, load_dev_certs, serve
from sdp.broker.scenarios import FaultInjector
from sdp.client import SdpClient
from sdp.consignment import Forsendelse, digital_post_info
from sdp.environment import Environment
from sdp.errors import OutcomeUnknownError, SdpError, SignatureError
from sdp.keys import load_certificates, load_signing_identity
from sdp.outbox import Outbox, pull_receipts
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.receipts import Kind, Kvittering
from sdp.store import ReceiptOutcome, RecipientProtection, SqliteStore, State
from sdp.transport import ConnectError, RetryPolicy, Timeouts

DEFAULT_COUNT = 10_000
DEFAULT_FAULT_RATE = 0.05
DEFAULT_SENDERS = 2
#: A few KB per consignment keeps 10,000 of them within minutes.
DOCUMENT_BYTES = 4_000
#: The broker's invisibility window: a receipt whose pull answer was dropped is offered again
#: after this long (the default five minutes would stall the drain).
LEASE_SECONDS = 3.0
#: How long a "slow" fault holds the answer back; well inside the client's read timeout.
SLOW_SECONDS = 0.25
#: After the last send: resume pending sends for at most this long.
RESUME_SECONDS = 120.0
#: The drain goes on while receipts keep coming (the receipt loop may be thousands behind
#: after the sends); it gives up when none has come for this long.
STALL_SECONDS = 60.0
BROKER_START_SECONDS = 30.0
#: Memory is sampled this many times over the run.
RSS_SAMPLES = 100
#: Flatness: median RSS over 90-100 % of the sends minus the median over 20-30 %.
RSS_GROWTH_LIMIT_MIB = 8.0
AAPNING_EVERY = 2
DUPLICATE_EVERY = 20

PASSWORD = "soak-only"  # a throw-away development PKI
SENDER_ORGNR = "991825827"
MAILBOX_ORGNR = "996460320"
PERSON = "01043100358"
ADDRESS = "ola.nordmann#1ABC"
#: The broker queues every receipt for this address twice (its duplicate scenario).
DUPLICATE_ADDRESS = "kari.nordmann#2DEF"
PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
MIB = 1024.0

log = logging.getLogger("soak")


def memory_mib() -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of this process, in MiB."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0}
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) / MIB
    return found


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually measured, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fault_plan(rate: float, seed: int) -> tuple[Fault, ...]:
    """One fault of each of the k types on every kind of request; the per-type chance p is
    chosen so that 1 - (1 - p)^k = rate: a request meets some fault with probability `rate`."""
    if rate <= 0:
        return ()
    each = 1 - (1 - rate) ** (1 / len(FAULT_TYPES))
    return tuple(Fault(kind, on="any", times=0, rate=each, seed=seed * 100 + i,
                       seconds=SLOW_SECONDS if kind == "slow" else 0.0)
                 for i, kind in enumerate(FAULT_TYPES))


def make_pki(directory: Path) -> None:
    common.make_pki(directory, password=PASSWORD, sender_orgnr=SENDER_ORGNR,
                    mailbox_orgnr=MAILBOX_ORGNR)


# --- broker child ---------------------------------------------------------------------------


class CountingFaults(FaultInjector):
    """The simulator's injector, counting requests and the faults it really injected, so the
    report shows the rate achieved rather than the rate asked for."""

    def __init__(self, faults: tuple[Fault, ...]) -> None:
        super().__init__(faults)
        self.injected: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def take(self, fault_type: str, request_kind: str) -> Fault | None:
        fault = super().take(fault_type, request_kind)
        with self._count_lock:
            if fault_type == "drop-before-read":  # the first question about every request
                self.requests[request_kind] += 1
            if fault is not None:
                self.injected[f"{fault_type} ({request_kind})"] += 1
        return fault


def broker_child(work: Path, rate: float, seed: int) -> int:
    """Serve until stdin closes (so the parent's exit, however it happens, stops us), then
    print the fault counts as one JSON line."""
    logging.basicConfig(level=logging.ERROR, format="broker %(levelname)s %(name)s: %(message)s")
    certs = load_dev_certs(work / "pki", PASSWORD)
    scenarios = Scenarios(rules=(Rule(postkasseadresse=DUPLICATE_ADDRESS, duplicate=True),),
                          faults=fault_plan(rate, seed))
    broker = Broker(identity=certs.broker, mailbox=certs.mailbox,
                    print_provider=certs.print_provider, trust=certs.trust,
                    intermediates=certs.intermediates, data_dir=work / "broker",
                    scenarios=scenarios,
                    invisibility_window=dt.timedelta(seconds=LEASE_SECONDS))
    counting = CountingFaults(scenarios.faults)
    broker.faults = counting
    running = serve(broker)
    url_file = work / "broker.url"
    part = url_file.with_suffix(".part")
    part.write_text(running.url, encoding="utf-8")
    part.replace(url_file)  # the parent never reads half a URL
    try:
        sys.stdin.buffer.read()
    finally:
        running.stop()
    print(json.dumps({"requests": dict(counting.requests),
                      "faults": dict(sorted(counting.injected.items())),
                      "peak_rss_mib": memory_mib()["VmHWM"]}))
    return 0


# --- sender child ---------------------------------------------------------------------------


class Soak:
    """Everything the sender threads and the receipt loop share, guarded by one lock."""

    def __init__(self, work: Path, url: str, count: int) -> None:
        pki = work / "pki"
        self.identity = load_signing_identity(pki / "sender.p12", PASSWORD)
        self.mailbox_cert = load_certificates(pki / "mailbox.pem")[0]
        cas = load_certificates(pki / "ca.pem") + load_certificates(pki / "intermediate.pem")
        self.environment = Environment.custom(url, cas)
        self.store_path = work / "store.sqlite3"
        self.protection = RecipientProtection.hashed(RecipientProtection.new_key())
        self.outbox_folder = work / "outbox"
        self.count = count
        self.lock = threading.Lock()
        self.next_index = 0
        self.done = 0
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.crashes: list[str] = []
        self.latencies: list[float] = []
        self.expected = Counter[str]()  # consignments by the state they must end in
        self.rss: list[tuple[int, float, float]] = []
        self.sample_every = max(1, count // RSS_SAMPLES)
        self.report_every = max(1, count // 20)
        self.receipts: Counter[str] = Counter()
        self.redelivered = 0
        self.reconfirmed = 0
        self.orphans = 0
        self.loop_errors: Counter[str] = Counter()
        self.last_receipt = time.monotonic()
        self.stop_receipts = threading.Event()
        self.started = time.monotonic()

    def client(self) -> SdpClient:
        """One per thread (a Transport is not shared); a short back-off keeps retries cheap."""
        return SdpClient(self.environment, self.identity, timeouts=Timeouts(connect=5, read=15),
                         retry=RetryPolicy(max_attempts=8, initial_backoff=0.05,
                                           max_backoff=1.0, jitter=0.5))

    def open_store(self) -> SqliteStore:
        return SqliteStore(self.store_path, protection=self.protection)

    def consignment(self, index: int) -> tuple[Forsendelse, bool]:
        """A fresh small letter (a Document is consumed by one build); every second one asks
        for an opening receipt, every twentieth goes to the duplicating address."""
        aapning = index % AAPNING_EVERY == 0
        address = DUPLICATE_ADDRESS if index % DUPLICATE_EVERY == 1 else ADDRESS
        body = PDF_HEAD + os.urandom(DOCUMENT_BYTES - len(PDF_HEAD))
        return Forsendelse(
            avsender=avsender(SENDER_ORGNR),
            hoveddokument=Document(body, "brev.pdf", "application/pdf", title="Brev"),
            recipient_certificate=self.mailbox_cert, receiver_orgnr=MAILBOX_ORGNR,
            mottaker=mottaker(PERSON, address),
            digital_post_info=digital_post_info(f"Brev {index}", aapningskvittering=aapning),
        ), aapning

    def take_index(self) -> int | None:
        with self.lock:
            if self.next_index >= self.count or self.crashes:
                return None
            self.next_index += 1
            return self.next_index - 1

    def sender(self, store: SqliteStore) -> None:
        """Send until the shared count is used up; an unexpected exception is a crash."""
        try:
            with self.client() as client:
                outbox = Outbox(client, store, self.outbox_folder)
                while (index := self.take_index()) is not None:
                    forsendelse, aapning = self.consignment(index)
                    started = time.perf_counter()
                    try:
                        outbox.send(forsendelse)
                        outcome = "acknowledged"
                    except (OutcomeUnknownError, ConnectError, SignatureError):
                        outcome = "pending"  # Outbox left it pending: resumed at the end
                    except SdpError as exc:
                        outcome = "failed"
                        with self.lock:
                            self.errors.append(f"{type(exc).__name__}: {exc}")
                    self.finished(outcome, time.perf_counter() - started,
                                  None if outcome == "failed" else aapning)
        except Exception as exc:
            with self.lock:
                self.crashes.append(f"sender: {type(exc).__name__}: {exc}")
            log.exception("sender thread crashed")

    def finished(self, outcome: str, seconds: float, aapning: bool | None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            self.latencies.append(seconds)
            if aapning is not None:
                self.expected[State.OPENED.value if aapning else State.DELIVERED.value] += 1
            self.done += 1
            done = self.done
            receipts = sum(self.receipts.values())
        if done % self.sample_every == 0 or done == self.count:
            mem = memory_mib()
            with self.lock:
                self.rss.append((done, mem["VmRSS"], time.monotonic() - self.started))
        if done % self.report_every == 0:
            elapsed = time.monotonic() - self.started
            print(f"[soak] {done}/{self.count} sent ({done / elapsed:.1f}/s), "
                  f"{receipts} receipts, RSS {memory_mib()['VmRSS']:.1f} MiB",
                  file=sys.stderr, flush=True)

    def receipt_loop(self) -> None:
        """`pull_receipts` again and again, as a sender's receipt job would; after the stop
        signal, one more complete pass."""
        try:
            with self.client() as client, self.open_store() as store:
                while True:
                    stopping = self.stop_receipts.is_set()
                    try:
                        summary = pull_receipts(client, store, on_receipt=self.received)
                    except SdpError as exc:  # e.g. a confirmation out of retries
                        with self.lock:
                            self.loop_errors[type(exc).__name__] += 1
                        time.sleep(0.1)
                        continue
                    with self.lock:
                        self.reconfirmed += summary.reconfirmed
                    if stopping:
                        return
                    if not summary.total:
                        self.stop_receipts.wait(0.1)
        except Exception as exc:
            with self.lock:
                self.crashes.append(f"receipt loop: {type(exc).__name__}: {exc}")
            log.exception("receipt loop crashed")

    def received(self, receipt: Kvittering, outcome: ReceiptOutcome) -> None:
        """Counted as each receipt is stored and confirmed: a pass of `pull_receipts` lasts
        as long as the queue is never empty, which is the whole run while sending."""
        with self.lock:
            self.receipts[receipt.kind.value] += 1
            self.redelivered += outcome.duplicate
            self.orphans += outcome.orphan
            self.last_receipt = time.monotonic()

    def quiet(self) -> float:
        """Seconds since the last receipt was stored."""
        with self.lock:
            return time.monotonic() - self.last_receipt

    def complete(self, store: SqliteStore) -> bool:
        """Every consignment in the state it must end in, and every levering stored (an
        aapning can arrive first when the levering's pull answer was dropped)."""
        counts = store.counts()
        with self.lock:
            expected = dict(self.expected)
        if any(counts[State(state)] != n for state, n in expected.items()):
            return False
        with contextlib.closing(sqlite3.connect(f"file:{self.store_path}?mode=ro",
                                                uri=True)) as db:
            levering = db.execute("SELECT COUNT(DISTINCT conversation_id) FROM receipts "
                                  "WHERE kind = ?", (Kind.LEVERING.value,)).fetchone()[0]
        return bool(levering == sum(expected.values()))


def sender_child(work: Path, url: str, count: int, senders: int) -> dict[str, Any]:
    """Send, resume, drain; every figure about the sender process comes from here."""
    logging.basicConfig(level=logging.ERROR, format="sender %(levelname)s %(name)s: %(message)s")
    idle = memory_mib()
    soak = Soak(work, url, count)
    receipts = threading.Thread(target=soak.receipt_loop, name="receipt-loop")
    receipts.start()
    with soak.open_store() as store:
        threads = [threading.Thread(target=soak.sender, args=(store,), name=f"sender-{i}")
                   for i in range(senders)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        send_seconds = time.monotonic() - started

        deadline = time.monotonic() + RESUME_SECONDS
        resumed = 0
        with soak.client() as client:
            outbox = Outbox(client, store, soak.outbox_folder)
            while store.pending_sends() and time.monotonic() < deadline and not soak.crashes:
                results = outbox.resume()
                resumed += len(results)
                for result in results:
                    log.info("resumed %s", result.conversation_id)
                if store.pending_sends():
                    time.sleep(0.5)
        complete = False
        while not soak.crashes and soak.quiet() < STALL_SECONDS:
            if soak.complete(store):
                complete = True
                break
            time.sleep(0.25)
        drain_seconds = time.monotonic() - started - send_seconds
        # Receipts hidden by a dropped pull answer reappear after the lease: keep pulling
        # until nothing has come for longer than that.
        while not soak.crashes and soak.quiet() <= LEASE_SECONDS + 1:
            time.sleep(0.2)
        soak.stop_receipts.set()
        receipts.join()
        pending_left = len(store.pending_sends())
    mem = memory_mib()  # after the drain: not part of the series, which is per consignment
    return {
        "count": count,
        "senders": senders,
        "outcomes": dict(soak.outcomes),
        "resumed": resumed,
        "pending_left": pending_left,
        "complete": complete,
        "send_seconds": send_seconds,
        "drain_seconds": drain_seconds,
        "latencies": soak.latencies,
        "receipts_pulled": dict(soak.receipts),
        "redelivered": soak.redelivered,
        "reconfirmed": soak.reconfirmed,
        "orphans": soak.orphans,
        "loop_errors": dict(soak.loop_errors),
        "errors": soak.errors[:10],
        "crashes": soak.crashes,
        "idle_rss_mib": idle["VmRSS"],
        "rss": soak.rss,
        "drained_rss_mib": mem["VmRSS"],
        "peak_rss_mib": mem["VmHWM"],
    }


# --- parent ---------------------------------------------------------------------------------


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def audit(work: Path) -> dict[str, Any]:
    """The broker's SQLite record against the sender's store, both closed: what the broker
    accepted and queued is the truth the store is held to."""
    bdb, sdb = work / "broker" / "broker.sqlite3", work / "store.sqlite3"
    accepted = Counter(r[0] for r in _rows(bdb, "SELECT conversation_id FROM consignments"))
    queued = _rows(bdb, "SELECT r.instance_id, r.kind, c.conversation_id, r.confirmed_at, "
                        "r.deliveries FROM receipts r JOIN consignments c "
                        "ON c.id = r.consignment_id")
    made = {r[0]: (r[1], r[2]) for r in queued}
    stored = _rows(sdb, "SELECT sbd_instance_identifier, conversation_id, kind, confirmed_at "
                        "FROM receipts")
    have = {r[0] for r in stored}
    states = dict(_rows(sdb, "SELECT conversation_id, state FROM consignments"))
    sends = Counter(r[0] for r in _rows(sdb, "SELECT status FROM sends"))
    acknowledged = _rows(sdb, "SELECT COUNT(*) FROM sends WHERE tr_message_id IS NOT NULL")
    per_kind = Counter((r[1], r[2]) for r in stored)
    repeated = _rows(sdb, "SELECT COUNT(*) - COUNT(DISTINCT conversation_id || ' ' || to_state)"
                          " FROM history")
    kinds_made: dict[str, set[str]] = {}
    for kind, conversation in made.values():
        kinds_made.setdefault(conversation, set()).add(kind)
    not_final = sum(1 for conversation in accepted if states.get(conversation) != (
        State.OPENED.value if "aapning" in kinds_made.get(conversation, ())
        else State.DELIVERED.value))
    return {
        "store_consignments": len(states),
        "broker_accepted": len(accepted),
        "acknowledged": acknowledged[0][0],
        "sends": dict(sends),
        "expected_receipts": len(made),
        "broker_receipt_rows": len(queued),
        "intentional_duplicates": len(queued) - len(made),
        "redelivered_by_broker": sum(max(0, r[4] - 1) for r in queued),
        "left_unconfirmed_at_broker": sum(1 for r in queued if r[3] is None),
        "receipts_stored": len(stored),
        "confirmed": sum(1 for r in stored if r[3] is not None),
        "lost": len(set(made) - have),
        "unexpected_receipts": len(have - set(made)),
        "duplicate_consignments": sum(n - 1 for n in accepted.values()),
        "duplicate_receipts": sum(n - 1 for n in per_kind.values()),
        "repeated_transitions": repeated[0][0],
        "never_accepted": len(set(states) - set(accepted)),
        "not_final": not_final,
    }


def _median_between(rss: list[list[float]], count: int, low: float, high: float) -> float:
    window = [r[1] for r in rss if low * count <= r[0] <= high * count]
    return statistics.median(window) if window else math.nan


def start_broker(work: Path, rate: float, seed: int) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--broker-child", str(work),
           "--fault-rate", repr(rate), "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return proc, common.wait_for_url(proc, work / "broker.url", BROKER_START_SECONDS)


def stop_broker(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=60)  # closes its stdin: the stop signal
    if proc.returncode != 0:
        raise RuntimeError(f"the broker child exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def run(work: Path, count: int, rate: float, senders: int, seed: int) -> dict[str, Any]:
    make_pki(work / "pki")
    broker, url = start_broker(work, rate, seed)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sender-child", str(work),
               "--url", url, "--count", str(count), "--senders", str(senders)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    finally:
        broker_report = stop_broker(broker)
    if proc.returncode != 0:
        raise RuntimeError(f"the sender child exited with {proc.returncode}")
    sender: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"sender": sender, "broker": broker_report, "audit": audit(work)}


def summarise(raw: dict[str, Any], rate: float, seed: int) -> dict[str, Any]:
    """The figures the issue asks for, plus the evidence behind them."""
    s, b, a = raw["sender"], raw["broker"], raw["audit"]
    count = s["count"]
    lat = s["latencies"]
    early = _median_between(s["rss"], count, 0.2, 0.3)
    late = _median_between(s["rss"], count, 0.9, 1.0)
    requests = sum(b["requests"].values())
    injected = sum(b["faults"].values())
    return {
        "count": count, "fault_rate": rate, "senders": s["senders"], "seed": seed,
        "sent": sum(s["outcomes"].values()),
        "acknowledged": a["acknowledged"],
        "receipts_stored": a["receipts_stored"],
        "confirmed": a["confirmed"],
        "lost": a["lost"],
        "duplicated": (a["duplicate_consignments"] + a["duplicate_receipts"]
                       + a["repeated_transitions"]),
        "latency_p50_ms": percentile(lat, 50) * 1000,
        "latency_p99_ms": percentile(lat, 99) * 1000,
        "latency_max_ms": max(lat, default=math.nan) * 1000,
        "send_seconds": s["send_seconds"],
        "sends_per_second": len(lat) / s["send_seconds"] if s["send_seconds"] else math.nan,
        "drain_seconds": s["drain_seconds"],
        "rss_mib_20_30": early, "rss_mib_90_100": late, "rss_growth_mib": late - early,
        "rss_idle_mib": s["idle_rss_mib"], "rss_peak_mib": s["peak_rss_mib"],
        "rss_after_drain_mib": s["drained_rss_mib"],
        "rss_series": [[int(d), round(m, 1), round(t, 1)] for d, m, t in s["rss"]],
        "requests": b["requests"], "faults_injected": b["faults"],
        "fault_rate_achieved": injected / requests if requests else 0.0,
        "broker_peak_rss_mib": b["peak_rss_mib"],
        "send_outcomes": s["outcomes"], "resumed": s["resumed"],
        "pending_left": s["pending_left"], "complete": s["complete"],
        "receipts_pulled": s["receipts_pulled"], "redelivered_deduplicated": s["redelivered"],
        "reconfirmed": s["reconfirmed"], "orphans": s["orphans"],
        "receipt_loop_errors": s["loop_errors"], "send_errors": s["errors"],
        "crashes": s["crashes"], "audit": a,
    }


def checks(f: dict[str, Any]) -> list[tuple[str, bool, str]]:
    a = f["audit"]
    final = (a["not_final"] == 0 and f["pending_left"] == 0 and a["never_accepted"] == 0
             and a["sends"].get("failed", 0) == 0)
    return [
        ("no receipt lost", f["lost"] == 0, str(f["lost"])),
        ("nothing duplicated", f["duplicated"] == 0,
         f"{a['duplicate_consignments']} consignments, {a['duplicate_receipts']} receipts, "
         f"{a['repeated_transitions']} transitions"),
        ("no receipt the broker never made", a["unexpected_receipts"] == 0,
         str(a["unexpected_receipts"])),
        ("every consignment accepted once and final", final,
         f"{a['not_final']} not final, {f['pending_left']} pending, "
         f"{a['sends'].get('failed', 0)} failed"),
        ("every stored receipt confirmed", f["confirmed"] == f["receipts_stored"],
         f"{f['confirmed']}/{f['receipts_stored']}"),
        (f"RSS flat (90-100 % <= 20-30 % + {RSS_GROWTH_LIMIT_MIB:g} MiB)",
         f["rss_growth_mib"] <= RSS_GROWTH_LIMIT_MIB, f"{f['rss_growth_mib']:+.1f} MiB"),
        ("no crash", not f["crashes"], "; ".join(f["crashes"]) or "none"),
    ]


def print_report(f: dict[str, Any]) -> None:
    a = f["audit"]
    print(f"python {sys.version.split()[0]}, {f['count']} consignments of {DOCUMENT_BYTES} B, "
          f"{f['senders']} sender thread(s) + receipt loop, fault rate {f['fault_rate']:g} "
          f"(achieved {f['fault_rate_achieved']:.3f} over {sum(f['requests'].values())} "
          f"requests), seed {f['seed']}")
    rows = [
        ("sent", f"{f['sent']}"),
        ("acknowledged (transport receipts)", f"{f['acknowledged']}"),
        ("receipts stored", f"{f['receipts_stored']} (broker made {a['expected_receipts']}; "
                            f"+{a['intentional_duplicates']} queued twice on purpose)"),
        ("confirmed", f"{f['confirmed']}"),
        ("lost", f"{f['lost']}"),
        ("duplicated", f"{f['duplicated']}"),
        ("send latency p50 / p99 / max", f"{f['latency_p50_ms']:.0f} / "
                                         f"{f['latency_p99_ms']:.0f} / "
                                         f"{f['latency_max_ms']:.0f} ms"),
        ("send rate", f"{f['sends_per_second']:.1f}/s over {f['send_seconds']:.0f} s; "
                      f"drain {f['drain_seconds']:.1f} s"),
        ("sender RSS at 20-30 % / 90-100 %", f"{f['rss_mib_20_30']:.1f} / "
                                             f"{f['rss_mib_90_100']:.1f} MiB "
                                             f"({f['rss_growth_mib']:+.1f})"),
        ("sender RSS idle / after drain / peak", f"{f['rss_idle_mib']:.1f} / "
                                                 f"{f['rss_after_drain_mib']:.1f} / "
                                                 f"{f['rss_peak_mib']:.1f} MiB (VmHWM)"),
        ("broker peak RSS", f"{f['broker_peak_rss_mib']:.1f} MiB"),
        ("send outcomes", f"{f['send_outcomes']}, resumed {f['resumed']}"),
        ("redelivered (stored once)", f"{f['redelivered_deduplicated']} "
                                      f"(broker delivered {a['redelivered_by_broker']} "
                                      f"extra times)"),
        ("receipt loop retries exhausted", f"{f['receipt_loop_errors'] or 0}"),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in f["faults_injected"].items())
         or "none"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    series = f["rss_series"]
    shown = series[::max(1, len(series) // 10)]
    if series and shown[-1] is not series[-1]:
        shown.append(series[-1])
    print("sender RSS over the run (consignments: MiB): "
          + ", ".join(f"{d}: {m}" for d, m, _ in shown))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"consignments to send (default {DEFAULT_COUNT})")
    parser.add_argument("--fault-rate", type=float, default=DEFAULT_FAULT_RATE,
                        help=f"chance that a request meets a fault, 0-0.5 "
                             f"(default {DEFAULT_FAULT_RATE})")
    parser.add_argument("--senders", type=int, default=DEFAULT_SENDERS,
                        help=f"sender threads (default {DEFAULT_SENDERS})")
    parser.add_argument("--seed", type=int, default=1, help="fault draws' seed (default 1)")
    parser.add_argument("--dir", type=Path,
                        help="keep the PKI, broker data and store here (an empty folder)")
    parser.add_argument("--broker-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sender-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.broker_child is not None:
        return broker_child(args.broker_child, args.fault_rate, args.seed)
    if args.sender_child is not None:
        print(json.dumps(sender_child(args.sender_child, args.url, args.count, args.senders)))
        return 0
    if args.count < 1 or args.senders < 1 or not 0 <= args.fault_rate <= 0.5:
        parser.error("need --count >= 1, --senders >= 1 and 0 <= --fault-rate <= 0.5")

    try:
        with _workdir(args.dir) as work:
            raw = run(work, args.count, args.fault_rate, args.senders, args.seed)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    figures = summarise(raw, args.fault_rate, args.seed)
    print_report(figures)
    results = checks(figures)
    for name, passed, evidence in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {evidence}")
    figures["checks"] = [{"check": n, "pass": p, "value": v} for n, p, v in results]
    print(json.dumps(figures))
    return 0 if all(p for _, p, _ in results) else 1


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="sdp-soak-") as tmp:
            yield Path(tmp)
        return
    if keep.exists() and any(keep.iterdir()):
        raise RuntimeError(f"{keep} is not empty")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


if __name__ == "__main__":
    sys.exit(main())
