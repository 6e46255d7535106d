"""The ASiC-E container (DIGEST 4.1): streaming writer and defensive reader."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import tempfile
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdp import xmlparse
from sdp.errors import (
    DuplicateEntryError,
    ExpansionLimitError,
    PackageError,
    PackageSizeError,
    SdpError,
    UnsafeEntryError,
)
from sdp.package.asice import (
    AsiceWriter,
    ReadLimits,
    entry_name_problem,
    read_container,
    write_asice,
)
from sdp.package.documents import Document, EmptyDocumentError, ExtensionData
from sdp.package.entries import SignedEntry
from tests.conftest import SPEC

DS = "{http://www.w3.org/2000/09/xmldsig#}"
MANIFEST = b'<manifest xmlns="http://begrep.difi.no/sdp/schema_v10"/>'
LENKE = b'<lenke xmlns="http://begrep.difi.no/sdp/utvidelser/lenke"><url>https://x.no</url></lenke>'
TEXT = "Hei, dette er et brev med æøå.\n".encode() * 50
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 20


class _OneShot(io.RawIOBase):
    """A non-seekable stream of unknown length that yields `total` bytes of `fill`."""

    def __init__(self, total: int, fill: bytes = b"\0") -> None:
        self._left = total
        self._fill = fill

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        b[:n] = self._fill * n if len(self._fill) == 1 else bytes(n)
        self._left -= n
        return n


def OneShot(total: int, fill: bytes = b"\0") -> BinaryIO:
    """Typed as the BinaryIO the API takes; a RawIOBase is one at run time."""
    return cast(BinaryIO, _OneShot(total, fill))


class Signer:
    """A stand-in for the XAdES signer: records what it was asked to sign."""

    def __init__(self) -> None:
        self.calls: list[list[SignedEntry]] = []

    def __call__(self, entries: list[SignedEntry]) -> bytes:
        self.calls.append(entries)
        return b"<signatures>" + b"".join(e.sha256.hex().encode() for e in entries) + \
            b"</signatures>"


def documents(tmp_path: Path) -> tuple[Document, list[Document]]:
    path = tmp_path / "vedlegg.pdf"
    path.write_bytes(PDF)
    main = Document(TEXT, "brev.txt", "text/plain",
                    data=ExtensionData(LENKE, "lenke.xml", "application/vnd.difi.dpi.lenke+xml"))
    return main, [Document.from_path(path),
                  Document(io.BytesIO(b"<p>x</p>"), "info.html", "text/html"),
                  Document(OneShot(3000, b"a"), "strøm.txt", "text/plain")]


def build(tmp_path: Path, sign: Callable[[list[SignedEntry]], bytes] | None = None
          ) -> tuple[bytes, list[SignedEntry]]:
    main, attachments = documents(tmp_path)
    out = io.BytesIO()
    entries = write_asice(out, main, attachments, MANIFEST, sign or Signer())
    return out.getvalue(), entries


# --- writer ---------------------------------------------------------------------------------


def test_writer_round_trip(tmp_path: Path) -> None:
    signer = Signer()
    data, entries = build(tmp_path, signer)
    expected = {"brev.txt": TEXT, "lenke.xml": LENKE, "vedlegg.pdf": PDF, "info.html": b"<p>x</p>",
                "strøm.txt": b"a" * 3000, "manifest.xml": MANIFEST}
    assert [e.name for e in entries] == list(expected)
    for entry in entries:
        assert entry.sha256 == hashlib.sha256(expected[entry.name]).digest(), entry.name
    assert [e.mime_type for e in entries][-1] == "application/xml"
    assert signer.calls == [entries]

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [*expected, "META-INF/signatures.xml"]
        assert "mimetype" not in zf.namelist()
        assert zf.read("META-INF/signatures.xml") == signer(entries)
        for name, content in expected.items():
            assert zf.read(name) == content
        methods = {i.filename: i.compress_type for i in infos}
        assert methods["vedlegg.pdf"] == zipfile.ZIP_STORED
        assert methods["brev.txt"] == zipfile.ZIP_DEFLATED
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}

    with read_container(data) as container:
        assert container.signed_names == list(expected)
        assert container.manifest == MANIFEST
        assert container.mimetype is None
        for entry in entries:
            assert container.entries[entry.name].sha256 == entry.sha256


def test_writer_is_deterministic(tmp_path: Path) -> None:
    first, _ = build(tmp_path)
    second, _ = build(tmp_path)
    assert first == second


def test_writer_date_time_parameter(tmp_path: Path) -> None:
    out = io.BytesIO()
    write_asice(out, Document(TEXT, "brev.txt", "text/plain"), [], MANIFEST, Signer(),
                date_time=(2024, 5, 17, 12, 0, 0))
    with zipfile.ZipFile(out) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2024, 5, 17, 12, 0, 0)}


def test_writer_to_non_seekable_output_is_readable(tmp_path: Path) -> None:
    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.buf += b
            return len(b)

    sink = Sink()
    entries = write_asice(sink, Document(PDF, "a.pdf", "application/pdf"),  # type: ignore[arg-type]
                          [], MANIFEST, Signer())
    with read_container(bytes(sink.buf)) as container:
        assert container.entries["a.pdf"].sha256 == entries[0].sha256


def test_writer_empty_stream() -> None:
    with pytest.raises(EmptyDocumentError) as info:
        write_asice(io.BytesIO(), Document(OneShot(0), "tom.pdf", "application/pdf"), [],
                    MANIFEST, Signer())
    assert info.value.subject == "tom.pdf"


def test_writer_stream_over_limit() -> None:
    doc = Document(OneShot(5000), "stor.pdf", "application/pdf")
    with pytest.raises(PackageSizeError, match="1000") as info:
        write_asice(io.BytesIO(), doc, [], MANIFEST, Signer(), max_content_bytes=1000)
    assert info.value.subject == "stor.pdf"


def test_writer_stream_shorter_than_declared() -> None:
    doc = Document(OneShot(10), "kort.pdf", "application/pdf", size=20)
    with pytest.raises(PackageError, match="20 expected"):
        write_asice(io.BytesIO(), doc, [], MANIFEST, Signer())


def test_writer_refuses_duplicates_and_unsafe_names() -> None:
    with AsiceWriter(io.BytesIO()) as writer:
        writer.add("brev.txt", "text/plain", b"x")
        with pytest.raises(DuplicateEntryError):
            writer.add("Brev.txt", "text/plain", b"y")
        with pytest.raises(UnsafeEntryError):
            writer.add("../brev.txt", "text/plain", b"y")
        with pytest.raises(UnsafeEntryError, match="META-INF"):
            writer.add("META-INF/x.xml", "text/plain", b"y")


def test_writer_needs_manifest_before_signing() -> None:
    with AsiceWriter(io.BytesIO()) as writer:
        writer.add("brev.txt", "text/plain", b"x")
        with pytest.raises(PackageError, match="manifest"):
            writer.finish(Signer())


class Zeros(io.RawIOBase):
    """`total` zero bytes from one shared buffer, so the test itself allocates nothing."""

    BLOCK = bytes(1024 * 1024)

    def __init__(self, total: int) -> None:
        self._left = total

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = min(self._left, len(self.BLOCK) if size < 0 else size)
        self._left -= n
        return self.BLOCK if n == len(self.BLOCK) else self.BLOCK[:n]


def test_streaming_64_mib_keeps_memory_small() -> None:
    size = 64 * 1024 * 1024
    expected = hashlib.sha256()
    for _ in range(64):
        expected.update(Zeros.BLOCK)
    doc = Document(cast(BinaryIO, Zeros(size)), "stor.pdf", "application/pdf")
    with tempfile.TemporaryFile() as out:
        tracemalloc.start()
        try:
            entries = write_asice(out, doc, [], MANIFEST, Signer(),
                                  max_content_bytes=2 * size)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 3 * 1024 * 1024, f"peak {peak} bytes"
        assert entries[0].sha256 == expected.digest()
        assert out.tell() > size


# --- reading the spec's own containers ------------------------------------------------------


def signed_digests(signatures: bytes) -> dict[str, bytes]:
    root = xmlparse.parse(signatures, what="signatures.xml")
    return {ref.get("URI", ""): base64.b64decode(ref.findtext(f"{DS}DigestValue") or "")
            for ref in root.iter(f"{DS}Reference") if not ref.get("URI", "#").startswith("#")}


def test_read_post_asice_example() -> None:
    with read_container(SPEC / "eksempler" / "post.asice.zip") as container:
        assert container.signed_names == [
            "hoveddokument.txt", "ts_103174v020201p.pdf", "ts_102918v010301p.pdf",
            "ts_103171v020101p.pdf", "ts_101903v010402p.pdf", "manifest.xml"]
        assert container.mimetype is None and container.asic_manifest is None
        digests = signed_digests(container.signatures)
        assert set(digests) == set(container.signed_names)
        for name, digest in digests.items():
            assert container.entries[name].sha256 == digest, name
        assert xmlparse.parse(container.manifest).tag.endswith("}manifest")
        with container.entries["hoveddokument.txt"].open() as f:
            assert f.read() == container.entries["hoveddokument.txt"].read()


@pytest.mark.parametrize("path", sorted((SPEC / "nyinf/eksempler/komplette").glob("*.zip")),
                         ids=lambda p: p.name)
def test_read_newer_dpi_examples(path: Path) -> None:
    with read_container(path.read_bytes()) as container:
        assert container.mimetype == "application/vnd.etsi.asic-e+zip"
        assert container.asic_manifest is not None
        assert "mimetype" not in container.signed_names
        assert not any(n.startswith("META-INF/") for n in container.signed_names)
        assert "manifest.xml" in container.signed_names
        digests = signed_digests(container.signatures)
        assert set(digests) == set(container.signed_names)
        for name, digest in digests.items():
            assert container.entries[name].sha256 == digest, name


def test_read_from_non_seekable_stream() -> None:
    data = (SPEC / "eksempler" / "post.asice.zip").read_bytes()

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._src = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            chunk = self._src.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    with read_container(Pipe()) as container:  # type: ignore[arg-type]
        assert len(container.signed_names) == 6


# --- hostile containers ---------------------------------------------------------------------


def make_zip(entries: list[tuple[str, bytes]], *, with_required: bool = True,
             method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names but writes them
        with zipfile.ZipFile(out, "w", compression=method) as zf:
            for name, data in entries:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
            if with_required:
                zf.writestr("manifest.xml", MANIFEST)
                zf.writestr("META-INF/signatures.xml", b"<s/>")
    return out.getvalue()


@pytest.mark.parametrize("name", [
    pytest.param("../evil.txt", id="dotdot"),
    pytest.param("a/../../evil.txt", id="dotdot-inner"),
    pytest.param("/abs.txt", id="absolute"),
    pytest.param("C:\\x.txt", id="drive-backslash"),
    pytest.param("C:x.txt", id="drive"),
    pytest.param("dir\\x.txt", id="backslash"),
    pytest.param("sub/dir/x.txt", id="nested"),
    pytest.param("sub/x.txt", id="other-folder"),
    pytest.param("META-INF/sub/x.xml", id="nested-meta-inf"),
    pytest.param("meta-inf/x.xml", id="meta-inf-case"),
    pytest.param("./x.txt", id="dot"),
    pytest.param("x.pdf\x00.txt", id="nul-truncation"),
    pytest.param("docs/", id="directory"),
])
def test_unsafe_entry_names(name: str) -> None:
    # zipfile cuts names at NUL when writing, so write a stand-in and patch the bytes after.
    stand_in = name.replace("\x00", "#")
    data = make_zip([(stand_in, b"x")]).replace(stand_in.encode(), name.encode())
    with pytest.raises(UnsafeEntryError) as info:
        read_container(data)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize(("first", "second"), [("a.txt", "a.txt"), ("a.txt", "A.txt")],
                         ids=["exact", "case-only"])
def test_duplicate_entries(first: str, second: str) -> None:
    with pytest.warns(UserWarning, match="Duplicate") if first == second else \
            warnings.catch_warnings():
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr(first, b"one")
            zf.writestr(second, b"two")
    with pytest.raises(DuplicateEntryError) as info:
        read_container(out.getvalue())
    assert info.value.subject == second


def test_meta_inf_directory_entry_is_accepted() -> None:
    with read_container(make_zip([("META-INF/", b"")])) as container:
        assert "META-INF/" not in container.entries


def test_zip_bomb_ratio() -> None:
    bomb = make_zip([("bomb.txt", bytes(50 * 1024 * 1024))])
    assert len(bomb) < 200_000
    with pytest.raises(ExpansionLimitError, match="ratio") as info:
        read_container(bomb)
    assert info.value.subject == "bomb.txt"


def test_entry_over_size_limit() -> None:
    data = make_zip([("stor.txt", bytes(range(256)) * 8)], method=zipfile.ZIP_STORED)
    limits = ReadLimits(max_entry_bytes=1000)
    with pytest.raises(ExpansionLimitError, match="per-entry") as info:
        read_container(data, limits=limits)
    assert info.value.subject == "stor.txt"


def test_total_over_size_limit() -> None:
    data = make_zip([(f"del{i}.txt", bytes(range(256)) * 2) for i in range(4)])
    with pytest.raises(ExpansionLimitError, match="expand to"):
        read_container(data, limits=ReadLimits(max_total_bytes=1500))


def test_container_over_size_limit() -> None:
    data = make_zip([("a.txt", b"x")])
    with pytest.raises(ExpansionLimitError, match="container"):
        read_container(data, limits=ReadLimits(max_container_bytes=100))


def test_too_many_entries() -> None:
    data = make_zip([(f"d{i:03}.txt", b"x") for i in range(20)])
    with pytest.raises(ExpansionLimitError, match="entries"):
        read_container(data, limits=ReadLimits(max_entries=10))


def _patch_sizes(data: bytes, name: bytes, *, local: bool, central: bool, delta: int) -> bytes:
    """Make the entry `name` declare `delta` fewer uncompressed bytes than it really has."""
    buf = bytearray(data)
    if central:
        pos = buf.index(b"PK\x01\x02")
        while buf[pos + 46:pos + 46 + len(name)] != name:
            pos = buf.index(b"PK\x01\x02", pos + 4)
        size = struct.unpack_from("<I", buf, pos + 24)[0]
        struct.pack_into("<I", buf, pos + 24, size - delta)
    if local:
        pos = buf.index(b"PK\x03\x04")
        while buf[pos + 30:pos + 30 + len(name)] != name:
            pos = buf.index(b"PK\x03\x04", pos + 4)
        size = struct.unpack_from("<I", buf, pos + 22)[0]
        struct.pack_into("<I", buf, pos + 22, size - delta)
    return bytes(buf)


def test_declared_size_that_lies() -> None:
    data = _patch_sizes(make_zip([("brev.txt", TEXT)]), b"brev.txt",
                        local=True, central=True, delta=100)
    with read_container(data) as container:
        entry = container.entries["brev.txt"]
        assert entry.size == len(TEXT) - 100
        with pytest.raises(ExpansionLimitError, match="more than its declared") as info:
            _ = entry.sha256
        assert info.value.subject == "brev.txt"


def test_local_header_disagrees_with_central_directory() -> None:
    data = _patch_sizes(make_zip([("brev.txt", TEXT)]), b"brev.txt",
                        local=False, central=True, delta=1)
    with pytest.raises(PackageError, match="disagree") as info:
        read_container(data)
    assert info.value.subject == "brev.txt"


def test_corrupt_compressed_data() -> None:
    data = bytearray(make_zip([("brev.txt", TEXT)]))
    start = data.index(b"brev.txt") + len(b"brev.txt")
    for i in range(start + 5, start + 40):
        data[i] ^= 0x55
    with read_container(bytes(data)) as container, pytest.raises(PackageError) as info:
        container.entries["brev.txt"].read()
    assert info.value.subject == "brev.txt"


def test_encrypted_entry() -> None:
    data = bytearray(make_zip([("brev.txt", b"x")]))
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.index(sig)
        data[pos + flag_at] |= 0x1
    with pytest.raises(PackageError, match="encrypted") as info:
        read_container(bytes(data))
    assert info.value.subject == "brev.txt"


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999], ids=["half", "most", "last-bytes"])
def test_truncated_zip(tmp_path: Path, cut: float) -> None:
    data, _ = build(tmp_path)
    with pytest.raises(PackageError, match="truncated"):
        read_container(data[: int(len(data) * cut)])


@pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x05\x06" + bytes(18)[:10]],
                         ids=["empty", "text", "broken-eocd"])
def test_not_a_zip(data: bytes) -> None:
    with pytest.raises(PackageError, match="not a zip"):
        read_container(data)


@pytest.mark.parametrize("missing", ["manifest.xml", "META-INF/signatures.xml"])
def test_missing_required_entry(missing: str) -> None:
    present = [n for n in ("manifest.xml", "META-INF/signatures.xml") if n != missing]
    data = make_zip([("brev.txt", b"x"), *((n, b"<x/>") for n in present)], with_required=False)
    with pytest.raises(PackageError, match="missing") as info:
        read_container(data)
    assert info.value.subject == missing


def test_mimetype_with_wrong_content() -> None:
    with pytest.raises(PackageError, match="asic-e") as info:
        read_container(make_zip([("mimetype", b"application/vnd.etsi.asic-s+zip")],
                                method=zipfile.ZIP_STORED))
    assert info.value.subject == "mimetype"


def test_mimetype_not_first_must_be_signed() -> None:
    data = make_zip([("brev.txt", b"x")])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        items = [(i.filename, zf.read(i)) for i in zf.infolist()]
    late = make_zip([*items[:1], ("mimetype", b"application/vnd.etsi.asic-e+zip"), *items[1:]],
                    with_required=False)
    with read_container(late) as container:
        assert container.mimetype is None
        assert "mimetype" in container.signed_names


def test_entry_name_problem_accepts_layout() -> None:
    assert entry_name_problem("vedtak.pdf") is None
    assert entry_name_problem("META-INF/signatures.xml") is None
    assert entry_name_problem("sub/x") == "nested in a folder other than META-INF"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4))
def test_random_corruption_raises_only_typed_errors(flips: list[tuple[int, int]]) -> None:
    data = bytearray(FUZZ_BASE)
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    try:
        with read_container(bytes(data)) as container:
            for entry in container.entries.values():
                entry.read()
    except SdpError:
        pass


FUZZ_BASE = make_zip([("brev.txt", TEXT), ("a.pdf", PDF[:500])])


def test_fuzz_base_is_valid() -> None:
    with read_container(FUZZ_BASE) as container:
        assert container.entries["brev.txt"].read() == TEXT
        assert zlib.crc32(container.entries["a.pdf"].read()) == zlib.crc32(PDF[:500])


def test_entry_digest_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with read_container(FUZZ_BASE) as container:
        entry = container.entries["brev.txt"]
        calls = []
        original = entry._inflate

        def counting() -> Iterator[bytes]:
            calls.append(1)
            return original()

        monkeypatch.setattr(entry, "_inflate", counting)
        assert entry.read() == TEXT  # reading computes the digest on the way
        assert entry.sha256 == hashlib.sha256(TEXT).digest()
        assert entry.sha256 == hashlib.sha256(TEXT).digest()
        assert len(calls) == 1
