"""The simulator on HTTP: stdlib ThreadingHTTPServer, one POST endpoint (DIGEST 7.9, 14 item 1).

Plain HTTP on loopback: TLS may be omitted locally (DIGEST 14 item 1), and the client allows
cleartext only to loopback. Request-level faults from the scenarios are applied here, where
the connection is.
"""

from __future__ import annotations

import http.server
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from sdp.broker.core import Broker

__all__ = ["DEFAULT_PATH", "MAX_REQUEST_BYTES", "RunningBroker", "serve"]

log = logging.getLogger("sdp.broker.http")

DEFAULT_PATH = "/api/ebms"
#: The 30 MiB package limit (DIGEST 15 #13) plus room for the envelope and MIME framing.
MAX_REQUEST_BYTES = 32 * 1024 * 1024


@dataclass
class RunningBroker:
    """A simulator listening on `url`; `stop()` shuts the server and closes the broker."""

    broker: Broker
    url: str
    _httpd: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    close_broker: bool = True

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        # Kept-alive connections too: a stopped broker must not answer on them (a restart
        # on the same port would otherwise be reached through the old one's closed state).
        self._httpd.close_connections()
        self._thread.join(timeout=5)
        if self.close_broker:
            self.broker.close()

    def __enter__(self) -> RunningBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until stopped (the CLI's main thread)."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)


def _handler(broker: Broker, path: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle's algorithm and the
        # client's delayed ACK every reply stalled ~40 ms (found by bench/e2e.py).
        disable_nagle_algorithm = True
        server_version = "sdp-broker-simulator"

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _text(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
            # Say so when closing: a client would otherwise reuse the dead connection.
            self._send(status, text.encode(), "text/plain; charset=utf-8",
                       {**(extra or {}), "Connection": "close"})

        def _truncated(self, status: int, body: bytes, content_type: str) -> None:
            """Promise the whole body in Content-Length, send half of it, hang up."""
            self.close_connection = True
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _drop(self) -> None:
            """Hang up with no answer at all."""
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _not_post(self) -> None:
            if self.path.split("?")[0] != path:
                self._text(404, "not found")
            else:
                self._text(405, "only POST", {"Allow": "POST"})

        do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_post

        def do_POST(self) -> None:
            if self.path.split("?")[0] != path:
                self._text(404, "not found")
                return
            content_type = self.headers.get("Content-Type", "")
            kind = "send" if content_type.lower().startswith("multipart/") else "signal"
            faults = broker.faults
            if faults.take("drop-before-read", kind):
                log.warning("fault: dropping a %s request before reading it", kind)
                self._drop()
                return
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                self._text(411, "Content-Length required")
                return
            if int(length) > MAX_REQUEST_BYTES:
                self._text(413, f"larger than {MAX_REQUEST_BYTES} bytes")
                return
            body = self.rfile.read(int(length))
            if faults.take("http-500", kind):
                log.warning("fault: HTTP 500 for a %s request, not processed", kind)
                self._text(500, "simulated internal server error")
                return
            reply = broker.handle(content_type, body)
            if faults.take("drop-after-processing", kind):
                log.warning("fault: processed a %s request, dropping the answer", kind)
                self._drop()
                return
            if faults.take("truncate", kind):
                log.warning("fault: processed a %s request, truncating the answer", kind)
                self._truncated(reply.status, reply.body, reply.content_type)
                return
            slow = faults.take("slow", kind)
            if slow is not None:
                time.sleep(slow.seconds)
            try:
                self._send(reply.status, reply.body, reply.content_type)
            except OSError:  # the client gave up (e.g. its read timeout during `slow`)
                self.close_connection = True

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int],
                 handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: object) -> None:
        if isinstance(request, socket.socket):  # TCP: always
            with self._open_lock:
                self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up (killed, timed out) is routine for a server: no traceback
        # on stderr, as socketserver would print. Anything else is ours: log it.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s: %s", client_address, sys.exc_info()[1])
        else:
            log.exception("error handling a request from %s", client_address)


def serve(broker: Broker, host: str = "127.0.0.1", port: int = 0, *,
          path: str = DEFAULT_PATH, close_broker: bool = True) -> RunningBroker:
    """Start serving in a background thread; port 0 picks a free port (see `.url`)."""
    httpd = _Server((host, port), _handler(broker, path))
    # A short poll interval makes stop() quick; the loop is idle otherwise.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name="sdp-broker", daemon=True)
    thread.start()
    bound_host, bound_port = httpd.server_address[:2]
    shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{bound_port}{path}"
    log.info("meldingsformidler simulator listening on %s", url)
    return RunningBroker(broker, url, httpd, thread, close_broker)
