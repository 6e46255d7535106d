"""HTTP to the meldingsformidler: one POST per ebMS message, and what a failure means.

The only question a caller really needs answered after a failed POST is "may the broker
have processed it?" (DIGEST 9.5). The errors are shaped around that:

- `ConnectError` / `TlsError` (plain `TransportError`): no byte of the request reached the
  server. The message was definitely not delivered.
- `OutcomeUnknownError` (timeout, reset after sending, truncated response, HTTP 5xx): it may
  have been processed. Resend the *same* ebMS MessageId; the broker de-duplicates on it.
- `HttpStatusError` (3xx, 4xx): the broker refused the message (400 unparseable, 401 no
  access; DIGEST 7.9). Resending it unchanged cannot help.

`with_retries` implements the resend loop. TLS verification cannot be switched off; plain
`http://` is only for loopback (the local simulator and tests).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Final, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from sdp.errors import ConfigurationError, InputError, OutcomeUnknownError, TransportError
from sdp.mime import SOAP_CONTENT_TYPE, BodyStream, MultipartBody, ParsedMessage, parse_message

logger = logging.getLogger("sdp.transport")

T = TypeVar("T")

#: SOAP responses (receipts, errors, pulled receipts) are a few KB; anything near this is wrong.
DEFAULT_MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
_READ_BLOCK: Final = 64 * 1024


def _library_version() -> str:
    try:
        return metadata.version("sikker-digital-post")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT: Final = (f"sikker-digital-post/{_library_version()} "
                     f"python-requests/{requests.__version__}")


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
    """HTTP client for the ebMS endpoint: one `requests.Session`, so connections are reused.

    `verify` is True (the system/certifi trust store) or a CA bundle path; False is refused.
    `proxies` maps scheme to proxy URL; None means none at all (the environment is not
    consulted, so neither `CURL_CA_BUNDLE` nor `.netrc` can change what is sent or trusted).
    Use one Transport per thread, or guard it: requests does not promise Session is
    thread-safe.
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
        self.timeouts = timeouts or Timeouts()
        self.max_response_bytes = max_response_bytes
        self._allow_plain_http = allow_plain_http
        self._log_bodies = log_bodies
        self._proxies = dict(proxies or {})
        session = requests.Session()
        session.trust_env = False
        session.verify = self._verify
        session.proxies = dict(self._proxies)
        # No automatic retries or redirects below us: a resend is a decision (DIGEST 9.5).
        adapter = HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=4)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.clear()
        session.headers.update({
            "User-Agent": user_agent,
            # Responses are SOAP 1.2, plain or with attachments (DIGEST 7.9).
            "Accept": "application/soap+xml, multipart/related",
            # No compression: the size bound then limits what is read, not a zip bomb's output.
            "Accept-Encoding": "identity",
        })
        self._session = session

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def post(self, url: str, body: MultipartBody | bytes, content_type: str | None = None, *,
             attempt: int = 1) -> HttpResponse:
        """POST one message and return the 2xx response, or raise a typed `TransportError`.

        A `MultipartBody` carries its own Content-Type; plain bytes default to SOAP 1.2.
        `attempt` is only for the log line. The body is streamed with a Content-Length.
        """
        self._check_url(url)
        if isinstance(body, MultipartBody):
            if content_type is not None and content_type != body.content_type:
                raise InputError("a MultipartBody sets its own Content-Type",
                                 subject="content_type")
            content_type = body.content_type
            data: BodyStream | bytes = body.open()
            sent = len(body)
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
            try:
                resp = self._session.post(
                    url, data=data, headers={"Content-Type": content_type},
                    timeout=(self.timeouts.connect, self.timeouts.read),
                    allow_redirects=False, stream=True, verify=self._verify,
                    proxies=self._proxies)
            except requests.exceptions.RequestException as exc:
                raise _classify(exc, url) from exc
            try:
                status = resp.status_code
                refused = 300 <= status < 500
                headers: Mapping[str, str] = CaseInsensitiveDict(resp.headers)
                try:
                    received = self._read_body(resp, url, truncate=refused)
                except OutcomeUnknownError:
                    if not refused:
                        raise
                    # The status alone says it was refused; the body is only diagnostics.
                    received = b""
            finally:
                resp.close()
        except TransportError as exc:
            logger.warning("POST %s failed: %s; body %d B, %d ms, attempt %d",
                           url, type(exc).__name__, sent, elapsed(), attempt)
            raise
        ms = elapsed()
        logger.info("POST %s -> %d; sent %d B, received %d B, %d ms, attempt %d",
                    url, status, sent, len(received), ms, attempt)
        if self._log_bodies is not None:
            logger.debug("response body %s: %s", url, self._log_bodies("response", received))

        response_type = headers.get("Content-Type", "")
        if 200 <= status < 300:
            return HttpResponse(status, headers, response_type, received, url, ms)
        if status >= 500:
            raise HttpServerError(f"HTTP {status}: the outcome is unknown", status=status,
                                  content_type=response_type, body=received, url=url)
        raise HttpStatusError(f"HTTP {status}: refused", status=status,
                              content_type=response_type, body=received, url=url)

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigurationError("expected an https:// URL", subject=url)
        if not (self._allow_plain_http or _is_loopback(parts.hostname)):
            # DIGEST 7.9: the transport is HTTPS; cleartext only to the local simulator.
            raise ConfigurationError("plain http:// is only allowed to loopback",
                                     subject=url)

    def _read_body(self, resp: requests.Response, url: str, *, truncate: bool) -> bytes:
        """Read at most `max_response_bytes`; a 3xx/4xx body is cut there, anything else is
        an error (its outcome cannot be known without reading it)."""
        limit = self.max_response_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit and not truncate:
            raise ResponseTooLargeError(f"Content-Length {declared} exceeds {limit}",
                                        subject=url)
        blocks: list[bytes] = []
        total = 0
        try:
            for block in resp.iter_content(_READ_BLOCK):
                blocks.append(block)
                total += len(block)
                if total > limit:
                    if truncate:
                        return b"".join(blocks)[:limit]
                    raise ResponseTooLargeError(f"more than {limit} bytes", subject=url)
        except requests.exceptions.RequestException as exc:
            # Read timeout, reset or a body shorter than its Content-Length.
            raise OutcomeUnknownError(f"response not read completely: {exc}",
                                      subject=url) from exc
        return b"".join(blocks)

    def __repr__(self) -> str:
        return f"Transport(timeouts={self.timeouts!r}, verify={self._verify!r})"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> socket errors)."""
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


def _classify(exc: requests.exceptions.RequestException, url: str) -> TransportError:
    """Map a requests failure to "not sent" or "outcome unknown" (DIGEST 9.5)."""
    causes = _causes(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return TlsError(f"TLS handshake failed: {exc}", subject=url)
    # urllib3's NewConnectionError and NameResolutionError derive from ConnectTimeoutError:
    # all of them mean the TCP connection was never established.
    if isinstance(exc, requests.exceptions.ConnectTimeout) or any(
            isinstance(c, urllib3.exceptions.ConnectTimeoutError | ConnectionRefusedError)
            for c in causes):
        return ConnectError(f"could not connect: {exc}", subject=url)
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema | requests.exceptions.InvalidHeader):
        return TransportError(f"request not sent: {exc}", subject=url)
    # Read timeout, connection reset or closed after (part of) the request was written,
    # malformed response: the broker may have processed the message.
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
