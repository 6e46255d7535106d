"""One tree of exceptions for the whole library.

Every error says what it is about (a field, a document, an element, a file) so that a
log line at 3 a.m. names the thing to look at, not just "invalid input".
"""

from __future__ import annotations


class SdpError(Exception):
    """Root of every exception this library raises on purpose."""

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        self.subject = subject
        super().__init__(f"{subject}: {message}" if subject else message)


class InputError(SdpError, ValueError):
    """The caller gave something the protocol does not allow; nothing was built or sent."""


class ConfigurationError(SdpError):
    """Missing or inconsistent local setup: unsynced schemas, unreadable keys, bad config."""


class SchemaMissingError(ConfigurationError):
    """An official artifact is not on disk; `python codegen.py sync` fetches it."""


class ChecksumMismatchError(ConfigurationError):
    """A fetched official artifact does not match the SHA-256 pinned in schemas/lock.toml."""


class XmlSecurityError(SdpError):
    """Incoming XML was refused by the safe parser (DTD, entities, depth, size)."""


class SchemaValidationError(SdpError):
    """A document does not conform to its official schema."""

    def __init__(self, message: str, *, subject: str | None = None,
                 violations: list[tuple[str, str]] | None = None) -> None:
        #: (path, reason) for every violation found, not just the first.
        self.violations: list[tuple[str, str]] = violations or []
        super().__init__(message, subject=subject)


class KeyMaterialError(SdpError):
    """A key or certificate could not be loaded or does not match (wrong password, wrong pair)."""


class CryptoError(SdpError):
    """Decryption or cryptographic structure failure (CMS, key transport)."""


class SignatureError(SdpError):
    """A signature did not verify, or its structure breaks the profile it claims."""


class TrustError(SignatureError):
    """The signature is intact but the signer is not trusted (chain, validity, identity)."""


class PackageError(SdpError):
    """The document package (ASiC-E container) is malformed or unsafe to open."""


# --- document package (DIGEST 4) -------------------------------------------------------------


class DocumentError(InputError):
    """A document breaks a pre-flight rule (name, MIME type, size, HTML, EHF, count)."""


class PackageSizeError(DocumentError):
    """The package would exceed the configured size limit (DIGEST 15 item 13)."""


class CmsError(CryptoError):
    """The CMS EnvelopedData is malformed (bad or truncated ASN.1, wrong content type)."""


class UnsupportedAlgorithmError(CryptoError):
    """An algorithm outside the profile (key transport, content encryption, digest)."""


class NotForRecipientError(CryptoError):
    """No RecipientInfo matches the given certificate: the package was encrypted to someone else."""


class DecryptionError(CryptoError):
    """Key transport or content decryption failed (wrong key, corrupt ciphertext, bad padding)."""


class UnsafeEntryError(PackageError):
    """A zip entry name is absolute, climbs out with `..`, or lies outside the allowed folders."""


class DuplicateEntryError(PackageError):
    """The same entry name occurs twice in the container."""


class ExpansionLimitError(PackageError):
    """An entry or the whole container expands beyond its limit or with a zip-bomb ratio."""


class ReferenceMismatchError(SignatureError):
    """Signed references and container entries disagree (missing, extra or repeated)."""


class DigestMismatchError(SignatureError):
    """A referenced item's digest does not match the signed digest value."""


class SignatureValueError(SignatureError):
    """The SignatureValue does not verify with the signer's public key."""


class SigningCertificateError(SignatureError):
    """XAdES SigningCertificate does not describe the certificate in KeyInfo."""


class CertificateChainError(TrustError):
    """The signer certificate does not chain to a trust anchor or is not valid at the given time."""


# --- transport and broker (DIGEST 7, 9) ------------------------------------------------------


class TransportError(SdpError):
    """The exchange with the meldingsformidler failed below the protocol (network, HTTP, MIME)."""


class OutcomeUnknownError(TransportError):
    """The request may or may not have been processed (timeout, reset, 5xx): retry with the
    same ebMS MessageId; the broker de-duplicates on it (DIGEST 9.5)."""


class MimeError(TransportError):
    """A multipart/related message is malformed (boundary, start part, attachments)."""


class ProtocolError(SdpError):
    """A message is well-formed but breaks the ebMS/SDP profile (missing or extra parts)."""


class EbmsError(SdpError):
    """An ebMS error signal or SOAP fault from the other side (DIGEST 9.4)."""

    def __init__(self, message: str, *, code: str = "", category: str = "",
                 severity: str = "", origin: str = "", description: str = "",
                 ref_to_message_id: str | None = None, authenticated: bool = True) -> None:
        self.code = code
        self.category = category
        self.severity = severity
        self.origin = origin
        self.description = description
        self.ref_to_message_id = ref_to_message_id
        #: False when the error came unsigned: it may not be from the broker at all.
        self.authenticated = authenticated
        super().__init__(message, subject=code or None)


class EmptyQueueError(EbmsError):
    """EBMS:0006: no message waiting on the pulled MPC (not a failure; DIGEST 8.3)."""
