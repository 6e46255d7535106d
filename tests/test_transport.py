"""The HTTP layer over real loopback servers: streaming, errors, retries (DIGEST 7.9, 9.5)."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import http.client
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sdp import transport as transport_module
from sdp.errors import (
    ConfigurationError,
    InputError,
    MimeError,
    OutcomeUnknownError,
    TransportError,
)
from sdp.mime import (
    SOAP_CONTENT_TYPE,
    Attachment,
    MultipartBody,
    new_content_id,
    parse_message,
)
from sdp.transport import (
    USER_AGENT,
    ConnectError,
    HttpServerError,
    HttpStatusError,
    ResponseTooLargeError,
    RetryPolicy,
    Timeouts,
    TlsError,
    Transport,
    with_retries,
)

ENVELOPE = (b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
            b"<p>Ola Nordmann 01017012345</p></env:Body></env:Envelope>")
FAST = Timeouts(connect=1.0, read=0.3)


# --- a loopback server whose behaviour each test controls -------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    client_port: int


Respond = Callable[[BaseHTTPRequestHandler, Received, int], None]


@dataclass
class Server:
    url: str
    received: list[Received] = field(default_factory=list)


def reply(handler: BaseHTTPRequestHandler, status: int = 200, body: bytes = ENVELOPE,
          content_type: str = SOAP_CONTENT_TYPE) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def hang_up(handler: BaseHTTPRequestHandler) -> None:
    """Read the request, then close the connection without answering."""
    handler.close_connection = True


@contextmanager
def serve(respond: Respond = lambda h, r, i: reply(h), *, spool: Path | None = None,
          tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """A ThreadingHTTPServer on 127.0.0.1. With `spool`, request bodies go to that file in
    blocks instead of memory (so the client's memory use can be measured)."""
    server_state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            length = int(headers.get("content-length", "0"))
            if spool is not None:
                with open(spool, "wb") as fh:
                    left = length
                    while left:
                        block = self.rfile.read(min(65536, left))
                        if not block:
                            break
                        fh.write(block)
                        left -= len(block)
                body = b""
            else:
                body = self.rfile.read(length)
            rec = Received(headers, body, self.client_address[1])
            server_state.received.append(rec)
            try:
                respond(self, rec, len(server_state.received))
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    scheme = "http"
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    server_state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}/api/ebms"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(timeouts=FAST) as t:
        yield t


# --- streaming multipart round trips ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 70_000])
def test_multipart_round_trip(transport: Transport, size: int) -> None:
    payload = os.urandom(size)
    cid = new_content_id()
    body = MultipartBody(ENVELOPE, Attachment(cid, payload))
    with serve() as srv:
        resp = transport.post(srv.url, body)
    assert resp.status == 200
    assert resp.body == ENVELOPE
    (got,) = srv.received
    assert got.headers["content-type"] == body.content_type
    assert got.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in got.headers
    assert got.body == body.to_bytes()
    parsed = parse_message(got.headers["content-type"], got.body)
    assert parsed.envelope == ENVELOPE
    assert parsed.attachment(f"cid:{cid}").data == payload


def test_large_attachment_is_streamed_from_disk_with_content_length(
        transport: Transport, tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    source = tmp_path / "package.cms"
    digest = hashlib.sha256()
    with open(source, "wb") as fh:
        for _ in range(size // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            fh.write(block)
    spool = tmp_path / "received.bin"
    body = MultipartBody(ENVELOPE, Attachment("pkg@x", source))
    with serve(spool=spool) as srv:
        tracemalloc.start()
        try:
            resp = transport.post(srv.url, body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert resp.status == 200
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes: the attachment was not streamed"
    (got,) = srv.received
    assert got.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in got.headers
    assert spool.stat().st_size == len(body)
    with open(spool, "rb") as fh:
        parsed = parse_message(got.headers["content-type"], fh, length=len(body))
    assert parsed.envelope == ENVELOPE
    assert hashlib.sha256(parsed.attachment("cid:pkg@x").data).digest() == digest.digest()


def test_plain_soap_and_multipart_response_parsing(transport: Transport) -> None:
    response = MultipartBody(ENVELOPE, Attachment("r@x", b"\x00receipt"))

    def respond(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        reply(h, body=response.to_bytes(), content_type=response.content_type)

    with serve(respond) as srv:
        resp = transport.post(srv.url, ENVELOPE)
    assert srv.received[0].headers["content-type"] == SOAP_CONTENT_TYPE
    assert srv.received[0].body == ENVELOPE
    parsed = resp.parse()
    assert parsed.envelope == ENVELOPE
    assert parsed.attachment("cid:r@x").data == b"\x00receipt"


def test_file_changing_under_the_body_fails_before_the_request_completes(
        transport: Transport, tmp_path: Path) -> None:
    source = tmp_path / "package.cms"
    source.write_bytes(b"a" * 100_000)
    body = MultipartBody(ENVELOPE, Attachment("pkg@x", source))
    source.write_bytes(b"a" * 10)
    with serve() as srv, pytest.raises(MimeError, match="shrank"):
        transport.post(srv.url, body)
    assert srv.received == [] or len(srv.received[0].body) < len(body)


# --- connection handling, headers, logging ----------------------------------------------------


def test_one_session_reuses_the_connection_and_names_the_library(transport: Transport) -> None:
    with serve() as srv:
        transport.post(srv.url, ENVELOPE)
        transport.post(srv.url, ENVELOPE)
    first, second = srv.received
    assert first.client_port == second.client_port
    assert first.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("sikker-digital-post/0.1.0 ")


def test_one_log_line_per_request_without_bodies(transport: Transport,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sdp.transport")
    with serve() as srv:
        transport.post(srv.url, ENVELOPE, attempt=3)
    records = [r for r in caplog.records if r.name == "sdp.transport"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert srv.url in line and "-> 200" in line and "attempt 3" in line
    assert f"sent {len(ENVELOPE)} B" in line and f"received {len(ENVELOPE)} B" in line
    assert " ms" in line
    assert "01017012345" not in caplog.text


def test_body_logging_goes_through_the_redactor(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, bytes]] = []

    def redact(direction: str, data: bytes) -> str:
        seen.append((direction, data))
        return data.decode().replace("01017012345", "***********")

    caplog.set_level(logging.DEBUG, logger="sdp.transport")
    body = MultipartBody(ENVELOPE, Attachment("pkg@x", b"SECRET-ATTACHMENT"))
    with serve() as srv, Transport(timeouts=FAST, log_bodies=redact) as t:
        t.post(srv.url, body)
    assert seen == [("request", ENVELOPE), ("response", ENVELOPE)]
    assert "***********" in caplog.text
    assert "01017012345" not in caplog.text
    assert "SECRET-ATTACHMENT" not in caplog.text


# --- error mapping ----------------------------------------------------------------------------


def test_read_timeout_is_outcome_unknown_and_quick(transport: Transport) -> None:
    def slow(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        time.sleep(1.5)
        reply(h)

    with serve(slow) as srv:
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError) as info:
            transport.post(srv.url, ENVELOPE)
        assert time.monotonic() - started < 1.0
    assert not isinstance(info.value, ConnectError)
    assert len(srv.received) == 1  # the server did get it: hence "unknown", not "failed"


def test_connection_closed_after_the_request_is_outcome_unknown(transport: Transport) -> None:
    with serve(lambda h, r, i: hang_up(h)) as srv:
        with pytest.raises(OutcomeUnknownError):
            transport.post(srv.url, ENVELOPE)
    assert srv.received[0].body == ENVELOPE


def test_truncated_response_is_outcome_unknown(transport: Transport) -> None:
    def short(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", SOAP_CONTENT_TYPE)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(ENVELOPE[:50])
        h.wfile.flush()
        h.close_connection = True

    with serve(short) as srv, pytest.raises(OutcomeUnknownError, match="not read completely"):
        transport.post(srv.url, ENVELOPE)


def test_connection_refused_is_not_delivered() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with Transport(timeouts=FAST) as t, pytest.raises(TransportError) as info:
        t.post(f"http://127.0.0.1:{port}/api/ebms", ENVELOPE)
    assert isinstance(info.value, ConnectError)
    assert not isinstance(info.value, OutcomeUnknownError)


def test_http_500_is_outcome_unknown_and_keeps_the_body(transport: Transport) -> None:
    fault = b"<env:Envelope><env:Body><env:Fault/></env:Body></env:Envelope>"
    with serve(lambda h, r, i: reply(h, 500, fault)) as srv:
        with pytest.raises(HttpServerError) as info:
            transport.post(srv.url, ENVELOPE)
    assert isinstance(info.value, OutcomeUnknownError)
    assert info.value.status == 500
    assert info.value.body == fault
    assert info.value.content_type == SOAP_CONTENT_TYPE


def test_http_400_is_a_refusal_and_is_not_retried(transport: Transport) -> None:
    sleeps: list[float] = []
    with serve(lambda h, r, i: reply(h, 400, b"bad xml", "text/plain")) as srv:
        with pytest.raises(HttpStatusError) as info:
            with_retries(lambda n: transport.post(srv.url, ENVELOPE, attempt=n),
                         RetryPolicy(jitter=0), sleep=sleeps.append)
    assert len(srv.received) == 1
    assert sleeps == []
    assert not isinstance(info.value, OutcomeUnknownError)
    assert (info.value.status, info.value.body) == (400, b"bad xml")


def test_refusal_with_a_truncated_body_is_still_a_refusal(transport: Transport) -> None:
    def short(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        h.send_response(401)
        h.send_header("content-type", "text/plain")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"no access")
        h.close_connection = True

    with serve(short) as srv, pytest.raises(HttpStatusError) as info:
        transport.post(srv.url, ENVELOPE)
    assert (info.value.status, info.value.body) == (401, b"")
    assert info.value.content_type == "text/plain"


def test_response_headers_are_case_insensitive(transport: Transport) -> None:
    def lower(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        h.send_response(200)
        h.send_header("content-type", SOAP_CONTENT_TYPE)
        h.send_header("content-length", str(len(ENVELOPE)))
        h.end_headers()
        h.wfile.write(ENVELOPE)

    with serve(lower) as srv:
        resp = transport.post(srv.url, ENVELOPE)
    assert resp.content_type == SOAP_CONTENT_TYPE
    assert resp.headers["Content-Length"] == str(len(ENVELOPE))
    assert resp.parse().envelope == ENVELOPE


def test_redirects_are_not_followed(transport: Transport) -> None:
    def redirect(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        h.send_response(307)
        h.send_header("Location", "http://127.0.0.1:9/elsewhere")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with serve(redirect) as srv, pytest.raises(HttpStatusError) as info:
        transport.post(srv.url, ENVELOPE)
    assert info.value.status == 307


def test_response_size_is_bounded() -> None:
    big = b"x" * 5000
    with serve(lambda h, r, i: reply(h, 200, big)) as srv:
        with Transport(timeouts=FAST, max_response_bytes=4096) as t:
            with pytest.raises(ResponseTooLargeError):
                t.post(srv.url, ENVELOPE)
            with Transport(timeouts=FAST, max_response_bytes=5000) as exact:
                assert exact.post(srv.url, ENVELOPE).body == big


def test_chunked_response_over_the_limit_is_refused() -> None:
    def chunked(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", SOAP_CONTENT_TYPE)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(10):
            h.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    with serve(chunked) as srv, Transport(timeouts=FAST, max_response_bytes=4096) as t:
        with pytest.raises(ResponseTooLargeError, match="more than 4096"):
            t.post(srv.url, ENVELOPE)


# --- TLS and configuration --------------------------------------------------------------------


def test_verification_cannot_be_disabled() -> None:
    with pytest.raises(ConfigurationError, match="cannot be disabled"):
        Transport(verify=False)
    with pytest.raises(ConfigurationError, match="CA bundle not found"):
        Transport(verify="/nonexistent/ca.pem")


def test_plain_http_only_to_loopback() -> None:
    with Transport(timeouts=FAST) as t:
        for url in ("http://example.invalid/api/ebms", "ftp://127.0.0.1/x", "http:///x"):
            with pytest.raises(ConfigurationError):
                t.post(url, ENVELOPE)
    with serve() as srv, Transport(timeouts=FAST) as t:
        assert t.post(srv.url.replace("127.0.0.1", "localhost"), ENVELOPE).status == 200


def test_content_type_must_match_a_multipart_body(transport: Transport) -> None:
    body = MultipartBody(ENVELOPE, Attachment("p@x", b""))
    with pytest.raises(ValueError, match="own Content-Type"):
        transport.post("http://127.0.0.1:9/", body, SOAP_CONTENT_TYPE)


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1; returns (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loopback Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_https_with_a_custom_ca_bundle_and_an_untrusted_server(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve(tls=context) as srv:
        with Transport(timeouts=FAST, verify=ca) as trusting:
            assert trusting.post(srv.url, ENVELOPE).status == 200
        with Transport(timeouts=FAST) as default, pytest.raises(TlsError) as info:
            default.post(srv.url, ENVELOPE)
    assert not isinstance(info.value, OutcomeUnknownError)
    assert len(srv.received) == 1  # the untrusted attempt never sent its request


# --- retries ----------------------------------------------------------------------------------


def test_backoff_sequence_and_attempt_count() -> None:
    sleeps: list[float] = []
    raised: list[OutcomeUnknownError] = []

    def send(attempt: int) -> str:
        exc = OutcomeUnknownError(f"attempt {attempt}")
        raised.append(exc)
        raise exc

    policy = RetryPolicy(max_attempts=6, initial_backoff=0.5, max_backoff=5, multiplier=3,
                         jitter=0)
    with pytest.raises(OutcomeUnknownError) as info:
        with_retries(send, policy, sleep=sleeps.append)
    assert len(raised) == 6
    assert info.value is raised[-1]
    assert sleeps == [0.5, 1.5, 4.5, 5, 5]


def test_success_after_unknown_outcomes_returns_the_result() -> None:
    sleeps: list[float] = []
    attempts: list[int] = []

    def send(attempt: int) -> str:
        attempts.append(attempt)
        if attempt < 3:
            raise OutcomeUnknownError("reset")
        return f"ok on {attempt}"

    assert with_retries(send, RetryPolicy(jitter=0), sleep=sleeps.append) == "ok on 3"
    assert attempts == [1, 2, 3]
    assert sleeps == [0.5, 1.0]


def test_only_outcome_unknown_is_retried() -> None:
    calls: list[int] = []

    def send(attempt: int) -> None:
        calls.append(attempt)
        raise ConnectError("refused")

    with pytest.raises(ConnectError):
        with_retries(send, sleep=lambda s: None)
    assert calls == [1]


def test_jitter_only_shortens_the_wait() -> None:
    import random

    policy = RetryPolicy(initial_backoff=1, max_backoff=4, multiplier=2, jitter=0.5)
    rng = random.Random(7)
    for failed, base in [(1, 1), (2, 2), (3, 4), (4, 4), (9, 4)]:
        delays = {policy.backoff(failed, rng) for _ in range(50)}
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(delays) > 1


def test_retry_policy_is_validated() -> None:
    for kwargs in ({"max_attempts": 0}, {"initial_backoff": -1}, {"max_backoff": 0.1},
                   {"multiplier": 0.5}, {"jitter": 1.5}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)
    with pytest.raises(ValueError):
        Timeouts(connect=0)


def test_resend_keeps_the_message_id_and_uses_the_rebuilt_message(
        transport: Transport) -> None:
    """The contract of with_retries: the server drops the first two requests; every attempt
    carries the same MessageId, and what arrives third is exactly what send(3) built."""
    message_id = "627c8082-1234-4c6a-9f2e-000000000001"
    attachment = os.urandom(3000)
    built: dict[int, bytes] = {}
    sleeps: list[float] = []

    def respond(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        if i <= 2:
            hang_up(h)
        else:
            reply(h)

    def send(attempt: int) -> int:
        # A fresh wsu:Timestamp per attempt; the same eb:MessageId and attachment.
        envelope = (f"<env:Envelope><eb:MessageId>{message_id}</eb:MessageId>"
                    f"<wsu:Created>attempt-{attempt}</wsu:Created></env:Envelope>").encode()
        body = MultipartBody(envelope, Attachment("pkg@x", attachment))
        built[attempt] = body.to_bytes()
        return transport.post(srv.url, body, attempt=attempt).status

    with serve(respond) as srv:
        assert with_retries(send, RetryPolicy(jitter=0), sleep=sleeps.append) == 200
    assert len(srv.received) == 3
    assert sleeps == [0.5, 1.0]
    envelopes = [parse_message(r.headers["content-type"], r.body) for r in srv.received]
    assert {message_id.encode() in p.envelope for p in envelopes} == {True}
    assert [p.attachment("cid:pkg@x").data for p in envelopes] == [attachment] * 3
    assert srv.received[2].body == built[3]
    assert b"attempt-3" in envelopes[2].envelope
    assert b"attempt-1" in envelopes[0].envelope



# --- what talking to urllib3 directly must still get right ------------------------------------


@contextmanager
def count_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of every write the client makes on its HTTP connections."""
    writes: list[int] = []
    send = http.client.HTTPConnection.send

    def recording(self: http.client.HTTPConnection, data: bytes) -> None:
        writes.append(len(data))
        send(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recording)
    yield writes


@pytest.mark.parametrize("kind", ["bytes", "multipart"])
def test_in_memory_bodies_are_written_at_once_with_their_content_length(
        transport: Transport, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    body: bytes | MultipartBody = (ENVELOPE + os.urandom(140_000) if kind == "bytes" else
                                   MultipartBody(ENVELOPE, Attachment("p@x", os.urandom(140_000))))
    wire = body if isinstance(body, bytes) else body.to_bytes()
    with serve() as srv, count_writes(monkeypatch) as writes:
        assert transport.post(srv.url, body).status == 200
    (got,) = srv.received
    assert got.body == wire
    assert got.headers["content-length"] == str(len(wire))
    assert "transfer-encoding" not in got.headers
    assert len(writes) == 2 and writes[1] == len(wire)  # the header block, then the body


def test_a_large_in_memory_attachment_is_sent_without_being_copied(
        transport: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(1536 * 1024)
    body = MultipartBody(ENVELOPE, Attachment("p@x", payload))
    with serve() as srv, count_writes(monkeypatch) as writes:
        assert transport.post(srv.url, body).status == 200
    (got,) = srv.received
    assert got.body == body.to_bytes()
    assert got.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in got.headers
    assert len(payload) in writes


def test_a_file_attachment_is_streamed_with_its_content_length(
        transport: Transport, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = tmp_path / "package.cms"
    source.write_bytes(os.urandom(300_000))
    body = MultipartBody(ENVELOPE, Attachment("p@x", source))
    with serve() as srv, count_writes(monkeypatch) as writes:
        assert transport.post(srv.url, body).status == 200
    (got,) = srv.received
    assert got.body == body.to_bytes()
    assert got.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in got.headers
    assert len(writes) > 3 and max(writes) < len(body)


def test_a_file_that_grows_fails_before_the_request_completes(
        transport: Transport, tmp_path: Path) -> None:
    source = tmp_path / "package.cms"
    source.write_bytes(b"a" * 100_000)
    body = MultipartBody(ENVELOPE, Attachment("pkg@x", source))
    source.write_bytes(b"a" * 200_000)
    with serve() as srv, pytest.raises(MimeError, match="grew"):
        transport.post(srv.url, body)
    assert srv.received == [] or len(srv.received[0].body) < len(body)


def test_keep_alive_connection_closed_by_the_server_gives_a_clean_next_request(
        transport: Transport) -> None:
    def close_after_first(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        reply(h)  # no "Connection: close": the client keeps the connection in its pool
        h.close_connection = i == 1

    with serve(close_after_first) as srv:
        transport.post(srv.url, ENVELOPE)
        time.sleep(0.2)  # the server's FIN has arrived at the idle pooled connection
        second = transport.post(srv.url, ENVELOPE)
        third = transport.post(srv.url, ENVELOPE)
    assert (second.status, third.status) == (200, 200)
    first, again, reused = srv.received
    assert again.client_port != first.client_port
    assert reused.client_port == again.client_port
    assert [r.body for r in srv.received] == [ENVELOPE] * 3


def test_a_response_that_is_not_read_to_its_end_is_not_reused(transport: Transport) -> None:
    def answers(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        # The first answer is longer than one read block: most of it is left unread.
        reply(h, 400 if i == 1 else 200, b"e" * 300_000 if i == 1 else ENVELOPE)

    with serve(answers) as srv, Transport(timeouts=FAST, max_response_bytes=1000) as t:
        with pytest.raises(HttpStatusError) as info:
            t.post(srv.url, ENVELOPE)
        assert info.value.body == b"e" * 1000
        assert t.post(srv.url, ENVELOPE).body == ENVELOPE
    first, second = srv.received
    assert first.client_port != second.client_port


def test_a_shared_transport_serves_concurrent_threads(transport: Transport) -> None:
    def echo(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        reply(h, body=r.body)

    bodies = [os.urandom(2000 + n) for n in range(30)]
    answers: dict[int, bytes] = {}

    def worker(first: int) -> None:
        for n in range(first, len(bodies), 6):
            answers[n] = transport.post(srv.url, bodies[n]).body

    with serve(echo) as srv:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert answers == dict(enumerate(bodies))
    assert len(srv.received) == len(bodies)


def test_compressed_responses_are_bounded_after_decompression() -> None:
    def gzipped(data: bytes) -> Respond:
        def respond(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
            packed = gzip.compress(data)
            h.send_response(200)
            h.send_header("Content-Type", SOAP_CONTENT_TYPE)
            h.send_header("Content-Encoding", "gzip")
            h.send_header("Content-Length", str(len(packed)))
            h.end_headers()
            h.wfile.write(packed)
        return respond

    with Transport(timeouts=FAST, max_response_bytes=100_000) as t:
        with serve(gzipped(ENVELOPE)) as srv:
            assert t.post(srv.url, ENVELOPE).body == ENVELOPE
        with serve(gzipped(bytes(5_000_000))) as srv:
            with pytest.raises(ResponseTooLargeError, match="more than 100000"):
                t.post(srv.url, ENVELOPE)


def test_a_small_content_length_does_not_lift_the_bound_on_a_chunked_body() -> None:
    def both(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", SOAP_CONTENT_TYPE)
        h.send_header("Content-Length", "10")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(10):
            h.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    with serve(both) as srv, Transport(timeouts=FAST, max_response_bytes=4096) as t:
        with pytest.raises(ResponseTooLargeError, match="more than 4096"):
            t.post(srv.url, ENVELOPE)


def test_invalid_content_type_is_refused_before_sending(transport: Transport) -> None:
    with serve() as srv:
        with pytest.raises(TransportError, match="request not sent") as info:
            transport.post(srv.url, ENVELOPE, "text/xml\r\nX-Injected: 1")
    assert not isinstance(info.value, OutcomeUnknownError)
    assert srv.received == []
    with pytest.raises(ValueError, match="user_agent"):
        Transport(user_agent="sdp\r\nX-Injected: 1")


def test_an_invalid_url_is_not_sent() -> None:
    with Transport(timeouts=FAST) as t, pytest.raises(TransportError) as info:
        t.post("http://127.0.0.1:99999999/api/ebms", ENVELOPE)
    assert "not sent" in str(info.value)
    assert not isinstance(info.value, OutcomeUnknownError)


def test_the_user_agent_names_the_http_library() -> None:
    assert " python-urllib3/2." in USER_AGENT


# --- proxies ----------------------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    #: (method, target, headers) of every request the proxy got.
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while block := source.recv(65536):
            sink.sendall(block)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@contextmanager
def http_proxy() -> Iterator[Proxy]:
    """A loopback HTTP proxy: forwards absolute-form POSTs and tunnels CONNECT."""
    state = Proxy(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.seen.append(("POST", self.path, headers))
            body = self.rfile.read(int(headers["content-length"]))
            target = urlsplit(self.path)
            forward = {k: v for k, v in headers.items()
                       if k not in ("host", "content-length", "proxy-authorization")}
            upstream = http.client.HTTPConnection(target.hostname or "", target.port,
                                                  timeout=5)
            upstream.request("POST", target.path, body=body, headers=forward)
            answer = upstream.getresponse()
            data = answer.read()
            upstream.close()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type", ""))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_CONNECT(self) -> None:
            state.seen.append(("CONNECT", self.path,
                               {k.lower(): v for k, v in self.headers.items()}))
            host, port = self.path.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=5)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.connection.settimeout(None)
            upstream.settimeout(None)
            back = threading.Thread(target=_relay, args=(upstream, self.connection),
                                    daemon=True)
            back.start()
            _relay(self.connection, upstream)
            back.join(5)
            upstream.close()
            self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_plain_http_goes_through_the_configured_proxy_with_its_credentials() -> None:
    with serve() as srv, http_proxy() as proxy:
        with_auth = proxy.url.replace("http://", "http://ola:p%40ss@")
        with Transport(timeouts=FAST, proxies={"http": with_auth}) as t:
            assert t.post(srv.url, ENVELOPE).body == ENVELOPE
    ((method, target, headers),) = proxy.seen
    assert (method, target) == ("POST", srv.url)
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"ola:p@ss").decode()
    assert headers["user-agent"] == USER_AGENT
    (got,) = srv.received
    assert got.body == ENVELOPE
    assert got.headers["content-length"] == str(len(ENVELOPE))


@pytest.mark.parametrize("key", ["https", "all", "https://127.0.0.1", "all://127.0.0.1"])
def test_https_is_tunnelled_through_the_proxy_and_verified_end_to_end(
        tmp_path: Path, key: str) -> None:
    ca, cert, key_file = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key_file)
    with serve(tls=context) as srv, http_proxy() as proxy:
        with Transport(timeouts=FAST, verify=ca, proxies={key: proxy.url}) as t:
            assert t.post(srv.url, ENVELOPE).status == 200
            assert t.post(srv.url, ENVELOPE).status == 200
        with Transport(timeouts=FAST, proxies={key: proxy.url}) as untrusting:
            with pytest.raises(TlsError):
                untrusting.post(srv.url, ENVELOPE)
    port = urlsplit(srv.url).port
    assert [(m, target) for m, target, _ in proxy.seen] == [("CONNECT", f"127.0.0.1:{port}")] * 2
    assert len(srv.received) == 2  # both over the first tunnel; the untrusted one sent nothing


def test_a_proxy_for_another_host_or_scheme_is_not_used() -> None:
    with serve() as srv, http_proxy() as proxy:
        proxies = {"https": proxy.url, "http://10.0.0.1": proxy.url, "http://127.0.0.1": ""}
        with Transport(timeouts=FAST, proxies={**proxies, "all": proxy.url}) as t:
            assert t.post(srv.url, ENVELOPE).status == 200
    assert proxy.seen == []
    assert len(srv.received) == 1


def test_an_unreachable_proxy_means_not_sent() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with Transport(timeouts=FAST, proxies={"all": f"http://127.0.0.1:{port}"}) as t:
        with pytest.raises(ConnectError):
            t.post("http://127.0.0.1:9/api/ebms", ENVELOPE)
        with pytest.raises(ConnectError):
            t.post("https://127.0.0.1:9/api/ebms", ENVELOPE)


def test_a_bad_proxy_is_a_configuration_error() -> None:
    for proxy in ("ftp://127.0.0.1:21", "http://:8080"):
        with pytest.raises(ConfigurationError):
            Transport(proxies={"https": proxy})
    Transport(proxies={"no_proxy": "localhost,127.0.0.1", "https": ""}).close()


# --- TLS --------------------------------------------------------------------------------------


def _tls_server(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    ca, cert, key = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return ca, context


def test_the_host_name_is_verified_against_the_certificate(tmp_path: Path) -> None:
    ca, context = _tls_server(tmp_path)
    with serve(tls=context) as srv, Transport(timeouts=FAST, verify=ca) as t:
        with pytest.raises(TlsError):  # the certificate names 127.0.0.1 only
            t.post(srv.url.replace("127.0.0.1", "localhost"), ENVELOPE)
    assert srv.received == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_hashed_ca_directory_can_be_the_bundle(tmp_path: Path) -> None:
    ca, context = _tls_server(tmp_path)
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(ca)],
                                  check=True, capture_output=True, text=True).stdout.strip()
    folder = tmp_path / "certs"
    folder.mkdir()
    shutil.copy(ca, folder / f"{subject_hash}.0")
    with serve(tls=context) as srv, Transport(timeouts=FAST, verify=folder) as t:
        assert t.post(srv.url, ENVELOPE).status == 200


def test_an_unreadable_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        Transport(verify=bundle)


def test_a_tls_error_after_the_request_was_sent_is_outcome_unknown(tmp_path: Path) -> None:
    """Only a failure while connecting proves nothing was sent; a broken TLS record in the
    answer comes after the broker got (and may have processed) the request."""
    ca, context = _tls_server(tmp_path)

    def corrupt_answer(h: BaseHTTPRequestHandler, r: Received, i: int) -> None:
        raw = socket.socket(fileno=os.dup(h.connection.fileno()))
        raw.sendall(b"\x17\x03\x03\x00\x20" + b"x" * 32)  # an application-data record of junk
        raw.close()
        h.close_connection = True

    with serve(corrupt_answer, tls=context) as srv, Transport(timeouts=FAST, verify=ca) as t:
        with pytest.raises(OutcomeUnknownError) as info:
            t.post(srv.url, ENVELOPE)
    assert not isinstance(info.value, TlsError)
    assert srv.received[0].body == ENVELOPE


# --- found in review ------------------------------------------------------------------------


def _raw_server(handle: Callable[[socket.socket], None]) -> tuple[socket.socket, int]:
    """A loopback TCP server running `handle` on each connection, in a daemon thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(65536)
    return body


def test_an_interim_answer_is_outcome_unknown_and_never_answers_the_next_request() -> None:
    # http.client takes a 102 for the whole response; the final answer behind it must not be
    # read as the answer to the next request (which once got MSG-1's receipt).
    def handle(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    body = _read_request(conn)
                except (OSError, StopIteration):
                    return
                answer = b"receipt for " + body
                interim = b"HTTP/1.1 102 Processing\r\n\r\n" if body == b"MSG-1" else b""
                conn.sendall(interim + b"HTTP/1.1 200 OK\r\nContent-Length: "
                             + str(len(answer)).encode() + b"\r\n\r\n" + answer)

    listener, port = _raw_server(handle)
    with listener, Transport(timeouts=FAST) as transport:
        url = f"http://127.0.0.1:{port}/api"
        with pytest.raises(OutcomeUnknownError, match="interim HTTP 102"):
            transport.post(url, b"MSG-1")
        assert transport.post(url, b"MSG-2").body == b"receipt for MSG-2"


def test_a_tls_handshake_that_never_completes_means_not_sent() -> None:
    held: list[socket.socket] = []
    listener, port = _raw_server(held.append)  # accepts, never answers the ClientHello
    with listener, Transport(timeouts=Timeouts(connect=0.5, read=0.5)) as transport, \
            pytest.raises(ConnectError):
        transport.post(f"https://127.0.0.1:{port}/api", b"<x/>")


def test_a_proxy_refusing_connect_means_not_sent() -> None:
    def refuse(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    listener, port = _raw_server(refuse)
    with listener, Transport(timeouts=FAST, proxies={"https": f"http://127.0.0.1:{port}"}) \
            as transport, pytest.raises(ConnectError):
        transport.post("https://broker.invalid/api", b"<x/>")


def test_sslkeylogfile_is_not_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))
    assert transport_module._tls_context(None).keylog_filename is None


def test_header_values_outside_latin1_are_refused_before_sending() -> None:
    with pytest.raises(InputError):
        Transport(user_agent="sdp €")
