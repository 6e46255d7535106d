"""The document package end to end: documents -> ASiC-E (XAdES) -> CMS, and back.

Building streams the documents through the zip writer (hashing each once) into a spooled
temporary file, then through AES-256-CBC into `out`, computing the package fingerprint
(dokumentpakkefingeravtrykk, DIGEST 4.7) on the way. Peak memory stays at the spool
threshold plus a chunk, whatever the document sizes.

Opening is the receiver's side (mailbox, print provider, our simulator, a support
engineer): decrypt, read the zip defensively, verify the XAdES signature over every file,
and only then parse the manifest.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from sdp.bindings import from_xml
from sdp.errors import PackageError, PackageSizeError
from sdp.keys import SigningIdentity
from sdp.package import cms, xades
from sdp.package.asice import Container, ReadLimits, ZipEntry, read_container, write_asice
from sdp.package.documents import Document, check_documents
from sdp.package.entries import SignedEntry
from sdp.package.manifest import build_manifest
from sdp.schemas import validate
from sdp_bindings import sdp as s

#: DIGEST 15 item 13 leaves the unit of "30 Mb" open; issue 3 fixes 30 MiB on the encrypted
#: package, configurable.
DEFAULT_MAX_PACKAGE_BYTES = 30 * 1024 * 1024
#: Zips up to this size stay in memory; larger ones spill to a temporary file.
DEFAULT_SPOOL_BYTES = 8 * 1024 * 1024


class ManifestMismatchError(PackageError):
    """manifest.xml and the container's files disagree (missing or unlisted documents)."""


@dataclass(frozen=True)
class BuiltPackage:
    """What the sender needs from a built package: the fingerprint goes in the business
    message, the size in logs, the entries for the record."""

    fingerprint: bytes
    size: int
    zip_size: int
    entries: tuple[SignedEntry, ...]
    manifest: s.Manifest

    @property
    def fingerprint_base64(self) -> str:
        import base64

        return base64.b64encode(self.fingerprint).decode("ascii")


def build_package(
    out: BinaryIO,
    *,
    hoveddokument: Document,
    vedlegg: Sequence[Document] = (),
    avsender: s.Avsender,
    mottaker: s.Mottaker | None,
    signer: SigningIdentity,
    recipient: x509.Certificate,
    signing_time: dt.datetime | None = None,
    key_transport: cms.KeyTransport = cms.KeyTransport.OAEP_SHA256,
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    allow_other_mime_types: bool = False,
    spool_bytes: int = DEFAULT_SPOOL_BYTES,
) -> BuiltPackage:
    """Build the encrypted document package into `out` and return its fingerprint.

    Every pre-flight rule runs before a byte is written; a package that would exceed
    `max_package_bytes` once encrypted raises `PackageSizeError` before `out` is touched.
    """
    check_documents(hoveddokument, vedlegg, allow_other_mime_types=allow_other_mime_types,
                    max_package_bytes=max_package_bytes)
    manifest, manifest_xml = build_manifest(
        avsender=avsender, hoveddokument=hoveddokument, vedlegg=vedlegg, mottaker=mottaker
    )
    when = signing_time or dt.datetime.now(dt.UTC)

    def sign(entries: list[SignedEntry]) -> bytes:
        return xades.sign(entries, signer, when)

    with tempfile.SpooledTemporaryFile(max_size=spool_bytes) as spool:
        spool_io = cast(BinaryIO, spool)
        entries = write_asice(spool_io, hoveddokument, vedlegg, manifest_xml, sign,
                              max_content_bytes=max_package_bytes)
        zip_size = spool.tell()
        encrypted = cms.encrypted_length(zip_size, recipient, key_transport=key_transport)
        if encrypted > max_package_bytes:
            raise PackageSizeError(
                f"the encrypted package would be {encrypted} bytes, over the limit of "
                f"{max_package_bytes}", subject="dokumentpakke")
        spool.seek(0)
        result = cms.encrypt_stream(spool_io, zip_size, recipient, out,
                                    key_transport=key_transport)
    return BuiltPackage(result.fingerprint, result.bytes_written, zip_size, tuple(entries),
                        manifest)


@dataclass(frozen=True)
class PackageDocument:
    """A document as the verified manifest lists it."""

    href: str
    mime_type: str
    title: str | None
    language: str | None
    is_main: bool
    entry: ZipEntry
    data_href: str | None = None

    def open(self) -> IO[bytes]:
        return self.entry.open()


@dataclass
class OpenedPackage:
    """A decrypted, verified package. Close it (or use `with`) to remove temporary files."""

    manifest: s.Manifest
    manifest_xml: bytes
    signature: xades.XadesResult
    container: Container
    documents: list[PackageDocument] = field(default_factory=list)
    _resources: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def signer(self) -> x509.Certificate:
        return self.signature.signer

    def close(self) -> None:
        self.container.close()
        for r in self._resources:
            r.close()

    def __enter__(self) -> OpenedPackage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Source = bytes | str | os.PathLike[str] | BinaryIO


@contextmanager
def _as_stream(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        import io

        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with Path(source).open("rb") as fh:
            yield fh
    else:
        yield source


def open_package(
    source: Source,
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate | None = None,
    *,
    at: dt.datetime | None = None,
    trust: Sequence[x509.Certificate] | None = None,
    limits: ReadLimits | None = None,
    spool_bytes: int = DEFAULT_SPOOL_BYTES,
) -> OpenedPackage:
    """Decrypt a CMS package with the recipient key, then verify it like `open_container`."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=spool_bytes)
    try:
        with _as_stream(source) as stream:
            cms.decrypt(stream, key, certificate, out=cast(BinaryIO, spool))
        spool.seek(0)
        opened = open_container(cast(BinaryIO, spool), at=at, trust=trust, limits=limits)
    except BaseException:
        spool.close()
        raise
    opened._resources.append(spool)
    return opened


def open_container(
    source: Source,
    *,
    at: dt.datetime | None = None,
    trust: Sequence[x509.Certificate] | None = None,
    limits: ReadLimits | None = None,
) -> OpenedPackage:
    """Read an unencrypted ASiC-E container, verify its signature, then parse its manifest.

    Without `trust`, the signature is checked but the signer is not; with it, the signer's
    chain must reach one of the anchors at `at` (default: now; a parameter because archived
    packages outlive their certificates).
    """
    container = read_container(source if not isinstance(source, str | os.PathLike)
                               else Path(source), limits=limits)
    try:
        digests = {name: container.entries[name].sha256 for name in container.signed_names}
        signature = xades.verify(container.signatures, digests, at=at, trust=trust)
        validate(container.manifest, what="manifest.xml")
        manifest = from_xml(container.manifest, s.Manifest, what="manifest.xml")
        documents = _documents(manifest, container)
    except BaseException:
        container.close()
        raise
    return OpenedPackage(manifest, container.manifest, signature, container, documents)


def _documents(manifest: s.Manifest, container: Container) -> list[PackageDocument]:
    """Tie manifest entries to container files; every file must be listed exactly once."""
    listed: list[PackageDocument] = []
    for is_main, doc in [(True, manifest.hoveddokument), *((False, d) for d in manifest.vedlegg)]:
        entry = container.entries.get(doc.href)
        if entry is None:
            raise ManifestMismatchError("listed in manifest.xml but not in the container",
                                        subject=doc.href)
        if doc.data is not None and doc.data.href not in container.entries:
            raise ManifestMismatchError("extension data listed in manifest.xml is missing",
                                        subject=doc.data.href)
        listed.append(PackageDocument(
            href=doc.href, mime_type=doc.mime, is_main=is_main, entry=entry,
            title=doc.tittel.value if doc.tittel else None,
            language=doc.tittel.lang if doc.tittel else None,
            data_href=doc.data.href if doc.data else None,
        ))
    named = {d.href for d in listed} | {d.data_href for d in listed if d.data_href}
    named.add("manifest.xml")
    for name in container.signed_names:
        if name not in named:
            raise ManifestMismatchError("file in the container is not listed in manifest.xml",
                                        subject=name)
    return listed
