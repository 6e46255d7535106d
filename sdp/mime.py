"""SOAP 1.2 with Attachments: the multipart/related packaging of SDP messages (DIGEST 7.9).

A consignment travels as a SOAP envelope plus one binary attachment, the encrypted document
package (CMS, up to ~30 MB). The writer therefore streams: `MultipartBody` knows its exact
length up front and reads the attachment from disk in blocks, so HTTP can send it with a
`Content-Length` (no chunked encoding, which some gateways refuse) and without holding the
file in memory.

The parser is deliberately small and strict. It reads a single level of multipart (SDP
never nests), refuses anything it would otherwise have to guess about, and bounds the
number of parts and the size of part headers, because the simulator parses bytes from
anyone who can reach it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final
from urllib.parse import quote, unquote

from sdp.errors import MimeError

SOAP_MEDIA_TYPE: Final = "application/soap+xml"
#: The root part's and a plain message's Content-Type, as the .NET client sends it (DIGEST 7.9).
SOAP_CONTENT_TYPE: Final = "application/soap+xml; charset=UTF-8"
#: The document package's MIME type (DIGEST 7.9, PartProperties MimeType).
CMS_CONTENT_TYPE: Final = "application/cms"
#: Domain part of generated Content-IDs, following the examples (DIGEST 7.9).
DEFAULT_CID_DOMAIN: Final = "meldingsformidler.sdp.difi.no"

_CRLF: Final = b"\r\n"
_BLOCK: Final = 64 * 1024
# RFC 2046 5.1.1: bchars, 1..70 characters, not ending in a space.
_BOUNDARY_RE: Final = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# RFC 2045 token characters (for media types and parameter names).
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_HEADER_NAME_RE: Final = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+")
# Characters left as they are when writing a Content-ID into a `cid:` URL (RFC 2392 asks
# for %hh only where a character is not allowed in a URL).
_CID_SAFE: Final = "@.-_~!$&'*+=^`{|}/?"


# --- Content-ID and cid: URLs (RFC 2392) ------------------------------------------------------


def new_content_id(domain: str = DEFAULT_CID_DOMAIN) -> str:
    """A fresh Content-ID `<uuid>@domain` (without angle brackets), the examples' convention."""
    return f"{uuid.uuid4()}@{domain}"


def cid_uri(content_id: str) -> str:
    """`foo@bar` or `<foo@bar>` -> `cid:foo@bar`, percent-encoding what a URL cannot hold."""
    return "cid:" + quote(_strip_brackets(content_id), safe=_CID_SAFE)


def content_id_from_uri(uri: str) -> str:
    """`cid:foo%40bar` -> `foo@bar`: the bare Content-ID a `cid:` reference names (RFC 2392)."""
    if uri[:4].lower() != "cid:" or len(uri) == 4:
        raise MimeError(f"not a cid: URL: {uri!r}", subject="Content-ID reference")
    try:
        return unquote(uri[4:], errors="strict")
    except UnicodeDecodeError:  # e.g. `cid:%ff` (found writing the fuzz targets)
        raise MimeError(f"not UTF-8 once percent-decoded: {uri!r}",
                        subject="Content-ID reference") from None


def content_id_header(content_id: str) -> str:
    """The Content-ID header value `<foo@bar>` for a bare id."""
    return f"<{_strip_brackets(content_id)}>"


def bare_content_id(value: str) -> str:
    """Accept `<id>`, `cid:id` or a bare `id` and return the bare id, for lookups."""
    value = value.strip()
    if value[:4].lower() == "cid:":
        return content_id_from_uri(value)
    return _strip_brackets(value)


def cid_matches(reference: str, content_id_header_value: str) -> bool:
    """Whether a `cid:` URL (PartInfo href, ds:Reference URI) names this Content-ID header.

    Comparison is exact after percent-decoding: a signed reference must name one part only.
    """
    try:
        return content_id_from_uri(reference) == _strip_brackets(content_id_header_value.strip())
    except MimeError:
        return False


def _strip_brackets(value: str) -> str:
    if value.startswith("<") and value.endswith(">") and len(value) > 2:
        return value[1:-1]
    return value


def _check_content_id(content_id: str) -> str:
    bare = _strip_brackets(content_id)
    if not bare or any(c in bare for c in "<>\r\n \t") or not bare.isascii():
        raise MimeError(f"unusable Content-ID {content_id!r}", subject="Content-ID")
    return bare


# --- writer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """One binary attachment: in memory (`bytes`) or read from a file at send time (`Path`).

    A file's size is taken when the body is built; if the file changes size before it has
    been sent, sending fails rather than putting a wrong Content-Length on the wire.
    """

    content_id: str
    data: bytes | Path
    content_type: str = CMS_CONTENT_TYPE

    @property
    def size(self) -> int:
        if isinstance(self.data, bytes):
            return len(self.data)
        return os.stat(self.data).st_size


class MultipartBody:
    """A multipart/related SOAP-with-Attachments request body of known length (DIGEST 7.9).

    The object is reusable: each `open()` gives a fresh one-shot stream, so the same body can
    be sent again. (A retry should normally rebuild the message; see `sdp.transport`.)
    """

    def __init__(self, envelope: bytes, attachment: Attachment, *,
                 soap_content_id: str | None = None, boundary: str | None = None) -> None:
        self.envelope = envelope
        self.attachment = attachment
        self.soap_content_id = _check_content_id(soap_content_id or new_content_id())
        attachment_cid = _check_content_id(attachment.content_id)
        if attachment_cid == self.soap_content_id:
            raise MimeError("the attachment reuses the SOAP part's Content-ID",
                            subject=attachment_cid)
        if boundary is None:
            # 128 random bits: the chance that the (unscanned) attachment contains the
            # boundary line is negligible; the envelope is checked below.
            boundary = f"MIMEBoundary_{secrets.token_hex(16)}"
        if not _BOUNDARY_RE.fullmatch(boundary):
            raise MimeError(f"invalid boundary {boundary!r}", subject="multipart boundary")
        if b"--" + boundary.encode("ascii") in envelope:
            raise MimeError("the SOAP envelope contains the boundary", subject="multipart boundary")
        self.boundary = boundary
        dash = b"--" + boundary.encode("ascii")
        self._head = (
            dash + _CRLF
            + _part_headers(SOAP_CONTENT_TYPE, self.soap_content_id)
            + envelope + _CRLF
            + dash + _CRLF
            + _part_headers(attachment.content_type, attachment_cid)
        )
        self._tail = _CRLF + dash + b"--" + _CRLF
        self._attachment_size = attachment.size

    @property
    def content_type(self) -> str:
        """The HTTP Content-Type: the parameter order and quoting of DIGEST 7.9."""
        return (f'multipart/related; type="{SOAP_MEDIA_TYPE}"; boundary="{self.boundary}"; '
                f'start="<{self.soap_content_id}>"')

    def __len__(self) -> int:
        return len(self._head) + self._attachment_size + len(self._tail)

    def open(self) -> BodyStream:
        """A fresh stream over the whole body, for one HTTP request."""
        return BodyStream(self._chunks(), len(self))

    def iter_chunks(self) -> Iterator[bytes]:
        """The body in blocks (attachment files are read lazily)."""
        return self._chunks()

    def to_bytes(self) -> bytes:
        """The whole body in memory; for small messages and tests."""
        return b"".join(self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        yield self._head
        data = self.attachment.data
        if isinstance(data, bytes):
            if data:
                yield data
        else:
            remaining = self._attachment_size
            with open(data, "rb") as fh:
                while remaining:
                    block = fh.read(min(_BLOCK, remaining))
                    if not block:
                        raise MimeError("file shrank while being sent", subject=str(data))
                    remaining -= len(block)
                    yield block
                if fh.read(1):
                    raise MimeError("file grew while being sent", subject=str(data))
        yield self._tail


def _part_headers(content_type: str, content_id: str) -> bytes:
    return (f"Content-Type: {content_type}\r\n"
            "Content-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{content_id}>\r\n\r\n").encode("ascii")


class BodyStream:
    """A one-shot, file-like view of a body: `read(n)` plus `__len__`.

    For HTTP clients that take a file-like body: `__len__` gives the Content-Length (so no
    chunked encoding), `read` streams it. `sdp.transport` writes `iter_chunks` itself.
    """

    def __init__(self, chunks: Iterator[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length
        self._buffer = b""
        self._sent = 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        self._sent += len(out)
        if self._sent > self._length:
            raise MimeError("body longer than its declared length", subject="multipart body")
        return out

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(_BLOCK):
            yield block


# --- Content-Type header ----------------------------------------------------------------------


@dataclass(frozen=True)
class MediaType:
    """A parsed Content-Type: lower-cased `type/subtype` and parameters (names lower-cased)."""

    mime_type: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_content_type(value: str) -> MediaType:
    """Parse `type/subtype *(; name=value)` strictly (RFC 2045 tokens and quoted strings)."""
    what = "Content-Type"
    if len(value) > 1024:
        raise MimeError("header too long", subject=what)
    pos = 0
    n = len(value)

    def skip_ws() -> None:
        nonlocal pos
        while pos < n and value[pos] in " \t":
            pos += 1

    def token() -> str:
        nonlocal pos
        m = _TOKEN_RE.match(value, pos)
        if not m:
            raise MimeError(f"expected a token at offset {pos} in {value!r}", subject=what)
        pos = m.end()
        return m.group()

    skip_ws()
    main = token()
    if pos >= n or value[pos] != "/":
        raise MimeError(f"no subtype in {value!r}", subject=what)
    pos += 1
    mime_type = f"{main}/{token()}".lower()
    params: dict[str, str] = {}
    while True:
        skip_ws()
        if pos >= n:
            break
        if value[pos] != ";":
            raise MimeError(f"unexpected {value[pos]!r} in {value!r}", subject=what)
        pos += 1
        skip_ws()
        if pos >= n:  # a trailing ';' is common and harmless
            break
        name = token().lower()
        skip_ws()
        if pos >= n or value[pos] != "=":
            raise MimeError(f"parameter {name!r} has no value", subject=what)
        pos += 1
        skip_ws()
        if pos < n and value[pos] == '"':
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= n:
                    raise MimeError(f"unterminated quoted string in {value!r}", subject=what)
                c = value[pos]
                if c == "\\" and pos + 1 < n:
                    chars.append(value[pos + 1])
                    pos += 2
                elif c == '"':
                    pos += 1
                    break
                else:
                    chars.append(c)
                    pos += 1
            param = "".join(chars)
        else:
            param = token()
        if name in params:
            raise MimeError(f"parameter {name!r} given twice", subject=what)
        params[name] = param
    return MediaType(mime_type, params)


# --- parser -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MimeLimits:
    """Bounds on what the parser accepts; SDP needs 2 parts and a few hundred header bytes."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_parts: int = 8
    max_header_bytes: int = 8 * 1024
    max_headers: int = 32
    max_preamble_bytes: int = 4 * 1024


DEFAULT_LIMITS: Final = MimeLimits()


@dataclass(frozen=True)
class Part:
    """One decoded MIME part: transfer encoding removed, headers kept (names lower-cased)."""

    content_id: str | None
    content_type: str
    headers: Mapping[str, str]
    data: bytes


@dataclass(frozen=True)
class ParsedMessage:
    """A SOAP message: the envelope bytes and attachments keyed by bare Content-ID."""

    envelope: bytes
    content_type: str
    attachments: Mapping[str, Part]
    multipart: bool

    def attachment(self, reference: str) -> Part:
        """Look up by `cid:` URL, `<id>` or bare id; MimeError if no such part."""
        key = bare_content_id(reference)
        try:
            return self.attachments[key]
        except KeyError:
            raise MimeError("no attachment with this Content-ID", subject=reference) from None

    def check_attachments(self, references: Iterable[str]) -> None:
        """Require exactly the referenced attachments (PartInfo hrefs): none missing, none extra.

        An unreferenced part is not covered by the WS-Security signature, so it is refused
        rather than ignored (ebMS EBMS:0007 MimeInconsistency, DIGEST 9.4).
        """
        wanted = {bare_content_id(r) for r in references}
        missing = wanted - self.attachments.keys()
        extra = self.attachments.keys() - wanted
        if missing:
            raise MimeError(f"referenced but absent: {sorted(missing)}", subject="attachments")
        if extra:
            raise MimeError(f"present but not referenced: {sorted(extra)}",
                            subject="attachments")


def parse_message(content_type: str, body: bytes | IO[bytes], *, length: int | None = None,
                  limits: MimeLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """Split an HTTP request or response into the SOAP envelope and its attachments.

    Accepts plain `application/soap+xml` and `multipart/related` (DIGEST 7.9: a simulator
    should accept both). `body` may be a stream, read up to `length` bytes (the
    Content-Length); a shorter stream is a truncated message.
    """
    data = _read_body(body, length, limits)
    media = parse_content_type(content_type)
    if media.mime_type == SOAP_MEDIA_TYPE:
        if not data:
            raise MimeError("empty body", subject="SOAP message")
        return ParsedMessage(data, content_type, {}, multipart=False)
    if media.mime_type != "multipart/related":
        raise MimeError(f"expected {SOAP_MEDIA_TYPE} or multipart/related, got "
                        f"{media.mime_type}", subject="Content-Type")
    return _parse_multipart(media, data, limits)


def _read_body(body: bytes | IO[bytes], length: int | None, limits: MimeLimits) -> bytes:
    if length is not None and length > limits.max_body_bytes:
        raise MimeError(f"{length} bytes exceeds the limit of {limits.max_body_bytes}",
                        subject="message body")
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        if length is not None and len(data) != length:
            raise MimeError(f"got {len(data)} bytes, Content-Length says {length}",
                            subject="message body")
    else:
        want = limits.max_body_bytes + 1 if length is None else length
        blocks: list[bytes] = []
        got = 0
        while got < want:
            block = body.read(min(_BLOCK, want - got))
            if not block:
                break
            blocks.append(block)
            got += len(block)
        data = b"".join(blocks)
        if length is not None and got < length:
            raise MimeError(f"truncated: got {got} of {length} bytes", subject="message body")
    if len(data) > limits.max_body_bytes:
        raise MimeError(f"exceeds the limit of {limits.max_body_bytes} bytes",
                        subject="message body")
    return data


def _parse_multipart(media: MediaType, data: bytes, limits: MimeLimits) -> ParsedMessage:
    what = "multipart/related"
    boundary = media.params.get("boundary")
    if boundary is None:
        raise MimeError("no boundary parameter", subject=what)
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise MimeError(f"invalid boundary {boundary!r}", subject=what)
    # RFC 2387 names the root's type; SOAP 1.2 with attachments uses application/soap+xml.
    root_type = media.params.get("type")
    if root_type is not None and root_type.lower() != SOAP_MEDIA_TYPE:
        raise MimeError(f"type parameter is {root_type!r}, expected {SOAP_MEDIA_TYPE}",
                        subject=what)

    parts = _split_parts(data, boundary.encode("ascii"), limits)
    if not parts:
        raise MimeError("no body parts", subject=what)

    by_id: dict[str, Part] = {}
    for index, part in enumerate(parts):
        if part.content_id is None:
            # A part without a Content-ID cannot be referenced (and so cannot be signed);
            # only a root found by position may lack one.
            if index == 0 and "start" not in media.params:
                continue
            raise MimeError(f"part {index + 1} has no Content-ID", subject=what)
        if part.content_id in by_id:
            raise MimeError("duplicate Content-ID", subject=part.content_id)
        by_id[part.content_id] = part

    start = media.params.get("start")
    if start is None:
        root = parts[0]  # RFC 2387: without `start` the root is the first part
    else:
        root_id = _strip_brackets(start.strip())
        if root_id not in by_id:
            raise MimeError(f"start parameter {start!r} names no part", subject=what)
        root = by_id[root_id]
    if parse_content_type(root.content_type).mime_type != SOAP_MEDIA_TYPE:
        raise MimeError(f"root part is {root.content_type!r}, expected {SOAP_MEDIA_TYPE}",
                        subject=what)
    if not root.data:
        raise MimeError("root part is empty", subject=what)
    attachments = {cid: p for cid, p in by_id.items() if p is not root}
    return ParsedMessage(root.data, root.content_type, attachments, multipart=True)


def _split_parts(data: bytes, boundary: bytes, limits: MimeLimits) -> list[Part]:
    what = "multipart/related"
    dash = b"--" + boundary
    if data.startswith(dash):
        pos = 0
    else:
        found = data.find(_CRLF + dash, 0, limits.max_preamble_bytes + len(dash) + 2)
        if found < 0:
            raise MimeError("boundary not found in the body", subject=what)
        pos = found + 2
    parts: list[Part] = []
    while True:
        after = pos + len(dash)
        if data[after:after + 2] == b"--":
            return parts  # close delimiter; any epilogue is ignored (RFC 2046)
        line_end = data.find(_CRLF, after, after + 256)
        if line_end < 0 and len(data) - after < 256:
            raise MimeError("body ends inside a delimiter line: truncated", subject=what)
        if line_end < 0 or data[after:line_end].strip(b" \t"):
            raise MimeError("malformed delimiter line (boundary used as a prefix?)",
                            subject=what)
        start = line_end + 2
        end = data.find(_CRLF + dash, start)
        if end < 0:
            raise MimeError("no closing delimiter: the body is truncated", subject=what)
        if len(parts) >= limits.max_parts:
            raise MimeError(f"more than {limits.max_parts} parts", subject=what)
        parts.append(_parse_part(data, start, end, len(parts) + 1, limits))
        pos = end + 2


def _parse_part(data: bytes, start: int, end: int, number: int, limits: MimeLimits) -> Part:
    what = f"MIME part {number}"
    if data.startswith(_CRLF, start):
        header_block, body_start = b"", start + 2
    else:
        limit = min(end, start + limits.max_header_bytes + 4)
        sep = data.find(_CRLF + _CRLF, start, limit)
        if sep < 0:
            raise MimeError("headers not terminated within the size limit", subject=what)
        header_block, body_start = data[start:sep], sep + 4
    headers = _parse_headers(header_block, what, limits)
    raw = data[body_start:end]

    content_type = headers.get("content-type", "text/plain")
    content_id: str | None = None
    if "content-id" in headers:
        value = headers["content-id"].strip()
        if not (value.startswith("<") and value.endswith(">") and len(value) > 2):
            raise MimeError(f"Content-ID {value!r} lacks angle brackets", subject=what)
        content_id = _check_content_id(value)
    encoding = headers.get("content-transfer-encoding", "binary").strip().lower()
    return Part(content_id, content_type, headers, _decode(raw, encoding, what))


def _parse_headers(block: bytes, what: str, limits: MimeLimits) -> dict[str, str]:
    headers: dict[str, str] = {}
    if not block:
        return headers
    lines: list[bytes] = []
    for line in block.split(_CRLF):
        if b"\r" in line or b"\n" in line:
            raise MimeError("bare CR or LF in headers", subject=what)
        if line[:1] in (b" ", b"\t"):
            if not lines:
                raise MimeError("continuation line without a header", subject=what)
            lines[-1] += b" " + line.strip(b" \t")  # RFC 5322 unfolding
        else:
            lines.append(line)
    if len(lines) > limits.max_headers:
        raise MimeError(f"more than {limits.max_headers} headers", subject=what)
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME_RE.fullmatch(name):
            raise MimeError(f"malformed header line {line[:80]!r}", subject=what)
        key = name.decode("ascii").lower()
        try:
            text = value.strip(b" \t").decode("ascii")
        except UnicodeDecodeError:
            raise MimeError(f"non-ASCII value in header {key!r}", subject=what) from None
        if key in headers:
            raise MimeError(f"header {key!r} given twice", subject=what)
        headers[key] = text
    return headers


def _decode(raw: bytes, encoding: str, what: str) -> bytes:
    if encoding in ("binary", "8bit", "7bit"):
        return raw
    if encoding == "base64":
        # MIME base64 is broken into lines; anything but whitespace outside the alphabet
        # is an error here, not silently dropped as binascii would by default.
        compact = re.sub(rb"[ \t\r\n]+", b"", raw)
        try:
            return base64.b64decode(compact, validate=True)
        except binascii.Error as exc:
            raise MimeError(f"invalid base64 content: {exc}", subject=what) from exc
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    raise MimeError(f"unknown Content-Transfer-Encoding {encoding!r}", subject=what)
