"""Key material: the sender's signing identity and the recipients' certificates."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12


@dataclass(frozen=True)
class SigningIdentity:
    """A private key with its certificate and the chain above it (leaf first, root excluded)."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())

    @property
    def certificates(self) -> list[x509.Certificate]:
        """Leaf followed by the intermediates: what a signature's KeyInfo carries."""
        return [self.certificate, *self.chain]

    def to_pkcs12(self, password: bytes | None, name: str = "sdp") -> bytes:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(
            name.encode(), self.key, self.certificate, list(self.chain) or None, enc
        )

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)
