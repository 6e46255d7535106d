"""Protection of the recipient's personal data at rest.

The personidentifikator (fødselsnummer or D-nummer) or postal address of the recipient is
personal data; the store needs it only to answer "what did we send to this person?". Three
modes:

- `hash` (default): a keyed HMAC-SHA256. The same person is found again, but the value cannot
  be read back. The key matters: without it the fødselsnummer space is small enough to
  enumerate, so keep it outside the database file.
- `encrypt`: AES-256-GCM with a random nonce, reversible with the key, plus the same keyed
  lookup value so that searching still works.
- `plain`: stored as is; for the simulator and development only.

Both derived keys come from one store key through HKDF-SHA256, so a key never serves two
purposes and switching between `hash` and `encrypt` keeps lookups stable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sdp.identifiers import PersonNumber
from sdp.store.model import StoreConfigurationError, StoreError

#: Environment variables read by `RecipientProtection.from_env`.
MODE_ENV = "SDP_STORE_PROTECTION"
KEY_ENV = "SDP_STORE_KEY"

_MIN_KEY = 16
_BLOB_V1 = b"\x01"


class ProtectionMode(Enum):
    HASH = "hash"
    ENCRYPT = "encrypt"
    PLAIN = "plain"


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"sdp.store " + purpose).derive(key)


def parse_key(text: str) -> bytes:
    """A store key as given in config or the environment: hex or base64."""
    text = text.strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        pass
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_"
                                if "-" in text or "_" in text else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoreConfigurationError("not hex or base64", subject=KEY_ENV) from exc


@dataclass(frozen=True)
class RecipientProtection:
    """How recipients are written to the store; `key` is the store key (>= 16 bytes)."""

    mode: ProtectionMode = ProtectionMode.HASH
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.key is None and self.mode is not ProtectionMode.PLAIN:
            raise StoreConfigurationError(
                f"recipient protection '{self.mode.value}' needs a store key: set {KEY_ENV} "
                f"(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)",
                subject="store key")
        if self.key is not None and len(self.key) < _MIN_KEY:
            raise StoreConfigurationError(f"must be at least {_MIN_KEY} bytes",
                                          subject="store key")

    @classmethod
    def hashed(cls, key: bytes) -> RecipientProtection:
        return cls(ProtectionMode.HASH, key)

    @classmethod
    def encrypted(cls, key: bytes) -> RecipientProtection:
        return cls(ProtectionMode.ENCRYPT, key)

    @classmethod
    def plain(cls) -> RecipientProtection:
        return cls(ProtectionMode.PLAIN, None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RecipientProtection:
        """From `SDP_STORE_PROTECTION` (hash, encrypt or plain; default hash) and
        `SDP_STORE_KEY` (hex or base64)."""
        env = os.environ if environ is None else environ
        raw_mode = env.get(MODE_ENV, ProtectionMode.HASH.value).strip().lower()
        try:
            mode = ProtectionMode(raw_mode)
        except ValueError as exc:
            raise StoreConfigurationError("must be hash, encrypt or plain",
                                          subject=MODE_ENV) from exc
        raw_key = env.get(KEY_ENV)
        return cls(mode, parse_key(raw_key) if raw_key else None)

    @staticmethod
    def new_key() -> bytes:
        return secrets.token_bytes(32)

    # --- use ---------------------------------------------------------------------------------

    def lookup(self, recipient: str | PersonNumber) -> str:
        """The searchable value: keyed HMAC, or the value itself in plain mode."""
        value = str(recipient)
        if self.key is None:
            return "plain:" + value
        mac = hmac.new(_derive(self.key, b"recipient lookup v1"), value.encode(),
                       hashlib.sha256)
        return "hmac-sha256:" + mac.hexdigest()

    def seal(self, recipient: str | PersonNumber, context: str) -> bytes | None:
        """What is stored to read the recipient back; None under `hash`.

        `context` (the conversation id) is bound in as associated data, so a ciphertext
        moved to another row fails to open.
        """
        value = str(recipient).encode()
        if self.mode is ProtectionMode.PLAIN:
            return value
        if self.mode is ProtectionMode.HASH:
            return None
        assert self.key is not None
        nonce = secrets.token_bytes(12)
        return _BLOB_V1 + nonce + self._aead().encrypt(nonce, value, context.encode())

    def open(self, blob: bytes | None, context: str) -> str | None:
        if blob is None:
            return None
        if self.mode is ProtectionMode.PLAIN:
            return blob.decode()
        if self.mode is ProtectionMode.HASH:
            return None
        if blob[:1] != _BLOB_V1:
            raise StoreError("unknown recipient encryption format", subject=context)
        try:
            return self._aead().decrypt(blob[1:13], blob[13:], context.encode()).decode()
        except InvalidTag as exc:
            raise StoreError("recipient does not decrypt (wrong key or altered row)",
                             subject=context) from exc

    def key_check(self) -> str:
        """A value stored once per file, to refuse a different key instead of silently
        finding nobody."""
        if self.key is None:
            return "none"
        return hmac.new(_derive(self.key, b"key check v1"), b"sdp.store",
                        hashlib.sha256).hexdigest()

    def _aead(self) -> AESGCM:
        assert self.key is not None
        return AESGCM(_derive(self.key, b"recipient encryption v1"))
