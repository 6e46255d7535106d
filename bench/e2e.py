"""End-to-end send benchmark: 100 KB consignments through the local broker over loopback.

The broker (`sdp.broker`) runs in its own child process by default, so its work (verifying,
decrypting, opening the package, signing receipts) is never billed to the sender. Each sender
configuration runs in a fresh child process against that broker and reports one JSON line:

* consignments per second: N sends / wall time, with 1 and with K threads, each thread with
  its own `SdpClient` (the client's Transport is one per thread);
* sender CPU per consignment: user + system time of the whole sender process
  (getrusage(RUSAGE_SELF)) over the timed sends, divided by N. With `--broker thread` the
  broker shares the process, so the sum of the sender threads' own CPU clocks is used instead;
* the crypto floor in the same process: the three RSA-2048 PKCS#1 v1.5 SHA-256 signatures a
  consignment cannot do without (XAdES of the package, the SBD, WS-Security), signed with
  `cryptography` and the sender's own key, averaged over >= 1 s of repetitions (CPU time).
  Verifying the transport receipt (an RSA public-key operation) and RSA-OAEP key transport to
  the mailbox are also necessary, but cheap; they are timed and shown, not part of the floor;
* the broker child's CPU per consignment over the same interval (from /proc), which with the
  sender's tells whether CPU or waiting bounds the rate;
* a second, informative baseline, "bare": everything a consignment needs that is neither XML
  nor protocol logic, done with the same libraries in the same process: read and SHA-256 the
  document, zip it (stored, as the package does for PDF), the three signatures, RSA-OAEP and
  AES-256-CBC of the zip, SHA-256 of the result, one keep-alive POST of the same size over
  loopback (http.client, to a sink process that answers with a receipt-sized body) and one
  RSA verification. What the library costs above it is the XML, canonicalization, parsing,
  checks and bookkeeping of the protocol.

Every send must come back with a verified transport receipt signed by the broker on the first
attempt (no retries), so a fast wrong answer cannot pass. Timed sends follow a warm-up of
WARMUP sends per thread (imports, schema loading, connection set-up).

    python bench/e2e.py [--count 200] [--senders 4] [--broker process|thread] [--profile]
                        [--stages]

`--stages` adds the thread CPU of each stage of a send (package, SBD, envelope, WS-Security,
HTTP, transport receipt), over as many further single-threaded sends. `--profile` adds a
cProfile (on the thread's CPU clock, so waiting for the broker does not
show) of single-threaded sends to stderr, to explain a missed target.
Exit status 1 when a target is missed, 2 when a child fails.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import http.client
import http.server
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import common
import cryptography
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sdp import client as client_module
from sdp import ebms as ebms_module
from sdp import wssecurity as wss_module
from sdp.broker import Broker, RunningBroker, load_dev_certs, serve
from sdp.client import SdpClient, SendResult
from sdp.consignment import Forsendelse, digital_post_info
from sdp.environment import Environment
from sdp.keys import SigningIdentity, load_certificates, load_signing_identity
from sdp.package.documents import Document
from sdp.package.dokumentpakke import build_package
from sdp.parties import avsender, mottaker
from sdp.transport import RetryPolicy, Timeouts

DOCUMENT_BYTES = 100_000
DEFAULT_COUNT = 200
DEFAULT_SENDERS = 4
#: Untimed sends per thread before the clock starts.
WARMUP = 2
#: The floor and the extra crypto are averaged over at least this much CPU time each.
FLOOR_SECONDS = 1.0
#: Single-threaded sends under cProfile with --profile (after, and apart from, the timing).
PROFILE_COUNT = 100
#: How long the parent waits for the broker child to listen.
BROKER_START_SECONDS = 30.0
#: Target from the issue: sender CPU per consignment at most this many floors.
FLOOR_RATIO_TARGET = 2.5

PASSWORD = "bench-only"  # a throw-away development PKI
SENDER_ORGNR = "991825827"
MAILBOX_ORGNR = "996460320"
PERSON = "01043100358"
POSTKASSEADRESSE = "ola.nordmann#1ABC"
#: About the size of the SignedInfo (or SBD digest input) that each of the three signs.
SIGNED_BYTES = 700
#: Sizes of what the bare baseline sends and gets back besides the package: the SOAP part
#: of a request and a transport receipt, as bench runs of the library measure them.
BARE_ENVELOPE_BYTES = 7_000
BARE_RESPONSE_BYTES = 6_200
#: Bare consignments timed (after a few untimed ones).
BARE_COUNT = 300


# --- shared ---------------------------------------------------------------------------------


def make_pki(directory: Path) -> None:
    common.make_pki(directory, password=PASSWORD, sender_orgnr=SENDER_ORGNR,
                    mailbox_orgnr=MAILBOX_ORGNR)


def start_broker(pki: Path, data_dir: Path) -> RunningBroker:
    """The simulator as `sdp broker serve` sets it up, on a free loopback port."""
    certs = load_dev_certs(pki, PASSWORD)
    broker = Broker(identity=certs.broker, mailbox=certs.mailbox,
                    print_provider=certs.print_provider, trust=certs.trust,
                    intermediates=certs.intermediates, data_dir=data_dir)
    return serve(broker, port=0)


def cpu_seconds() -> float:
    """This process's user + system CPU: every thread's, and the kernel's work for them."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of another process (the broker child), where /proc shows it."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- broker child ---------------------------------------------------------------------------


def pin(role: str) -> None:
    """Keep the sender on the first CPU and its peers (broker, sink) on the others.

    Unpinned, the scheduler sometimes ran the broker on the core the sender had just left,
    and the sender came back to cold caches: the same code cost up to 45 % more CPU from one
    run to the next. Pinned, every configuration and both baselines see the same kind of
    core. Not done with a single CPU, or where the OS has no affinity call."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(0, cpus[:1] if role == "sender" else cpus[1:])


def broker_child(pki: Path, url_file: Path) -> int:
    """Serve until stdin closes: the parent's exit, however it happens, stops the broker."""
    pin("broker")
    running = start_broker(pki, pki / "broker-data")
    part = url_file.with_suffix(".part")
    part.write_text(running.url, encoding="utf-8")
    part.replace(url_file)  # the parent never reads half a URL
    try:
        sys.stdin.buffer.read()
    finally:
        running.stop()
    return 0


# --- sender child ---------------------------------------------------------------------------


def _write_document(path: Path, size: int) -> None:
    """PDF-like but incompressible, so zip deflate cannot shrink the work."""
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    path.write_bytes(head + os.urandom(size - len(head)))


def _per_call(fn: Callable[[], object], seconds: float) -> float:
    """Average CPU seconds of one call, over at least `seconds` of CPU time."""
    fn()  # first call outside the average: lazy initialisation is not crypto
    calls = 0
    start = time.process_time()
    while True:
        fn()
        calls += 1
        spent = time.process_time() - start
        if spent >= seconds and calls >= 20:
            return spent / calls


def crypto_costs(signer: SigningIdentity, mailbox_key: rsa.RSAPublicKey) -> dict[str, float]:
    """The floor (three signatures) and the necessary public-key extras, in CPU seconds."""
    key = signer.key
    inputs = [os.urandom(SIGNED_BYTES) for _ in range(3)]
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def three_signatures() -> None:
        for data in inputs:
            key.sign(data, pkcs1, sha256)

    signature = key.sign(inputs[0], pkcs1, sha256)
    public = key.public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    content_key = os.urandom(32)
    return {
        "floor_s": _per_call(three_signatures, FLOOR_SECONDS),
        "rsa_verify_s": _per_call(lambda: public.verify(signature, inputs[0], pkcs1, sha256),
                                  FLOOR_SECONDS / 4),
        "rsa_oaep_encrypt_s": _per_call(lambda: mailbox_key.encrypt(content_key, oaep),
                                        FLOOR_SECONDS / 4),
    }


class _Sink(http.server.BaseHTTPRequestHandler):
    """Reads a POST body and answers with a receipt-sized one; the bare baseline's peer."""

    protocol_version = "HTTP/1.1"
    # Buffered, so status, headers and body leave in one write (flushed after each request);
    # unbuffered, the body waited for the client's delayed ACK (Nagle), 40 ms a request.
    wbufsize = 1 << 16
    answer = os.urandom(BARE_RESPONSE_BYTES)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def sink_child(url_file: Path) -> int:
    """Serve the sink until stdin closes, like the broker child."""
    pin("sink")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    part = url_file.with_suffix(".part")
    part.write_text(f"http://127.0.0.1:{server.server_address[1]}/", encoding="utf-8")
    part.replace(url_file)
    try:
        sys.stdin.buffer.read()
    finally:
        server.shutdown()
    return 0


def bare_cost(signer: SigningIdentity, mailbox_key: rsa.RSAPublicKey, document: Path,
              sink_url: str) -> float:
    """CPU seconds of one consignment's necessary non-XML work (see the module docstring)."""
    key, public = signer.key, signer.key.public_key()
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    small = [os.urandom(SIGNED_BYTES) for _ in range(3)]
    envelope = os.urandom(BARE_ENVELOPE_BYTES)
    receipt_signature = key.sign(small[0], pkcs1, sha256)
    parts = urlsplit(sink_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    def one() -> None:
        data = document.read_bytes()
        hashlib.sha256(data).digest()  # the document's digest in XAdES
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("mimetype", b"application/vnd.etsi.asic-e+zip")
            zf.writestr("brev.pdf", data)
        key.sign(small[0], pkcs1, sha256)  # XAdES
        content_key, iv = os.urandom(32), os.urandom(16)
        mailbox_key.encrypt(content_key, oaep)
        plain = buffer.getvalue()
        pad = 16 - len(plain) % 16
        encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
        package = encryptor.update(plain + bytes((pad,)) * pad) + encryptor.finalize()
        hashlib.sha256(package).digest()  # the fingerprint
        key.sign(small[1], pkcs1, sha256)  # SBD
        key.sign(small[2], pkcs1, sha256)  # WS-Security
        conn.request("POST", parts.path or "/", body=envelope + package,
                     headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        public.verify(receipt_signature, small[0], pkcs1, sha256)  # the transport receipt

    try:
        for _ in range(WARMUP * 5):
            one()
        start = time.process_time()
        for _ in range(BARE_COUNT):
            one()
        return (time.process_time() - start) / BARE_COUNT
    finally:
        conn.close()


class Sender:
    """What every sender thread shares: identity, environment and the consignment recipe."""

    def __init__(self, pki: Path, url: str, document: Path) -> None:
        self.identity = load_signing_identity(pki / "sender.p12", PASSWORD)
        self.mailbox_cert = load_certificates(pki / "mailbox.pem")[0]
        cas = load_certificates(pki / "ca.pem") + load_certificates(pki / "intermediate.pem")
        self.environment = Environment.custom(url, cas)
        self.document = document

    def client(self) -> SdpClient:
        # One attempt only: a resend would hide a failure and double the work measured.
        return SdpClient(self.environment, self.identity,
                         timeouts=Timeouts(connect=10, read=120),
                         retry=RetryPolicy(max_attempts=1))

    def consignment(self) -> Forsendelse:
        # A Document is consumed by one build, so every consignment gets its own.
        return Forsendelse(
            avsender=avsender(SENDER_ORGNR),
            hoveddokument=Document(self.document, "brev.pdf", "application/pdf", title="Brev"),
            recipient_certificate=self.mailbox_cert, receiver_orgnr=MAILBOX_ORGNR,
            mottaker=mottaker(PERSON, POSTKASSEADRESSE),
            digital_post_info=digital_post_info("Brev fra kommunen"))

    def send(self, client: SdpClient) -> SendResult:
        result = client.send(self.consignment())
        receipt = result.transport_receipt
        if result.attempts != 1 or receipt.signer_orgnr != self.environment.mf_orgnr:
            raise RuntimeError(f"send {result.message_id}: {result.attempts} attempts, "
                               f"receipt signed by {receipt.signer_orgnr}")
        return result


@dataclass(frozen=True)
class Timing:
    """One timed run, in seconds."""

    wall_s: float
    process_cpu_s: float
    thread_cpu_s: float
    broker_cpu_s: float | None


def timed_sends(sender: Sender, count: int, threads: int, broker_pid: int | None) -> Timing:
    """N sends spread over `threads` threads; wall time and CPU from the start signal on.

    The broker child's CPU over the same interval is read too: with the sender's, it tells
    whose CPU bounds the throughput."""
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    thread_cpu = [0.0] * threads
    errors: list[BaseException] = []

    def work(index: int) -> None:
        share = count // threads + (index < count % threads)
        try:
            with sender.client() as client:
                for _ in range(WARMUP):
                    sender.send(client)
                ready.wait()
                go.wait()
                start = time.thread_time()
                for _ in range(share):
                    sender.send(client)
                thread_cpu[index] = time.thread_time() - start
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            ready.abort()

    workers = [threading.Thread(target=work, args=(i,), name=f"sender-{i}")
               for i in range(threads)]
    for w in workers:
        w.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    broker0 = process_cpu_seconds(broker_pid)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    go.set()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    broker1 = process_cpu_seconds(broker_pid)
    broker_cpu = None if broker0 is None or broker1 is None else broker1 - broker0
    if errors:
        raise RuntimeError(f"{len(errors)} sender thread(s) failed") from errors[0]
    return Timing(wall, cpu, sum(thread_cpu), broker_cpu)


#: The stages `--stages` times, in the order a send runs them: (label, owner, attribute).
STAGES: tuple[tuple[str, Any, str], ...] = (
    ("package (zip, XAdES, CMS)", client_module, "build_package"),
    ("business message + SBD, signed", client_module, "build_digital_post_sbd"),
    ("ebMS header + envelope", ebms_module, "build_envelope"),
    ("WS-Security signature", wss_module, "sign"),
    ("HTTP POST (MIME, urllib3)", SdpClient, "_post"),
    ("transport receipt: verify, parse, match", SdpClient, "_transport_receipt"),
)


HOT_PACKAGE = "package again, back to back (not part of a send)"


def _stages(sender: Sender, count: int) -> dict[str, float]:
    """Thread CPU ms per consignment in each stage of single-threaded sends, and the rest."""
    spent = dict.fromkeys([label for label, _, _ in STAGES], 0.0)
    originals = [(owner, name, getattr(owner, name)) for _, owner, name in STAGES]

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - start
        return wrapper

    with sender.client() as client:
        sender.send(client)
        for (label, owner, name), (_, _, fn) in zip(STAGES, originals, strict=True):
            setattr(owner, name, timed(label, fn))
        try:
            start = time.thread_time()
            for _ in range(count):
                sender.send(client)
            total = time.thread_time() - start
        finally:
            for owner, name, fn in originals:
                setattr(owner, name, fn)
    result = {label: s / count * 1000 for label, s in spent.items()}
    result["everything else (ids, dataclasses, logging, ...)"] = (
        total / count * 1000 - sum(result.values()))
    # The same package step back to back, never waiting for the broker: on a virtual machine
    # a CPU left idle between sends comes back slower (caches, frequency), which the stages
    # above pay and a hot loop does not.
    identity = sender.identity
    start = time.thread_time()
    for _ in range(count):
        f = sender.consignment()
        build_package(
            io.BytesIO(), hoveddokument=f.hoveddokument, vedlegg=f.vedlegg,
            avsender=f.avsender, mottaker=f.mottaker, signer=identity,
            recipient=f.recipient_certificate)
    result[HOT_PACKAGE] = (time.thread_time() - start) / count * 1000
    return result


def _profile(sender: Sender, count: int) -> None:
    """Where a single sender's CPU goes, to stderr: the thread's CPU clock, not wall time,
    so waiting for the broker does not show."""
    profiler = cProfile.Profile(time.thread_time)
    with sender.client() as client:
        sender.send(client)
        profiler.enable()
        for _ in range(count):
            sender.send(client)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    print(f"--- cProfile (thread CPU time) of {count} single-threaded sends ---", file=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    print(out.getvalue(), file=sys.stderr)


def sender_child(pki: Path, url: str | None, broker_pid: int | None, count: int, threads: int,
                 profile: bool, sink_url: str | None, stages: bool = False) -> dict[str, Any]:
    """Measure one configuration; the floor comes from this same process."""
    pin("sender")
    with tempfile.TemporaryDirectory(prefix="sdp-e2e-") as tmp:
        work = Path(tmp)
        in_process = url is None
        running = start_broker(pki, work / "broker-data") if in_process else None
        try:
            document = work / "brev.pdf"
            _write_document(document, DOCUMENT_BYTES)
            sender = Sender(pki, running.url if running else str(url), document)
            mailbox_key = sender.mailbox_cert.public_key()
            assert isinstance(mailbox_key, rsa.RSAPublicKey)
            crypto = crypto_costs(sender.identity, mailbox_key)
            measured = timed_sends(sender, count, threads, broker_pid)
            # After the sends, so that no sender thread shares the process clock with it.
            bare = bare_cost(sender.identity, mailbox_key, document, sink_url) \
                if sink_url else None
            stage_ms = _stages(sender, count) if stages else None
            if profile:
                _profile(sender, min(count, PROFILE_COUNT))
        finally:
            if running is not None:
                running.stop()
    # In-process, the broker's threads burn CPU in this process too; count the senders' own.
    cpu = measured.thread_cpu_s if in_process else measured.process_cpu_s
    per = cpu / count
    # In-process, the broker's share is what the sender threads did not use.
    broker_cpu = measured.process_cpu_s - cpu if in_process else measured.broker_cpu_s
    return {
        "broker": "thread" if in_process else "process",
        "senders": threads,
        "count": count,
        "document_bytes": DOCUMENT_BYTES,
        **asdict(measured),
        "cpu_source": "sender threads" if in_process else "process rusage",
        "consignments_per_s": count / measured.wall_s,
        "sender_cpu_ms": per * 1000,
        "broker_cpu_ms": None if broker_cpu is None else broker_cpu / count * 1000,
        "floor_ms": crypto["floor_s"] * 1000,
        "rsa_verify_ms": crypto["rsa_verify_s"] * 1000,
        "rsa_oaep_encrypt_ms": crypto["rsa_oaep_encrypt_s"] * 1000,
        "ratio_to_floor": per / crypto["floor_s"],
        "stages_ms": stage_ms,
        "bare_ms": None if bare is None else bare * 1000,
        "ratio_to_bare": None if bare is None else per / bare,
    }


# --- parent ---------------------------------------------------------------------------------


def _this(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def launch_broker(pki: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The broker child and its URL, once it listens."""
    url_file = pki / "broker.url"
    proc = subprocess.Popen(_this("--broker-child", str(pki), str(url_file)),
                            stdin=subprocess.PIPE)
    return proc, common.wait_for_url(proc, url_file, BROKER_START_SECONDS)


def launch_sink(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The bare baseline's HTTP peer, in its own process like the broker."""
    url_file = work / "sink.url"
    proc = subprocess.Popen(_this("--sink-child", str(url_file)), stdin=subprocess.PIPE)
    return proc, common.wait_for_url(proc, url_file, BROKER_START_SECONDS)


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    """Closing stdin is the stop signal; a broker that does not stop is killed."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_sender(pki: Path, broker: tuple[subprocess.Popen[bytes], str] | None, count: int,
               threads: int, profile: bool, sink_url: str, stages: bool) -> dict[str, Any]:
    args = ["--sender-child", str(pki), "--count", str(count), "--senders", str(threads),
            "--sink-url", sink_url]
    if stages:
        args.append("--stages")
    if broker is not None:
        args += ["--url", broker[1], "--broker-pid", str(broker[0].pid)]
    if profile:
        args.append("--profile")
    proc = subprocess.run(_this(*args), stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sender child ({threads} threads) exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    header = (f"{'senders':>7} {'N':>5} {'wall s':>7} {'cons/s':>7} {'sender CPU ms':>13} "
              f"{'floor ms':>8} {'/floor':>6} {'bare ms':>7} {'/bare':>5} "
              f"{'broker CPU ms':>13}")
    print(header)
    print("-" * len(header))
    for r in results:
        broker = "n/a" if r["broker_cpu_ms"] is None else f"{r['broker_cpu_ms']:.2f}"
        print(f"{r['senders']:>7} {r['count']:>5} {r['wall_s']:7.2f} "
              f"{r['consignments_per_s']:7.1f} {r['sender_cpu_ms']:13.2f} "
              f"{r['floor_ms']:8.2f} {r['ratio_to_floor']:6.2f} {r['bare_ms']:7.2f} "
              f"{r['ratio_to_bare']:5.2f} {broker:>13}")


def targets(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    return [(f"{r['senders']} sender(s): CPU per consignment <= {FLOOR_RATIO_TARGET:g} x floor",
             r["ratio_to_floor"] <= FLOOR_RATIO_TARGET,
             f"{r['sender_cpu_ms']:.2f} ms = {r['ratio_to_floor']:.2f} x {r['floor_ms']:.2f} ms")
            for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"timed consignments per configuration (default {DEFAULT_COUNT})")
    parser.add_argument("--senders", type=int, default=DEFAULT_SENDERS,
                        help=f"concurrent sender threads of the second run "
                        f"(default {DEFAULT_SENDERS})")
    parser.add_argument("--broker", choices=("process", "thread"), default="process",
                        help="broker in its own process (default) or in the sender's")
    parser.add_argument("--profile", action="store_true",
                        help=f"also cProfile {PROFILE_COUNT} single-threaded sends to stderr")
    parser.add_argument("--stages", action="store_true",
                        help="also time each stage of single-threaded sends (thread CPU)")
    parser.add_argument("--broker-child", nargs=2, type=Path, metavar=("PKI", "URLFILE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--sender-child", type=Path, metavar="PKI", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sink-child", type=Path, metavar="URLFILE", help=argparse.SUPPRESS)
    parser.add_argument("--sink-url", help=argparse.SUPPRESS)
    parser.add_argument("--broker-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    count, senders = max(1, args.count), max(1, args.senders)

    if args.broker_child is not None:
        return broker_child(*args.broker_child)
    if args.sink_child is not None:
        return sink_child(args.sink_child)
    if args.sender_child is not None:
        print(json.dumps(sender_child(args.sender_child, args.url, args.broker_pid, count,
                                      senders, args.profile, args.sink_url, args.stages)))
        return 0

    configurations = [1] if senders == 1 else [1, senders]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sdp-e2e-pki-") as tmp:
        pki = Path(tmp)
        make_pki(pki)
        broker: tuple[subprocess.Popen[bytes], str] | None = None
        sink: tuple[subprocess.Popen[bytes], str] | None = None
        try:
            sink = launch_sink(pki)
            if args.broker == "process":
                broker = launch_broker(pki)
            for threads in configurations:
                # Profile the single sender only: cProfile sees one thread.
                one = threads == 1  # cProfile and the stage clocks see one thread
                results.append(run_sender(pki, broker, count, threads,
                                          args.profile and one, sink[1], args.stages and one))
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            for child in (broker, sink):
                if child is not None:
                    stop_broker(child[0])

    print(f"python {sys.version.split()[0]}, cryptography {cryptography.__version__}, "
          f"{openssl_backend.openssl_version_text()}, {os.cpu_count()} CPUs, "
          f"broker in its own {'process' if args.broker == 'process' else 'thread'}; "
          f"{DOCUMENT_BYTES // 1000} KB incompressible main document, digital post, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d}")
    print_table(results)
    whose = ("sender process user+sys" if args.broker == "process"
             else "sum of the sender threads' CPU clocks")
    rest = "its process" if args.broker == "process" else "the rest of the process"
    print(f"CPU ms are per consignment: {whose} (broker: {rest}) over the timed sends "
          "/ N; floor = 3 RSA-2048 PKCS#1 v1.5 SHA-256 signatures (XAdES, SBD, WS-Security); "
          "bare = the floor plus everything else a consignment needs that is not XML or "
          "protocol logic (document and package SHA-256, zip, RSA-OAEP, AES-256-CBC, one "
          "loopback POST of the same size, one RSA verify), timed in the same process")
    for r in results[:1]:
        print(f"floor extras: RSA verify {r['rsa_verify_ms']:.3f} ms, RSA-OAEP "
              f"{r['rsa_oaep_encrypt_ms']:.3f} ms")
        if r.get("stages_ms"):
            print(f"stages of {r['count']} more single-threaded sends, thread CPU ms each:")
            for label, ms in r["stages_ms"].items():
                print(f"  {label:<50} {ms:6.2f}")
    checks = targets(results)
    for name, passed, evidence in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {evidence}")
    print(json.dumps({"results": results,
                      "targets": [{"target": n, "pass": p, "value": v} for n, p, v in checks]}))
    return 0 if all(p for _, p, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
