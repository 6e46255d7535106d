"""What the container and the XAdES signature agree on: one signed file each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignedEntry:
    """A file of the package outside META-INF, as the signature references it (DIGEST 4.3)."""

    #: Zip entry name; also the Reference URI in signatures.xml (percent-encoded there).
    name: str
    #: MIME type recorded in the XAdES DataObjectFormat for this reference.
    mime_type: str
    #: SHA-256 of the entry's uncompressed bytes.
    sha256: bytes
