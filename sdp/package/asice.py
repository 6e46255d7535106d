"""The ASiC-E zip container of the document package: a streaming writer and a defensive reader.

The writer hashes each file while it streams it into the zip, so a 30 MiB package is read once
and never held in memory. The reader treats every container as hostile: zip is a format with
many ways to lie (names, sizes, duplicates, overlaps), and the container arrives from outside.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from sdp.errors import (
    DuplicateEntryError,
    ExpansionLimitError,
    PackageError,
    PackageSizeError,
    UnsafeEntryError,
)
from sdp.package.documents import (
    DEFAULT_MAX_PACKAGE_BYTES,
    Document,
    EmptyDocumentError,
    compression_for,
)
from sdp.package.entries import SignedEntry

#: The SDP manifest sits in the zip root, not in META-INF (DIGEST 4.1).
MANIFEST_NAME = "manifest.xml"
MANIFEST_MIME_TYPE = "application/xml"
#: The one XAdES signature of the package (DIGEST 4.1, 4.3).
SIGNATURES_NAME = "META-INF/signatures.xml"
META_INF = "META-INF/"
#: ASiC's optional first entry; SDP 1.x senders never write it, the newer DPI examples do.
MIMETYPE_NAME = "mimetype"
ASICE_MIME_TYPE = "application/vnd.etsi.asic-e+zip"
#: Fixed zip timestamp so that identical inputs give identical bytes.
DEFAULT_DATE_TIME = (1980, 1, 1, 0, 0, 0)
DEFAULT_CHUNK_SIZE = 1024 * 1024

Sign = Callable[[list[SignedEntry]], bytes]


# --- writer -------------------------------------------------------------------------------------


class AsiceWriter:
    """Streams files into an ASiC-E zip on `out` and collects their `SignedEntry`s.

    Order mirrors `eksempler/post.asice.zip` (DIGEST 4.1): documents, then `manifest.xml`, then
    `META-INF/signatures.xml` last. There is no `mimetype` entry in SDP 1.x. Use as a context
    manager, or call `finish`; on an exception the output is incomplete and must be discarded.
    """

    def __init__(self, out: BinaryIO, *, date_time: tuple[int, int, int, int, int, int]
                 = DEFAULT_DATE_TIME, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 max_content_bytes: int = DEFAULT_MAX_PACKAGE_BYTES) -> None:
        self._zip = zipfile.ZipFile(out, mode="w", allowZip64=True)
        self._date_time = date_time
        self._chunk_size = chunk_size
        self._max_content = max_content_bytes
        self._entries: list[SignedEntry] = []
        self._names: set[str] = set()
        self._closed = False
        #: Uncompressed bytes of every signed file written so far (the price basis, DIGEST 4.1).
        self.content_bytes = 0

    @property
    def entries(self) -> list[SignedEntry]:
        """The signed entries written so far, in zip order."""
        return list(self._entries)

    def add_document(self, doc: Document) -> None:
        """Write a document and then its extension data file, if it has one."""
        with doc.open() as src:
            self.add(doc.href, doc.mime_type, src, expected_size=doc.known_size()
                     if not doc.is_stream else doc.size)
        if doc.data is not None:
            self.add(doc.data.href, doc.data.mime_type, doc.data.content)

    def add(self, name: str, mime_type: str, source: bytes | BinaryIO, *,
            expected_size: int | None = None) -> SignedEntry:
        """Stream one signed file into the zip, hashing it on the way; never re-read."""
        self._check_open()
        problem = entry_name_problem(name)
        if problem or name.startswith(META_INF):
            raise UnsafeEntryError(problem or "signed files sit outside META-INF", subject=name)
        key = _name_key(name)
        if key in self._names:
            raise DuplicateEntryError("written twice", subject=name)
        self._names.add(key)
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        entry = self._write(name, mime_type, stream, expected_size)
        self._entries.append(entry)
        return entry

    def _write(self, name: str, mime_type: str, src: BinaryIO,
               expected_size: int | None) -> SignedEntry:
        info = self._info(name, compression_for(mime_type))
        if expected_size is not None:
            info.file_size = expected_size  # lets zipfile choose zip64 up front
        # A stream of unknown length is bounded by max_content, so zip64 is needed only if that is.
        force_zip64 = expected_size is None and self._max_content > zipfile.ZIP64_LIMIT
        digest = hashlib.sha256()
        size = 0
        with self._zip.open(info, mode="w", force_zip64=force_zip64) as dst:
            while chunk := src.read(self._chunk_size):
                size += len(chunk)
                if self.content_bytes + size > self._max_content:
                    raise PackageSizeError(
                        f"the package content passes the limit of {self._max_content} bytes "
                        "(DIGEST 4.1)", subject=name)
                digest.update(chunk)
                dst.write(chunk)
        if size == 0:
            raise EmptyDocumentError("the document is empty", subject=name)
        if expected_size is not None and size != expected_size:
            raise PackageError(f"{size} bytes read, {expected_size} expected: the source "
                               "changed while it was written", subject=name)
        self.content_bytes += size
        return SignedEntry(name, mime_type, digest.digest())

    def add_manifest(self, manifest: bytes) -> SignedEntry:
        """Write `manifest.xml` in the zip root; it is signed like a document (DIGEST 4.1)."""
        return self.add(MANIFEST_NAME, MANIFEST_MIME_TYPE, manifest)

    def finish(self, sign: Sign) -> list[SignedEntry]:
        """Write `META-INF/signatures.xml` from `sign(entries)` and close the zip."""
        self._check_open()
        if MANIFEST_NAME not in self._names:
            raise PackageError("the manifest must be written before signing",
                               subject=MANIFEST_NAME)
        entries = self.entries
        signature = sign(entries)
        with self._zip.open(self._info(SIGNATURES_NAME, zipfile.ZIP_DEFLATED), "w") as dst:
            dst.write(signature)
        self._zip.close()
        self._closed = True
        return entries

    def _info(self, name: str, compress_type: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self._date_time)
        info.compress_type = compress_type
        info.create_system = 3  # fixed, not the writing platform's, for identical bytes
        info.external_attr = 0o100644 << 16
        return info

    def _check_open(self) -> None:
        if self._closed:
            raise PackageError("the container is already finished")

    def close(self) -> None:
        """Close the zip without signing; the output is then not a valid package."""
        if not self._closed:
            self._closed = True
            try:
                self._zip.close()
            except (OSError, ValueError, RuntimeError):
                pass  # the output is being discarded anyway

    def __enter__(self) -> AsiceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_asice(out: BinaryIO, main: Document, attachments: Sequence[Document],
                manifest: bytes, sign: Sign, *,
                date_time: tuple[int, int, int, int, int, int] = DEFAULT_DATE_TIME,
                chunk_size: int = DEFAULT_CHUNK_SIZE,
                max_content_bytes: int = DEFAULT_MAX_PACKAGE_BYTES) -> list[SignedEntry]:
    """Write a whole package to `out` and return the signed entries (documents, manifest).

    Run `check_documents` first; this only enforces what it cannot know before reading a
    stream (emptiness, length) and what keeps the zip readable (names, duplicates).
    """
    with AsiceWriter(out, date_time=date_time, chunk_size=chunk_size,
                     max_content_bytes=max_content_bytes) as writer:
        for doc in (main, *attachments):
            writer.add_document(doc)
        writer.add_manifest(manifest)
        return writer.finish(sign)


# --- entry names --------------------------------------------------------------------------------

_DRIVE = re.compile(r"[A-Za-z]:")


def entry_name_problem(name: str) -> str | None:
    """Why `name` is unsafe as a container entry, or None: root files and META-INF/* only."""
    if not name:
        return "empty name"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "control character in the name"
    if "\\" in name:
        return "backslash in the name"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE.match(name):
        return "drive letter"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "empty, '.' or '..' path segment"
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "META-INF"):
        return "nested in a folder other than META-INF"
    return None


def _name_key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


# --- reader -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what reading a container may cost; defaults scale from the 30 MiB package limit.

    Sizes are uncompressed bytes. Text compresses well, so the defaults allow twice the package
    limit before calling a container a bomb.
    """

    max_container_bytes: int = 2 * DEFAULT_MAX_PACKAGE_BYTES
    max_entry_bytes: int = 2 * DEFAULT_MAX_PACKAGE_BYTES
    max_total_bytes: int = 2 * DEFAULT_MAX_PACKAGE_BYTES
    #: 1 main + 200 attachments + one extension file each + manifest, signature, mimetype, ...
    max_entries: int = 512
    #: Uncompressed/compressed ratio beyond which an entry larger than `ratio_threshold` is a bomb.
    max_ratio: float = 100.0
    ratio_threshold: int = 1024 * 1024

    @classmethod
    def for_package(cls, package_bytes: int) -> ReadLimits:
        """Limits scaled from a different package size limit."""
        return cls(2 * package_bytes, 2 * package_bytes, 2 * package_bytes)


_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_FLAG_ENCRYPTED = 0x1
_FLAG_DATA_DESCRIPTOR = 0x8
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
_ZIP64_SENTINEL = 0xFFFFFFFF


class ZipEntry:
    """One file of a container, read lazily; its SHA-256 is computed once and cached.

    Every read decompresses in chunks and stops at the declared size: bytes beyond it, a short
    entry, a bad CRC or a broken deflate stream raise typed errors, never zipfile's or zlib's.
    """

    def __init__(self, fp: BinaryIO, info: zipfile.ZipInfo, data_offset: int,
                 chunk_size: int) -> None:
        self._fp = fp
        self._info = info
        self._data_offset = data_offset
        self._chunk_size = chunk_size
        self._sha256: bytes | None = None
        self.name: str = info.filename
        #: Uncompressed size declared by the central directory (and enforced on reading).
        self.size: int = info.file_size
        self.compressed_size: int = info.compress_size

    def iter_chunks(self) -> Iterator[bytes]:
        """Yield the verified content in chunks; the last step checks length and CRC."""
        digest = hashlib.sha256()
        for chunk in self._inflate():
            digest.update(chunk)
            yield chunk
        self._sha256 = digest.digest()

    def read(self) -> bytes:
        """The whole content (bounded by the declared size, itself bounded by the limits)."""
        return b"".join(self.iter_chunks())

    def open(self) -> BinaryIO:
        """A readable stream of the content, for consumers that want file semantics."""
        return io.BufferedReader(_ChunkStream(self.iter_chunks()), buffer_size=self._chunk_size)

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the uncompressed content, streamed and cached on first use."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for chunk in self._inflate():
                digest.update(chunk)
            self._sha256 = digest.digest()
        return self._sha256

    def _raw(self) -> Iterator[bytes]:
        # Seek before every read: several entries may be read interleaved on one file object.
        pos, left = self._data_offset, self._info.compress_size
        while left > 0:
            self._fp.seek(pos)
            data = self._fp.read(min(self._chunk_size, left))
            if not data:
                raise PackageError("the compressed data ends early: truncated container",
                                   subject=self.name)
            pos += len(data)
            left -= len(data)
            yield data

    def _inflate(self) -> Iterator[bytes]:
        declared = self._info.file_size
        produced = 0
        crc = 0
        try:
            if self._info.compress_type == zipfile.ZIP_STORED:
                for data in self._raw():
                    produced += len(data)
                    crc = zlib.crc32(data, crc)
                    yield data
            else:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                for raw in self._raw():
                    if inflater.eof:
                        raise PackageError("bytes after the end of the deflate stream",
                                           subject=self.name)
                    buf = raw
                    while True:
                        # Never ask for more than one byte past the declared size.
                        limit = min(self._chunk_size, declared - produced + 1)
                        out = inflater.decompress(buf, limit)
                        produced += len(out)
                        if produced > declared:
                            raise ExpansionLimitError(
                                f"decompresses to more than its declared {declared} bytes",
                                subject=self.name)
                        if out:
                            crc = zlib.crc32(out, crc)
                            yield out
                        buf = inflater.unconsumed_tail
                        if not buf and len(out) < limit:
                            break
                if not inflater.eof or inflater.unused_data:
                    raise PackageError("the deflate stream is truncated or has trailing bytes",
                                       subject=self.name)
        except zlib.error as exc:
            raise PackageError(f"corrupt compressed data: {exc}", subject=self.name) from exc
        except OSError as exc:
            raise PackageError(f"cannot read the container: {exc}", subject=self.name) from exc
        if produced != declared:
            raise PackageError(f"{produced} bytes, {declared} declared: truncated entry",
                               subject=self.name)
        if crc != self._info.CRC:
            raise PackageError("CRC-32 mismatch: the entry is corrupt", subject=self.name)


class _ChunkStream(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@dataclass
class Container:
    """A container that passed the structural checks; entries are read lazily from `fp`.

    Close it (or use `with`) when done: it may hold a file open.
    """

    #: Every file entry by name, in zip order (directory entries are left out).
    entries: dict[str, ZipEntry]
    #: `manifest.xml` from the zip root (DIGEST 4.2).
    manifest: bytes
    #: `META-INF/signatures.xml` (DIGEST 4.3).
    signatures: bytes
    #: The files the signature must cover: everything outside META-INF, including
    #: manifest.xml, except a leading ASiC `mimetype` entry (DIGEST 4.1, TS 103 174 8.2).
    signed_names: list[str]
    #: The ASiC `mimetype` content if the container starts with one (newer DPI senders).
    mimetype: str | None = None
    #: ASiC's `META-INF/manifest.xml`, present in newer DPI containers, unused by SDP 1.x.
    asic_manifest: bytes | None = None
    _owned: BinaryIO | None = field(default=None, repr=False)

    def close(self) -> None:
        """Close the file this container opened itself (not a caller's stream)."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> Container:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def read_container(source: Source, *, limits: ReadLimits | None = None,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> Container:
    """Open an ASiC-E container defensively and check its structure before any entry is used.

    Checked up front: zip structure, entry names, duplicates, encryption, compression method,
    declared sizes and ratios, local headers against the central directory, overlapping entries,
    and presence of `manifest.xml` and `META-INF/signatures.xml`. Entry content is verified
    (size cap, CRC) as it is read.
    """
    limits = limits or ReadLimits()
    fp, owned = _open_source(source, limits)
    try:
        container = _read(fp, limits, chunk_size)
    except BaseException:
        if owned:
            fp.close()
        raise
    container._owned = fp if owned else None
    return container


def _open_source(source: Source, limits: ReadLimits) -> tuple[BinaryIO, bool]:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source), True
    if isinstance(source, str | os.PathLike):
        try:
            return open(Path(source), "rb"), True
        except OSError as exc:
            raise PackageError(f"cannot open the container: {exc}", subject=str(source)) from exc
    try:
        seekable = source.seekable()
    except (OSError, ValueError):
        seekable = False
    if seekable:
        return source, False
    # zipfile needs to seek; spool a one-shot stream, bounded by the container limit.
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    copied = 0
    while chunk := source.read(DEFAULT_CHUNK_SIZE):
        copied += len(chunk)
        if copied > limits.max_container_bytes:
            spool.close()
            raise ExpansionLimitError(f"the container is larger than "
                                      f"{limits.max_container_bytes} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool, True  # type: ignore[return-value]


def _read(fp: BinaryIO, limits: ReadLimits, chunk_size: int) -> Container:
    try:
        length = fp.seek(0, io.SEEK_END)
        fp.seek(0)
    except (OSError, ValueError) as exc:
        raise PackageError(f"cannot read the container: {exc}") from exc
    if length > limits.max_container_bytes:
        raise ExpansionLimitError(f"the container is {length} bytes, over the limit of "
                                  f"{limits.max_container_bytes}")
    try:
        infos = zipfile.ZipFile(fp).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            struct.error, NotImplementedError, UnicodeDecodeError, RuntimeError,
            OverflowError, IndexError, KeyError) as exc:
        raise PackageError(f"not a zip archive, or a truncated one: {exc}") from exc
    if len(infos) > limits.max_entries:
        raise ExpansionLimitError(f"{len(infos)} entries, over the limit of "
                                  f"{limits.max_entries}")

    entries: dict[str, ZipEntry] = {}
    seen: dict[str, str] = {}
    spans: list[tuple[int, int, str]] = []
    total = 0
    for info in infos:
        name = info.orig_filename  # before zipfile cuts it at a NUL byte
        if name == "META-INF/" and info.file_size == 0:
            continue  # a directory entry some writers add
        problem = entry_name_problem(name)
        if problem:
            raise UnsafeEntryError(problem, subject=repr(name))
        key = _name_key(name)
        if key in seen:
            raise DuplicateEntryError(f"occurs twice in the central directory (also as "
                                      f"{seen[key]!r})", subject=name)
        seen[key] = name
        _check_entry_header(info)
        _check_declared_size(info, limits)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ExpansionLimitError(f"the entries up to this one expand to {total} bytes, over "
                                      f"the limit of {limits.max_total_bytes}", subject=name)
        data_offset = _check_local_header(fp, info, length)
        spans.append((info.header_offset, data_offset + info.compress_size, name))
        entries[name] = ZipEntry(fp, info, data_offset, chunk_size)
    _check_overlaps(spans)

    names = list(entries)
    mimetype: str | None = None
    if names and names[0] == MIMETYPE_NAME:
        mimetype = _read_mimetype(entries[MIMETYPE_NAME])
    for required in (MANIFEST_NAME, SIGNATURES_NAME):
        if required not in entries:
            raise PackageError("missing from the container (DIGEST 4.1)", subject=required)
    asic_manifest = entries["META-INF/manifest.xml"].read() \
        if "META-INF/manifest.xml" in entries else None
    signed = [n for i, n in enumerate(names)
              if not n.startswith(META_INF) and not (i == 0 and mimetype is not None)]
    return Container(entries=entries, manifest=entries[MANIFEST_NAME].read(),
                     signatures=entries[SIGNATURES_NAME].read(), signed_names=signed,
                     mimetype=mimetype, asic_manifest=asic_manifest)


def _check_entry_header(info: zipfile.ZipInfo) -> None:
    name = info.filename
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
        raise PackageError("encrypted entries are not allowed", subject=name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise PackageError(f"compression method {info.compress_type} is not stored or "
                           "deflated", subject=name)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise PackageError(f"stored entry with {info.compress_size} bytes but {info.file_size} "
                           "declared", subject=name)


def _check_declared_size(info: zipfile.ZipInfo, limits: ReadLimits) -> None:
    name = info.filename
    if info.file_size > limits.max_entry_bytes:
        raise ExpansionLimitError(f"declares {info.file_size} bytes, over the per-entry limit "
                                  f"of {limits.max_entry_bytes}", subject=name)
    if info.file_size > limits.ratio_threshold:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise ExpansionLimitError(f"compression ratio {ratio:.0f}:1 is typical of a zip "
                                      f"bomb (limit {limits.max_ratio:.0f}:1)", subject=name)


def _check_local_header(fp: BinaryIO, info: zipfile.ZipInfo, length: int) -> int:
    """Check the local header agrees with the central directory; return the data offset."""
    name = info.orig_filename
    if info.header_offset < 0 or info.header_offset + _LOCAL_HEADER.size > length:
        raise PackageError("local header lies outside the file: truncated container",
                           subject=name)
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise PackageError("local header is cut off: truncated container", subject=name)
    (signature, _version, flags, method, _time, _date, crc, csize, usize, name_len,
     extra_len) = _LOCAL_HEADER.unpack(header)
    if signature != _LOCAL_SIGNATURE:
        raise PackageError("bad local header signature", subject=name)
    raw_name = fp.read(name_len)
    local_name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
    # Readers that stream through local headers would otherwise see another file name.
    if local_name != name:
        raise UnsafeEntryError(f"local header names it {local_name!r}", subject=repr(name))
    if method != info.compress_type:
        raise PackageError("local header and central directory disagree on compression",
                           subject=name)
    if not flags & _FLAG_DATA_DESCRIPTOR and _ZIP64_SENTINEL not in (csize, usize) and (
            crc != info.CRC or csize != info.compress_size or usize != info.file_size):
        raise PackageError("local header and central directory disagree on size or CRC",
                           subject=name)
    data_offset = int(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    if data_offset + info.compress_size > length:
        raise PackageError("the entry's data runs past the end of the file: truncated "
                           "container", subject=name)
    return data_offset


def _check_overlaps(spans: list[tuple[int, int, str]]) -> None:
    # Entries that share bytes are the basis of non-recursive zip bombs.
    ordered = sorted(spans)
    for (_, end, name), (start, _, other) in itertools.pairwise(ordered):
        if start < end:
            raise ExpansionLimitError(f"overlaps entry {other!r}", subject=name)


def _read_mimetype(entry: ZipEntry) -> str:
    if entry.size > 256:
        raise PackageError("implausibly long mimetype entry", subject=MIMETYPE_NAME)
    value = entry.read().decode("ascii", errors="replace")
    if value != ASICE_MIME_TYPE:
        raise PackageError(f"{value!r} is not {ASICE_MIME_TYPE}", subject=MIMETYPE_NAME)
    return value


__all__ = [
    "ASICE_MIME_TYPE", "DEFAULT_DATE_TIME", "MANIFEST_MIME_TYPE", "MANIFEST_NAME",
    "SIGNATURES_NAME", "AsiceWriter", "Container", "ReadLimits", "Sign", "ZipEntry",
    "entry_name_problem", "read_container", "write_asice",
]
