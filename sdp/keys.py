"""Key material: the sender's signing identity and the recipients' certificates."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from sdp.errors import KeyMaterialError


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


# --- loaders ----------------------------------------------------------------------------------
#
# Senders get their enterprise certificate (virksomhetssertifikat, DIGEST 10.1) from Buypass or
# Commfides as PKCS#12, as PEM from their own tooling, or as a Java keystore inherited from the
# Difi Java client. One entry point sniffs the format so configuration only needs a path.

#: A file path, or the file's bytes.
Source = str | os.PathLike[str] | bytes

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"ENCRYPTED PRIVATE KEY"}
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_JKS_MAGIC = b"\xfe\xed\xfe\xed"
_JCEKS_MAGIC = b"\xce\xce\xce\xce"


def _read(source: Source, what: str) -> tuple[bytes, str]:
    """The bytes of `source` and a name for error messages."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), what
    name = os.fspath(source)
    try:
        with open(name, "rb") as fh:
            return fh.read(), name
    except OSError as exc:
        raise KeyMaterialError(f"cannot read {what}: {exc.strerror}", subject=name) from exc


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None or isinstance(password, bytes):
        return password or None
    return password.encode("utf-8") or None


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, whole PEM block) for every block in `data`, in file order."""
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _same_key(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bool:
    public = cert.public_key()
    return (
        isinstance(public, rsa.RSAPublicKey)
        and public.public_numbers() == key.public_key().public_numbers()
    )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _order_chain(
    leaf: x509.Certificate, others: list[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Intermediates above `leaf`, nearest first, stopping before a self-signed root.

    Certificates that are not on the leaf's path (another CA's root, stray extras) are dropped:
    a signature's KeyInfo must carry exactly the path (DIGEST 4.3, 10.2).
    """
    chain: list[x509.Certificate] = []
    pool = [c for c in others if c != leaf]
    current = leaf
    while not _is_self_signed(current):
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None or _is_self_signed(parent):
            break
        chain.append(parent)
        pool.remove(parent)
        current = parent
    return tuple(chain)


def _identity(
    key: object, certs: list[x509.Certificate], name: str
) -> SigningIdentity:
    """Pick the leaf that matches `key`, order its chain, and refuse anything inconsistent."""
    if key is None:
        raise KeyMaterialError("no private key found", subject=name)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyMaterialError(
            f"the private key is {type(key).__name__}; SDP uses RSA keys (DIGEST 10.3)",
            subject=name,
        )
    if not certs:
        raise KeyMaterialError("no certificate found next to the private key", subject=name)
    leaf = next((c for c in certs if _same_key(key, c)), None)
    if leaf is None:
        raise KeyMaterialError(
            "the private key does not match any of its certificates "
            f"({', '.join(c.subject.rfc4514_string() for c in certs)})",
            subject=name,
        )
    return SigningIdentity(key, leaf, _order_chain(leaf, certs))


def _load_pkcs12(data: bytes, password: bytes | None, name: str) -> SigningIdentity:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        raise KeyMaterialError(
            "wrong password for the PKCS#12 file, or it is not a PKCS#12 file", subject=name
        ) from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"unreadable PKCS#12 file: {exc}", subject=name) from exc
    certs = ([cert] if cert is not None else []) + list(extra)
    if isinstance(key, rsa.RSAPrivateKey) and cert is not None and not _same_key(key, cert):
        raise KeyMaterialError(
            "the private key does not match the PKCS#12 certificate "
            f"{cert.subject.rfc4514_string()}",
            subject=name,
        )
    return _identity(key, certs, name)


def _load_pem_key(block: bytes, password: bytes | None, name: str) -> object:
    try:
        return serialization.load_pem_private_key(block, password)
    except TypeError as exc:
        # cryptography raises TypeError for "encrypted but no password" and the reverse.
        if password is None:
            raise KeyMaterialError(
                "the private key is encrypted; a password is needed", subject=name
            ) from exc
        return serialization.load_pem_private_key(block, None)
    except ValueError as exc:
        raise KeyMaterialError(
            "wrong password for the private key, or the key is corrupt", subject=name
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise KeyMaterialError(f"unsupported private key: {exc}", subject=name) from exc


def _pem_certificates(blocks: list[tuple[bytes, bytes]], name: str) -> list[x509.Certificate]:
    certs = []
    for label, block in blocks:
        if label in _CERT_LABELS:
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                raise KeyMaterialError(f"unreadable certificate: {exc}", subject=name) from exc
    return certs


def _load_pem(
    data: bytes, password: bytes | None, name: str, extra: list[tuple[bytes, bytes]]
) -> SigningIdentity:
    blocks = _pem_blocks(data) + extra
    keys = [block for label, block in blocks if label in _KEY_LABELS]
    if not keys:
        raise KeyMaterialError("no private key found in the PEM data", subject=name)
    if len(keys) > 1:
        raise KeyMaterialError(
            f"{len(keys)} private keys found; give one key per identity", subject=name
        )
    key = _load_pem_key(keys[0], password, name)
    return _identity(key, _pem_certificates(blocks, name), name)


def _load_jks(
    data: bytes, password: bytes | None, alias: str | None, name: str
) -> SigningIdentity:
    try:
        import jks  # optional dependency: only senders with a Java keystore need it
    except ImportError as exc:
        raise KeyMaterialError(
            "reading a Java keystore (JKS/JCEKS) needs pyjks: "
            "pip install 'sikker-digital-post[jks]'",
            subject=name,
        ) from exc
    text = (password or b"").decode("utf-8")
    try:
        store = jks.KeyStore.loads(data, text, try_decrypt_keys=False)
    except jks.KeystoreSignatureException as exc:
        raise KeyMaterialError("wrong password for the keystore", subject=name) from exc
    except Exception as exc:  # pyjks raises many unrelated types on malformed input
        raise KeyMaterialError(f"not a readable Java keystore: {exc}", subject=name) from exc
    entries = dict(store.private_keys)
    if alias is None:
        if len(entries) != 1:
            raise KeyMaterialError(
                f"the keystore holds {len(entries)} private keys "
                f"({', '.join(sorted(entries)) or 'none'}); choose one with alias=",
                subject=name,
            )
        alias = next(iter(entries))
    # Java lower-cases JKS aliases, so a configured "Eksempel" must find "eksempel".
    entry = entries.get(alias) or entries.get(alias.lower())
    if entry is None:
        raise KeyMaterialError(
            f"no private key entry with alias {alias!r} (found: {', '.join(sorted(entries))})",
            subject=name,
        )
    try:
        entry.decrypt(text)
    except jks.DecryptionFailureException as exc:
        raise KeyMaterialError(
            f"wrong password for the key entry {alias!r}", subject=name
        ) from exc
    except Exception as exc:
        raise KeyMaterialError(f"cannot decrypt key entry {alias!r}: {exc}", subject=name) from exc
    try:
        key = serialization.load_der_private_key(entry.pkey_pkcs8, None)
        certs = [x509.load_der_x509_certificate(der) for _kind, der in entry.cert_chain]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"unreadable key entry {alias!r}: {exc}", subject=name) from exc
    return _identity(key, certs, f"{name}#{alias}")


def load_signing_identity(
    source: Source,
    password: str | bytes | None = None,
    *,
    certificates: Source | None = None,
    alias: str | None = None,
) -> SigningIdentity:
    """Load a private key with its certificate chain from PKCS#12, PEM, JKS or JCEKS.

    The format is recognised from the content, not the file name. For PEM the key and the
    certificates may share one file, or the certificates may come from `certificates`.
    `alias` picks the entry in a Java keystore holding several keys; the keystore password
    also unlocks the key entry (as the Difi Java client expects). The returned chain is leaf
    first, then intermediates, without the self-signed root.
    """
    data, name = _read(source, "key material")
    secret = _password_bytes(password)
    extra: list[tuple[bytes, bytes]] = []
    if certificates is not None:
        cert_data, cert_name = _read(certificates, "certificates")
        extra = _pem_blocks(cert_data)
        if not extra:
            extra = [
                (b"CERTIFICATE", c.public_bytes(serialization.Encoding.PEM))
                for c in _parse_certificates(cert_data, cert_name)
            ]
    if data[:4] in (_JKS_MAGIC, _JCEKS_MAGIC):
        identity = _load_jks(data, secret, alias, name)
    elif b"-----BEGIN " in data:
        return _load_pem(data, secret, name, extra)
    else:
        identity = _load_pkcs12(data, secret, name)
    if extra:
        more = _pem_certificates(extra, name)
        identity = SigningIdentity(
            identity.key,
            identity.certificate,
            _order_chain(identity.certificate, [*identity.chain, *more]),
        )
    return identity


def _parse_certificates(data: bytes, name: str) -> list[x509.Certificate]:
    blocks = _pem_blocks(data)
    if blocks:
        certs = _pem_certificates(blocks, name)
        for label, block in blocks:
            if label in (b"PKCS7", b"CMS"):
                certs += _pkcs7(block, name, pem=True)
        if not certs:
            raise KeyMaterialError("no certificate found in the PEM data", subject=name)
        return certs
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    return _pkcs7(data, name, pem=False)


def _pkcs7(data: bytes, name: str, *, pem: bool) -> list[x509.Certificate]:
    """Certificates from a PKCS#7 certs-only bundle (.p7b), as some CAs hand out chains."""
    try:
        loader = pkcs7.load_pem_pkcs7_certificates if pem else pkcs7.load_der_pkcs7_certificates
        return list(loader(data))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(
            "not a certificate (expected PEM, DER or PKCS#7)", subject=name
        ) from exc


def load_certificates(source: Source) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, a DER file or a PKCS#7 (.p7b) bundle, in file order."""
    data, name = _read(source, "certificates")
    return _parse_certificates(data, name)


def load_certificate(source: Source) -> x509.Certificate:
    """One certificate (PEM or DER); from a bundle, the first one, which by convention is the leaf.

    Used for a recipient's encryption certificate and for trust anchors (DIGEST 10.1, 10.2),
    which the spec ships in both encodings.
    """
    return load_certificates(source)[0]
