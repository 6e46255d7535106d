"""HTTP to the meldingsformidler: one POST per ebMS message, and what a failure means.

The only question a caller really needs answered after a failed POST is "may the broker
have processed it?" (DIGEST 9.5). The errors are shaped around that:

- `ConnectError` / `TlsError` (plain `TransportError`): no byte of the request reached the
  server. The message was definitely not delivered.
- `OutcomeUnknownError` (timeout, reset after sending, truncated response, HTTP 5xx): it may
  have been processed. Resend the *same* ebMS MessageId; the broker de-duplicates on it.
  A TLS error on a connection that was already up (while writing the request or reading
  the answer) is one of these too, not a `TlsError`.
- `HttpStatusError` (3xx, 4xx): the broker refused the message (400 unparseable, 401 no
  access; DIGEST 7.9). Resending it unchanged cannot help.

`with_retries` implements the resend loop. TLS verification cannot be switched off; plain
`http://` is only for loopback (the local simulator and tests).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Final, TypedDict, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

import certifi
import urllib3
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, LocationValueError
from urllib3.response import BaseHTTPResponse
from urllib3.util.ssl_ import create_urllib3_context
from urllib3.util.ssl_match_hostname import CertificateError

from sdp.errors import (
    ConfigurationError,
    InputError,
    MimeError,
    OutcomeUnknownError,
    TransportError,
)
from sdp.mime import SOAP_CONTENT_TYPE, MultipartBody, ParsedMessage, parse_message

logger = logging.getLogger("sdp.transport")

T = TypeVar("T")

#: SOAP responses (receipts, errors, pulled receipts) are a few KB; anything near this is wrong.
DEFAULT_MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
_READ_BLOCK: Final = 64 * 1024
#: A multipart body with its attachment in memory and at most this long is joined and sent
#: with one write; a longer one is written part by part, so the attachment is not copied.
_JOIN_BELOW: Final = 1024 * 1024
#: Connections kept per host, and hosts kept per pool manager.
_POOL_SIZE: Final = 4


def _library_version() -> str:
    try:
        return metadata.version("sikker-digital-post")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT: Final = (f"sikker-digital-post/{_library_version()} "
                     f"python-urllib3/{getattr(urllib3, '__version__', 'unknown')}")


# --- errors -----------------------------------------------------------------------------------


class ConnectError(TransportError):
    """No connection was made (refused, DNS, connect timeout): the request was never sent."""


class TlsError(TransportError):
    """The TLS handshake failed (certificate not trusted, wrong host): nothing was sent."""


class HttpStatusError(TransportError):
    """The server answered 3xx or 4xx: it refused the message; do not resend it unchanged.

    The body may hold a SOAP fault with an ebMS error (DIGEST 9.2); the caller parses it.
    """

    def __init__(self, message: str, *, status: int, content_type: str, body: bytes,
                 url: str) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body
        self.url = url
        super().__init__(message, subject=url)


class HttpServerError(OutcomeUnknownError):
    """The server answered 5xx: it may have processed the message (DIGEST 9.5).

    The body may be a SOAP fault (an env:Receiver fault maps to 500 in the SOAP 1.2 HTTP
    binding); a caller that wants to tell `Other` from a crash parses it inside `send`.
    """

    def __init__(self, message: str, *, status: int, content_type: str, body: bytes,
                 url: str) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body
        self.url = url
        super().__init__(message, subject=url)


class ResponseTooLargeError(OutcomeUnknownError):
    """The response exceeded the configured limit; it was not read, so the outcome is unknown."""


# --- configuration and results ----------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts in seconds. The spec sets none (DIGEST 9.5).

    `read` bounds each wait for data from the server, not the whole exchange.
    """

    connect: float = 10.0
    read: float = 60.0

    def __post_init__(self) -> None:
        if not (self.connect > 0 and self.read > 0):
            raise InputError("timeouts must be positive", subject="Timeouts")


@dataclass(frozen=True)
class HttpResponse:
    """A 2xx response, read completely (and bounded in size)."""

    status: int
    headers: Mapping[str, str]
    content_type: str
    body: bytes
    url: str
    elapsed_ms: int

    def parse(self) -> ParsedMessage:
        """Split the body into the SOAP envelope and attachments (`sdp.mime.parse_message`)."""
        return parse_message(self.content_type, self.body)


#: Given ("request" | "response", body bytes), return the text to log (with personal data
#: removed). For multipart requests only the SOAP envelope is passed, never the attachment.
BodyRedactor = Callable[[str, bytes], str]


class Transport:
    """HTTP client for the ebMS endpoint, on urllib3 connection pools (connections are reused).

    `verify` is True (the certifi trust store) or a CA bundle path (a PEM file, or a directory
    prepared with `c_rehash`); False is refused. The trust store is loaded once, here.
    `proxies` maps a scheme ("https"), "scheme://host", "all://host" or "all" to a proxy URL
    (http://, https://; socks5:// with PySocks); None means none at all. The environment is
    not consulted, so neither `HTTPS_PROXY`, `SSL_CERT_FILE`, `CURL_CA_BUNDLE` nor `.netrc`
    can change what is sent or trusted.

    A Transport may be shared between threads once built: its own state does not change
    after `__init__`, and each POST checks a connection out of urllib3's thread-safe pool.
    Up to 4 idle connections per host are kept; more concurrent POSTs open extra
    connections that are closed afterwards (urllib3 logs "Connection pool is full").
    """

    def __init__(self, *, timeouts: Timeouts | None = None,
                 verify: bool | str | os.PathLike[str] = True,
                 proxies: Mapping[str, str] | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 allow_plain_http: bool = False,
                 log_bodies: BodyRedactor | None = None,
                 user_agent: str = USER_AGENT) -> None:
        if verify is False:
            raise ConfigurationError("TLS certificate verification cannot be disabled; pass a "
                                     "CA bundle path for a private CA", subject="verify")
        if verify is not True:
            path = os.fspath(verify)
            if not os.path.exists(path):
                raise ConfigurationError("CA bundle not found", subject=path)
            self._verify: bool | str = path
        else:
            self._verify = True
        if max_response_bytes <= 0:
            raise InputError("must be positive", subject="max_response_bytes")
        if not _valid_header_value(user_agent):
            raise InputError("not a valid header value", subject="user_agent")
        self.timeouts = timeouts or Timeouts()
        self.max_response_bytes = max_response_bytes
        self._allow_plain_http = allow_plain_http
        self._log_bodies = log_bodies
        self._proxies = dict(proxies or {})
        self._headers: Final = {
            "User-Agent": user_agent,
            # Responses are SOAP 1.2, plain or with attachments (DIGEST 7.9).
            "Accept": "application/soap+xml, multipart/related",
            # No compression: the size bound then limits what is read, not a zip bomb's output.
            "Accept-Encoding": "identity",
        }
        self._timeout: Final = urllib3.Timeout(connect=self.timeouts.connect,
                                               read=self.timeouts.read)
        context = _tls_context(None if self._verify is True else str(self._verify))
        # No automatic retries or redirects below us: a resend is a decision (DIGEST 9.5).
        pool_kw = _PoolOptions(num_pools=_POOL_SIZE, maxsize=_POOL_SIZE, block=False,
                               retries=False, timeout=self._timeout, ssl_context=context)
        self._direct: Final = _with_marked_tls(urllib3.PoolManager(**pool_kw))
        # One manager per distinct proxy URL, built now so a bad one fails here, not later.
        self._via: Final[dict[str, urllib3.PoolManager]] = {}
        for key, proxy in self._proxies.items():
            if proxy and key != "no_proxy" and proxy not in self._via:
                self._via[proxy] = _proxy_manager(proxy, context, pool_kw)

    def close(self) -> None:
        """Close pooled connections."""
        self._direct.clear()
        for manager in self._via.values():
            manager.clear()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def post(self, url: str, body: MultipartBody | bytes, content_type: str | None = None, *,
             attempt: int = 1) -> HttpResponse:
        """POST one message and return the 2xx response, or raise a typed `TransportError`.

        A `MultipartBody` carries its own Content-Type; plain bytes default to SOAP 1.2.
        `attempt` is only for the log line. The body always goes with a Content-Length (never
        chunked). A body in memory is written with one write (from 1 MiB on, a multipart body
        is written part by part instead, so its attachment is not copied); an attachment file
        is streamed from disk.
        """
        parts = self._check_url(url)
        data: bytes | Iterator[bytes]
        if isinstance(body, MultipartBody):
            if content_type is not None and content_type != body.content_type:
                raise InputError("a MultipartBody sets its own Content-Type",
                                 subject="content_type")
            content_type = body.content_type
            sent = len(body)
            if isinstance(body.attachment.data, bytes):
                data = body.to_bytes() if sent < _JOIN_BELOW else body.iter_chunks()
            else:
                data = _exactly(body.iter_chunks(), sent)
            loggable = body.envelope
        else:
            content_type = content_type or SOAP_CONTENT_TYPE
            data = body
            sent = len(body)
            loggable = body
        if self._log_bodies is not None:
            logger.debug("request body %s: %s", url, self._log_bodies("request", loggable))

        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            if not _valid_header_value(content_type):
                raise TransportError(f"request not sent: invalid Content-Type {content_type!r}",
                                     subject=url)
            headers = {**self._headers, "Content-Type": content_type,
                       "Content-Length": str(sent)}
            try:
                resp = self._manager_for(parts).urlopen(
                    "POST", url, body=data, headers=headers, redirect=False, retries=False,
                    timeout=self._timeout, preload_content=False, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
                raise _classify(exc, url) from exc
            try:
                status = resp.status
                if status < 200:
                    # An interim answer (102, 103) means the broker is still working, and
                    # http.client takes it for the whole response: the final one would be
                    # left on the connection for the next request (found in review).
                    _discard(resp)
                    raise OutcomeUnknownError(f"interim HTTP {status} instead of an answer",
                                              subject=url)
                refused = 300 <= status < 500
                response_headers: Mapping[str, str] = resp.headers
                try:
                    received = self._read_body(resp, url, truncate=refused)
                except OutcomeUnknownError:
                    if not refused:
                        raise
                    # The status alone says it was refused; the body is only diagnostics.
                    received = b""
            finally:
                _release(resp)
        except TransportError as exc:
            logger.warning("POST %s failed: %s; body %d B, %d ms, attempt %d",
                           url, type(exc).__name__, sent, elapsed(), attempt)
            raise
        ms = elapsed()
        logger.info("POST %s -> %d; sent %d B, received %d B, %d ms, attempt %d",
                    url, status, sent, len(received), ms, attempt)
        if self._log_bodies is not None:
            logger.debug("response body %s: %s", url, self._log_bodies("response", received))

        response_type = response_headers.get("Content-Type", "")
        if 200 <= status < 300:
            return HttpResponse(status, response_headers, response_type, received, url, ms)
        if status >= 500:
            raise HttpServerError(f"HTTP {status}: the outcome is unknown", status=status,
                                  content_type=response_type, body=received, url=url)
        raise HttpStatusError(f"HTTP {status}: refused", status=status,
                              content_type=response_type, body=received, url=url)

    def _check_url(self, url: str) -> SplitResult:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return parts
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigurationError("expected an https:// URL", subject=url)
        if not (self._allow_plain_http or _is_loopback(parts.hostname)):
            # DIGEST 7.9: the transport is HTTPS; cleartext only to the local simulator.
            raise ConfigurationError("plain http:// is only allowed to loopback",
                                     subject=url)
        return parts

    def _manager_for(self, parts: SplitResult) -> urllib3.PoolManager:
        """The proxy for this URL, looked up as requests does (`select_proxy`): the first of
        scheme://host, scheme, all://host, all that is configured; an empty value means none."""
        if not self._via:
            return self._direct
        host = parts.hostname or ""
        for key in (f"{parts.scheme}://{host}", parts.scheme, f"all://{host}", "all"):
            if key in self._proxies:
                proxy = self._proxies[key]
                return self._via[proxy] if proxy else self._direct
        return self._direct

    def _read_body(self, resp: BaseHTTPResponse, url: str, *, truncate: bool) -> bytes:
        """Read at most `max_response_bytes`; a 3xx/4xx body is cut there, anything else is
        an error (its outcome cannot be known without reading it)."""
        limit = self.max_response_bytes
        # The Content-Length as urllib3 will enforce it; None if chunked or close-delimited.
        length = resp.length_remaining
        if length is not None and length > limit and not truncate:
            raise ResponseTooLargeError(f"Content-Length {length} exceeds {limit}",
                                        subject=url)
        try:
            if (length is not None and length <= limit
                    and resp.headers.get("Content-Encoding", "identity").lower() == "identity"):
                # Known, within the bound and not compressed: one read (a short body raises).
                return resp.read()
            blocks: list[bytes] = []
            total = 0
            for block in resp.stream(_READ_BLOCK):
                blocks.append(block)
                total += len(block)
                if total > limit:
                    if truncate:
                        return b"".join(blocks)[:limit]
                    raise ResponseTooLargeError(f"more than {limit} bytes", subject=url)
            return b"".join(blocks)
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            # Read timeout, reset or a body shorter than its Content-Length.
            raise OutcomeUnknownError(f"response not read completely: {exc}",
                                      subject=url) from exc

    def __repr__(self) -> str:
        return f"Transport(timeouts={self.timeouts!r}, verify={self._verify!r})"


def _release(resp: BaseHTTPResponse) -> None:
    """Give the connection back to the pool: open if the response was read to its end
    (keep-alive), else closed (what is left on it would be taken for the next response)."""
    if not resp.closed:
        resp.close()
    resp.release_conn()


def _discard(resp: BaseHTTPResponse) -> None:
    """Close the response's connection so that it is never reused."""
    connection = getattr(resp, "connection", None)
    if connection is not None:
        connection.close()


def _exactly(chunks: Iterator[bytes], length: int) -> Iterator[bytes]:
    """The chunks, checked to add up to the Content-Length already sent for them."""
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > length:
            raise MimeError("body longer than its declared length", subject="multipart body")
        yield chunk
    if sent != length:
        raise MimeError("body shorter than its declared length", subject="multipart body")


def _valid_header_value(value: str) -> bool:
    """No leading white space, no line break or NUL (the rule requests applied), and only
    characters HTTP/1.1 headers can carry (Latin-1)."""
    if value[:1].isspace() or any(c in value for c in "\r\n\0"):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- urllib3 plumbing -------------------------------------------------------------------------


#: Added (as an exception note) to a TLS error raised while the connection was being made,
#: i.e. before any byte of the request was written to it.
_WHILE_CONNECTING: Final = "sdp.transport: raised while connecting; no byte of the request was sent"


class _HTTPSConnection(HTTPSConnection):
    """urllib3's HTTPS connection, marking every failure while connecting (TCP, a proxy's
    CONNECT refused, the TLS handshake timing out or failing, the host name check): none of
    the request has been written then, so `_classify` can tell them from failures on a
    connection that is already carrying it."""

    def connect(self) -> None:
        try:
            super().connect()
        except BaseException as exc:
            exc.add_note(_WHILE_CONNECTING)
            raise


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _with_marked_tls(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    manager.pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": _HTTPSPool}
    return manager


def _tls_context(bundle: str | None) -> ssl.SSLContext:
    """Certificates and host names verified, trusting only `bundle` (else certifi's)."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    location = bundle or certifi.where()
    try:
        if os.path.isdir(location):
            context.load_verify_locations(capath=location)
        else:
            context.load_verify_locations(cafile=location)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigurationError(f"CA bundle could not be loaded: {exc}",
                                 subject=location) from exc
    if context.verify_mode != ssl.CERT_REQUIRED:
        raise AssertionError("TLS verification must be on")
    # urllib3 honours SSLKEYLOGFILE, which would write every session key to a file; the
    # environment does not change what we send or trust (found in review).
    context.keylog_filename = None  # type: ignore[assignment]
    return context


class _PoolOptions(TypedDict):
    num_pools: int
    maxsize: int
    block: bool
    retries: bool
    timeout: urllib3.Timeout
    ssl_context: ssl.SSLContext


def _proxy_manager(proxy: str, context: ssl.SSLContext,
                   pool_kw: _PoolOptions) -> urllib3.PoolManager:
    """A pool manager sending through `proxy`; credentials in its URL go as Basic auth."""
    url = proxy if "://" in proxy else f"http://{proxy}"
    try:
        parsed = urllib3.util.parse_url(url)
    except LocationParseError as exc:
        raise ConfigurationError(f"invalid proxy URL: {exc}", subject="proxies") from exc
    scheme = (parsed.scheme or "").lower()
    if not parsed.host:
        raise ConfigurationError("the proxy URL has no host", subject="proxies")
    if scheme in ("http", "https"):
        headers: dict[str, str] = {}
        if parsed.auth:
            user, _, password = parsed.auth.partition(":")
            headers = urllib3.make_headers(
                proxy_basic_auth=f"{unquote(user)}:{unquote(password)}")
        bare = parsed._replace(auth=None).url
        return _with_marked_tls(urllib3.ProxyManager(
            bare, proxy_headers=headers, proxy_ssl_context=context, **pool_kw))
    if scheme.startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError as exc:
            raise ConfigurationError("SOCKS proxies need PySocks installed",
                                     subject="proxies") from exc
        # Its own pool classes route through the proxy, so they are kept: a TLS failure over
        # SOCKS is not told apart by phase and counts as outcome unknown.
        return SOCKSProxyManager(url, **pool_kw)
    raise ConfigurationError(f"unsupported proxy scheme {scheme!r}", subject="proxies")


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (urllib3 -> ssl / socket errors)."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        stack.extend(a for a in e.args if isinstance(a, BaseException))
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                stack.append(linked)
    return seen


def _classify(exc: BaseException, url: str) -> TransportError:
    """Map a urllib3 failure to "not sent" or "outcome unknown" (DIGEST 9.5).

    With retries off, urllib3 raises the failure itself (no MaxRetryError), possibly
    wrapped in a ProxyError when it happened on the way to a proxy.
    """
    causes = _causes(exc)
    # urllib3's NewConnectionError and NameResolutionError derive from ConnectTimeoutError:
    # all of them mean the TCP connection was never established.
    if any(isinstance(c, ConnectTimeoutError | ConnectionRefusedError) for c in causes):
        return ConnectError(f"could not connect: {exc}", subject=url)
    if any(_WHILE_CONNECTING in getattr(c, "__notes__", ()) for c in causes):
        if any(isinstance(c, ssl.SSLError | CertificateError) for c in causes):
            return TlsError(f"TLS handshake failed: {exc}", subject=url)
        # A proxy refusing CONNECT, a handshake timing out or reset: nothing was sent.
        return ConnectError(f"could not connect: {exc}", subject=url)
    if isinstance(exc, LocationValueError):
        return TransportError(f"request not sent: {exc}", subject=url)
    # Read timeout, connection reset or closed after (part of) the request was written, a
    # TLS error on an established connection, malformed response: the broker may have
    # processed the message.
    return OutcomeUnknownError(f"{type(exc).__name__}: {exc}", subject=url)


# --- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential back-off for resends after `OutcomeUnknownError` (DIGEST 9.5).

    The wait after failed attempt n is `min(max_backoff, initial_backoff * multiplier**(n-1))`,
    then reduced by a random fraction of up to `jitter` (0 = deterministic), so that many
    senders do not resend in lockstep while the bound still holds.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InputError("must be at least 1", subject="RetryPolicy.max_attempts")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise InputError("need 0 <= initial_backoff <= max_backoff", subject="RetryPolicy")
        if self.multiplier < 1:
            raise InputError("must be at least 1", subject="RetryPolicy.multiplier")
        if not 0 <= self.jitter <= 1:
            raise InputError("must be between 0 and 1", subject="RetryPolicy.jitter")

    def backoff(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt `failed_attempt` (1-based) failed."""
        base = min(self.max_backoff,
                   self.initial_backoff * self.multiplier ** (failed_attempt - 1))
        if self.jitter:
            base *= 1 - (rng or _SYSTEM_RANDOM).uniform(0, self.jitter)
        return base


_SYSTEM_RANDOM: Final = random.SystemRandom()


def with_retries(send: Callable[[int], T], policy: RetryPolicy | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> T:
    """Call `send(attempt)` (attempt = 1, 2, ...) until it returns, resending only when the
    outcome is unknown.

    The contract for `send` (DIGEST 9.5): every attempt transmits the *same* ebMS message
    (the same `eb:MessageId`, SBD and attachment), so that the broker's duplicate
    elimination makes the resend harmless. It must rebuild the WS-Security header, though:
    a fresh `wsu:Timestamp` and signature for each attempt, because the earlier one may have
    expired (120 s TTL). A new MessageId here would deliver the letter twice.

    Only `OutcomeUnknownError` is retried. Everything else (a refusal, a connect failure, an
    ebMS error `send` raised after parsing a fault) propagates at once. When the attempts
    run out, the last `OutcomeUnknownError` is re-raised: the caller still does not know
    whether the message arrived and must not treat it as failed-and-undelivered.
    """
    policy = policy or RetryPolicy()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return send(attempt)
        except OutcomeUnknownError as exc:
            if attempt >= policy.max_attempts:
                logger.warning("giving up after %d attempts: %s", attempt, exc)
                raise
            delay = policy.backoff(attempt, rng)
            logger.warning("attempt %d: outcome unknown (%s); resending in %.2f s",
                           attempt, type(exc).__name__, delay)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
