"""CMS EnvelopedData: encrypting the document package to its recipient, and decrypting it.

The sender encrypts the ASiC-E zip with a fresh AES-256-CBC key, wraps that key with the
recipient certificate's RSA key (RSAES-OAEP) and sends the DER bytes as the MIME attachment
(DIGEST 4.6). The SHA-256 of exactly those bytes is the dokumentpakkefingeravtrykk signed into
the business message (DIGEST 4.7), so it is computed here while writing, never by re-reading.

Encryption streams: DER needs every length up front, and the lengths are known from the plain
size, so the small header is built with asn1crypto, the big OCTET STRING header by hand, and the
ciphertext written chunk by chunk. Memory stays at about two chunks whatever the package size.

Decryption (mailbox side, the simulator, tests) streams too and accepts what real senders
produce: DER, or BER with indefinite lengths and chunked constructed OCTET STRINGs (as the Java
client and `openssl cms -stream` write), PEM-armoured CMS, key transport RSAES-OAEP with any SHA
or PKCS#1 v1.5, content AES-128/192/256-CBC.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, overload

from asn1crypto import algos, cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sdp.errors import (
    CmsError,
    DecryptionError,
    InputError,
    KeyMaterialError,
    NotForRecipientError,
    UnsupportedAlgorithmError,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EncryptResult",
    "KeyTransport",
    "decrypt",
    "encrypt",
    "encrypt_stream",
    "encrypted_length",
]

#: Read/encrypt/hash/write unit. Large enough that per-call overhead vanishes next to AES.
DEFAULT_CHUNK_SIZE = 1 << 20

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
_OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_P_SPECIFIED = "1.2.840.113549.1.1.9"

#: AES-CBC content-encryption algorithms accepted on receipt, with their key lengths.
_CONTENT_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": 16,  # aes128-CBC
    "2.16.840.1.101.3.4.1.22": 24,  # aes192-CBC
    _OID_AES256_CBC: 32,  # aes256-CBC, the only one SDP senders use (DIGEST 4.6)
}

#: OAEP hash functions accepted on receipt (RFC 4055 section 2.1).
_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}

#: Elements other than the content (RecipientInfos, AlgorithmIdentifiers) are small; a header
#: claiming more is garbage, and refusing it keeps a hostile length from allocating memory.
_MAX_SMALL_ELEMENT = 1 << 20
#: Nesting limit for indefinite-length and constructed-string recursion on hostile input.
_MAX_DEPTH = 32
#: What asn1crypto raises on malformed input; always turned into CmsError naming the field.
_ASN1_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError
)


class KeyTransport(enum.Enum):
    """How the content-encryption key is wrapped for the recipient (DIGEST 4.6, 15 item 12)."""

    #: RSAES-OAEP with SHA-256 and MGF1-SHA-256, as the Difi Java reference client sends.
    OAEP_SHA256 = "rsaes-oaep-sha256"
    #: RSAES-OAEP with the SHA-1 defaults the spec text names; parameters are `30 00`.
    OAEP_SHA1 = "rsaes-oaep-sha1"


@dataclass(frozen=True)
class EncryptResult:
    """What `encrypt_stream` wrote: the package fingerprint and the byte count."""

    #: SHA-256 of every CMS byte written: the dokumentpakkefingeravtrykk (DIGEST 4.7).
    fingerprint: bytes
    bytes_written: int

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @property
    def fingerprint_base64(self) -> str:
        """The form that goes into `ds:DigestValue` of the business message (DIGEST 4.7)."""
        return base64.b64encode(self.fingerprint).decode("ascii")


# --- encryption -------------------------------------------------------------------------------


def _der_header(tag: int, length: int) -> bytes:
    """Identifier and definite length octets of a DER element (X.690 8.1.3, shortest form)."""
    if length < 0x80:
        return bytes((tag, length))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(body))) + body


def _oaep(key_transport: KeyTransport) -> padding.OAEP:
    digest: hashes.HashAlgorithm = (
        hashes.SHA256()
        if key_transport is KeyTransport.OAEP_SHA256
        # SHA-1 inside OAEP is not a collision use; it is the spec's own choice (DIGEST 4.6).
        else hashes.SHA1()  # noqa: S303
    )
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


@functools.cache
def _key_encryption_algorithm_der(key_transport: KeyTransport) -> bytes:
    if key_transport is KeyTransport.OAEP_SHA1:
        # All RSAES-OAEP-params fields equal their DEFAULTs, so DER omits them all and the
        # parameters are an empty SEQUENCE `30 00` (DIGEST 4.6). Absent parameters would be
        # wrong: OpenSSL refuses them ("invalid oaep parameters").
        params = algos.RSAESOAEPParams(
            {
                "hash_algorithm": {"algorithm": "sha1"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha1"}},
            }
        )
    else:
        # RFC 4055's rSAES-OAEP-SHA256-Params spell sha256 with NULL parameters; that is also
        # what the Java client (BouncyCastle) sends and what the nyinf examples carry
        # (DIGEST 16). OpenSSL writes them absent; both forms must be accepted (RFC 4055 2.1).
        sha256 = {"algorithm": "sha256", "parameters": core.Null()}
        params = algos.RSAESOAEPParams(
            {
                "hash_algorithm": sha256,
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": sha256},
            }
        )
    der: bytes = cms.KeyEncryptionAlgorithm(
        {"algorithm": "rsaes_oaep", "parameters": params}).dump()
    return der


def _recipient_public_key(recipient: x509.Certificate) -> rsa.RSAPublicKey:
    public = recipient.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedAlgorithmError(
            f"the recipient key is {type(public).__name__}; CMS key transport needs RSA "
            "(DIGEST 4.6)",
            subject=recipient.subject.rfc4514_string(),
        )
    return public


def _padded_length(length: int) -> int:
    # PKCS#7 padding always adds 1..16 bytes, a whole block when already aligned (RFC 5652 6.3).
    return (length // 16 + 1) * 16


def _der(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _der_header(tag, len(body)) + body


@functools.lru_cache(maxsize=64)
def _issuer_and_serial_der(recipient: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber of a recipient: constant per certificate, so built once.

    Building it (and the rest of the header) with asn1crypto on every package cost ~0.25 ms
    twice per package (bench/e2e.py); the header is a fixed shape, so it is written by hand
    and tests compare it with asn1crypto's encoding.
    """
    cert = ax509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    der: bytes = cms.IssuerAndSerialNumber(
        {"issuer": cert.issuer, "serial_number": cert.serial_number}).dump()
    return der


@functools.cache
def _oid_der(dotted: str) -> bytes:
    der: bytes = core.ObjectIdentifier(dotted).dump()
    return der


def _header(
    recipient: x509.Certificate,
    encrypted_key: bytes,
    iv: bytes,
    key_transport: KeyTransport,
    ciphertext_length: int,
) -> bytes:
    """Every DER byte before the ciphertext, with lengths computed for `ciphertext_length`."""
    # Exactly one KeyTransRecipientInfo v0 identified by issuerAndSerialNumber (DIGEST 4.6):
    # SEQUENCE { INTEGER 0, IssuerAndSerialNumber, KeyEncryptionAlgorithm, OCTET STRING }.
    ktri = _der(0x30, b"\x02\x01\x00", _issuer_and_serial_der(recipient),
                _key_encryption_algorithm_der(key_transport), _der(0x04, encrypted_key))
    recipient_infos = _der(0x31, ktri)  # SET OF RecipientInfo, one member
    version = b"\x02\x01\x00"  # EnvelopedData version 0 (RFC 5652 6.1)
    content_algorithm = _der(0x30, _oid_der(_OID_AES256_CBC), _der(0x04, iv))
    # encryptedContent is [0] IMPLICIT OCTET STRING: primitive context tag 0x80, one piece.
    eci_body = (
        _oid_der(_OID_DATA)
        + content_algorithm
        + _der_header(0x80, ciphertext_length)
    )
    eci_length = len(eci_body) + ciphertext_length
    eci_header = _der_header(0x30, eci_length)
    env_length = len(version) + len(recipient_infos) + len(eci_header) + eci_length
    env_header = _der_header(0x30, env_length)
    explicit_length = len(env_header) + env_length
    explicit_header = _der_header(0xA0, explicit_length)  # content [0] EXPLICIT
    oid = _oid_der(_OID_ENVELOPED_DATA)
    return b"".join(
        (
            _der_header(0x30, len(oid) + len(explicit_header) + explicit_length),
            oid,
            explicit_header,
            env_header,
            version,
            recipient_infos,
            eci_header,
            eci_body,
        )
    )


def encrypted_length(
    length: int,
    recipient: x509.Certificate,
    *,
    key_transport: KeyTransport = KeyTransport.OAEP_SHA256,
) -> int:
    """The exact size of the CMS that `encrypt_stream` will write for `length` plain bytes.

    Lets a caller set Content-Length or check the size limit (DIGEST 15 item 13) before
    encrypting anything.
    """
    size = _recipient_public_key(recipient).key_size
    dummy_key = bytes((size + 7) // 8)
    ct = _padded_length(length)
    return len(_header(recipient, dummy_key, bytes(16), key_transport, ct)) + ct


def _read_full(source: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `source` (short reads are legal for raw streams); return bytes read."""
    readinto = getattr(source, "readinto", None)
    filled = 0
    total = len(view)
    while filled < total:
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            piece = source.read(total - filled)
            n = len(piece)
            view[filled : filled + n] = piece
        if not n:
            break
        filled += n
    return filled


def _write_all(out: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = out.write(view)
        # Buffered files and BytesIO take everything; only raw streams write short. (None, a
        # non-blocking raw stream's "would block", is not supported and treated as done.)
        if n is None or n >= len(view):
            return
        view = view[n:]


def encrypt_stream(
    source: BinaryIO,
    length: int,
    recipient: x509.Certificate,
    out: BinaryIO,
    *,
    key_transport: KeyTransport = KeyTransport.OAEP_SHA256,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EncryptResult:
    """Encrypt exactly `length` bytes of `source` to `recipient`, writing DER CMS to `out`.

    A fresh random AES-256 key and IV are drawn for every call (DIGEST 4.6, 10.4). The
    fingerprint covers every byte written (DIGEST 4.7). `source` must deliver exactly `length`
    bytes; fewer or more is an `InputError`, because the DER lengths are already written.
    """
    if length < 0:
        raise InputError(f"must be >= 0, got {length}", subject="length")
    if chunk_size < 16:
        raise InputError(f"must be >= 16, got {chunk_size}", subject="chunk_size")
    public = _recipient_public_key(recipient)
    # A random, never reused content key (DIGEST 4.6, 10.4); os.urandom is the OS CSPRNG.
    key = os.urandom(32)
    iv = os.urandom(16)
    encrypted_key = public.encrypt(key, _oaep(key_transport))
    ciphertext_length = _padded_length(length)
    head = _header(recipient, encrypted_key, iv, key_transport, ciphertext_length)

    digest = hashlib.sha256(head)
    _write_all(out, head)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    inbuf = bytearray(min(chunk_size, length) or 16)
    # update_into wants room for the input plus a buffered partial block (15 bytes), also
    # for the final padding call of up to 16 bytes.
    outbuf = bytearray(max(len(inbuf), 16) + 16)
    inview, outview = memoryview(inbuf), memoryview(outbuf)
    remaining = length
    while remaining:
        want = min(len(inbuf), remaining)
        got = _read_full(source, inview[:want])
        if got < want:
            raise InputError(
                f"the source ended after {length - remaining + got} of {length} bytes",
                subject="length",
            )
        n = encryptor.update_into(inview[:want], outbuf)
        digest.update(outview[:n])
        _write_all(out, outview[:n])
        remaining -= want
    if source.read(1):
        raise InputError(f"the source holds more than {length} bytes", subject="length")
    pad = 16 - length % 16
    n = encryptor.update_into(bytes((pad,)) * pad, outbuf)
    tail = outview[:n].tobytes() + encryptor.finalize()
    digest.update(tail)
    _write_all(out, tail)
    return EncryptResult(digest.digest(), len(head) + ciphertext_length)


def encrypt(
    data: bytes,
    recipient: x509.Certificate,
    *,
    key_transport: KeyTransport = KeyTransport.OAEP_SHA256,
) -> bytes:
    """Encrypt `data` to `recipient` and return the DER CMS; hash it for the fingerprint."""
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), len(data), recipient, out, key_transport=key_transport)
    return out.getvalue()


# --- decryption: a streaming BER reader -------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    identifier: bytes  # the identifier octets as they appear, e.g. b"\x30"
    constructed: bool
    length: int | None  # None: indefinite
    raw: bytes

    @property
    def is_eoc(self) -> bool:
        return self.identifier == b"\x00" and self.length == 0


class _Reader:
    """Reads a byte stream exactly, keeping the position for messages and length checks."""

    def __init__(self, source: BinaryIO, prefix: bytes = b"") -> None:
        self._source = source
        self._pending = prefix
        self.pos = 0

    def read_upto(self, n: int) -> bytes:
        if self._pending:
            piece, self._pending = self._pending[:n], self._pending[n:]
        else:
            piece = self._source.read(n)
        self.pos += len(piece)
        return piece

    def read(self, n: int, what: str) -> bytes:
        data = self.read_upto(n)
        if len(data) == n:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            piece = self.read_upto(n - got)
            if not piece:
                raise CmsError(
                    f"truncated: input ends at byte {self.pos}, {n - got} bytes short",
                    subject=what,
                )
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending
        self.pos -= len(data)


def _read_header(r: _Reader, what: str) -> _Header:
    """One BER identifier + length (X.690 8.1.2, 8.1.3), including high tag numbers."""
    first = r.read(1, what)
    identifier = first
    if first[0] & 0x1F == 0x1F:
        while True:
            b = r.read(1, what)
            identifier += b
            if not b[0] & 0x80:
                break
            if len(identifier) > 6:
                raise CmsError("tag number too large", subject=what)
    constructed = bool(first[0] & 0x20)
    lb = r.read(1, what)
    raw_len = lb
    length: int | None
    if lb[0] < 0x80:
        length = lb[0]
    elif lb[0] == 0x80:
        if not constructed:
            raise CmsError("indefinite length on a primitive element", subject=what)
        length = None
    elif lb[0] == 0xFF or lb[0] & 0x7F > 8:
        raise CmsError(f"invalid length octet 0x{lb[0]:02x}", subject=what)
    else:
        body = r.read(lb[0] & 0x7F, what)
        raw_len += body
        length = int.from_bytes(body, "big")
    return _Header(identifier, constructed, length, identifier + raw_len)


def _read_element(r: _Reader, what: str, header: _Header | None = None, depth: int = 0) -> bytes:
    """A whole small element (header included) as bytes, BER indefinite lengths resolved."""
    if depth > _MAX_DEPTH:
        raise CmsError("nesting too deep", subject=what)
    h = header or _read_header(r, what)
    if h.length is not None:
        if h.length > _MAX_SMALL_ELEMENT:
            raise CmsError(f"element claims {h.length} bytes; too large", subject=what)
        return h.raw + r.read(h.length, what)
    parts = [h.raw]
    size = 0
    while True:
        child = _read_header(r, what)
        if child.is_eoc:
            parts.append(child.raw)
            return b"".join(parts)
        part = _read_element(r, what, child, depth + 1)
        size += len(part)
        if size > _MAX_SMALL_ELEMENT:
            raise CmsError("element too large", subject=what)
        parts.append(part)


def _expect(h: _Header, identifier: bytes, what: str) -> None:
    if h.identifier != identifier:
        raise CmsError(
            f"expected tag 0x{identifier.hex()}, found 0x{h.identifier.hex()}", subject=what
        )


def _read_oid(r: _Reader, what: str) -> str:
    raw = _read_element(r, what)
    try:
        oid = core.ObjectIdentifier.load(raw, strict=True)
        dotted: str = oid.dotted
    except _ASN1_ERRORS as exc:
        raise CmsError(f"not an OBJECT IDENTIFIER: {exc}", subject=what) from exc
    return dotted


@dataclass
class _Container:
    name: str
    end: int | None  # absolute end position, None for indefinite length


def _open(r: _Reader, identifier: bytes, name: str) -> _Container:
    h = _read_header(r, name)
    _expect(h, identifier, name)
    return _Container(name, None if h.length is None else r.pos + h.length)


def _close(r: _Reader, c: _Container) -> None:
    """Skip what remains of a container (e.g. unprotectedAttrs) and check it ends properly."""
    while True:
        if c.end is not None and r.pos >= c.end:
            if r.pos != c.end:
                raise CmsError(f"contents overrun the length by {r.pos - c.end} bytes",
                               subject=c.name)
            return
        h = _read_header(r, c.name)
        if h.is_eoc:
            if c.end is None:
                return
            raise CmsError("end-of-contents inside a definite-length element", subject=c.name)
        _read_element(r, c.name, h)


def _content_chunks(r: _Reader, h: _Header, depth: int = 0) -> Iterator[bytes]:
    """The ciphertext pieces of encryptedContent: primitive, or constructed of OCTET STRINGs.

    Real packages use both: DER senders write one primitive string, the Java client and
    `openssl cms -stream` write indefinite-length constructed strings of 1000 or 4096 bytes
    (DIGEST 16, nyinf examples).
    """
    what = "EncryptedContentInfo.encryptedContent"
    if depth > _MAX_DEPTH:
        raise CmsError("constructed OCTET STRING nested too deep", subject=what)
    if not h.constructed:
        assert h.length is not None  # _read_header refuses indefinite primitives
        remaining = h.length
        while remaining:
            piece = r.read(min(remaining, DEFAULT_CHUNK_SIZE), what)
            remaining -= len(piece)
            yield piece
        return
    end = None if h.length is None else r.pos + h.length
    while True:
        if end is not None and r.pos >= end:
            if r.pos != end:
                raise CmsError("segment overruns the constructed string", subject=what)
            return
        child = _read_header(r, what)
        if child.is_eoc:
            if end is None:
                return
            raise CmsError("end-of-contents inside a definite-length string", subject=what)
        if child.identifier not in (b"\x04", b"\x24"):
            raise CmsError(
                f"segment of a constructed OCTET STRING has tag 0x{child.identifier.hex()}",
                subject=what,
            )
        yield from _content_chunks(r, child, depth + 1)


# --- decryption: interpreting the pieces ------------------------------------------------------


def _asn1_error(exc: Exception, what: str) -> CmsError:
    return CmsError(f"malformed ASN.1: {exc}", subject=what)


def _recipient_matches(rid: cms.RecipientIdentifier, cert: ax509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        if ias["serial_number"].native != cert.serial_number:
            return False
        issuer = ias["issuer"]
        # Equal DER is equal names; only differently encoded ones need asn1crypto's RFC 5280
        # comparison, which was a quarter of the simulator's work per consignment.
        return issuer.dump() == cert.issuer.dump() or bool(issuer == cert.issuer)
    if rid.name == "subject_key_identifier":
        return bool(
            cert.key_identifier is not None and rid.chosen.native == cert.key_identifier
        )
    return False


def _key_transport_padding(alg: cms.KeyEncryptionAlgorithm) -> padding.AsymmetricPadding:
    """The RSA padding a KeyTransRecipientInfo names, from its OID and OAEP parameters."""
    return _key_transport_padding_der(alg.dump())


@functools.lru_cache(maxsize=16)
def _key_transport_padding_der(der: bytes) -> padding.AsymmetricPadding:
    # Every package from one sender names the same algorithm: read its DER once.
    alg = cms.KeyEncryptionAlgorithm.load(der)
    what = "KeyTransRecipientInfo.keyEncryptionAlgorithm"
    oid = alg["algorithm"].dotted
    if oid == _OID_RSA_ENCRYPTION:
        # Not what the spec says, but what a .NET client version sends (DIGEST 4.6).
        return padding.PKCS1v15()
    if oid != _OID_RSAES_OAEP:
        raise UnsupportedAlgorithmError(
            f"key transport {oid} is neither RSAES-OAEP nor rsaEncryption", subject=what
        )
    params = alg["parameters"]
    if params.native is None:  # tolerated: treat absent like all-defaults
        params = algos.RSAESOAEPParams({})
    hash_oid = params["hash_algorithm"]["algorithm"].dotted
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != _OID_MGF1:
        raise UnsupportedAlgorithmError(
            f"OAEP mask generation {mgf['algorithm'].dotted} is not MGF1", subject=what
        )
    mgf_hash_oid = mgf["parameters"]["algorithm"].dotted
    psource = params["p_source_algorithm"]
    if psource["algorithm"].dotted != _OID_P_SPECIFIED:
        raise UnsupportedAlgorithmError(
            f"OAEP pSourceFunc {psource['algorithm'].dotted} is not pSpecified", subject=what
        )
    for name, h in (("hashFunc", hash_oid), ("MGF1 hash", mgf_hash_oid)):
        if h not in _OAEP_HASHES:
            raise UnsupportedAlgorithmError(f"OAEP {name} {h} is not a SHA function",
                                            subject=what)
    label = psource["parameters"].native or None
    return padding.OAEP(
        mgf=padding.MGF1(_OAEP_HASHES[mgf_hash_oid]()),
        algorithm=_OAEP_HASHES[hash_oid](),
        label=label,
    )


def _content_algorithm(raw: bytes) -> tuple[int, bytes]:
    """(AES key length, IV) from contentEncryptionAlgorithm; only AES-CBC is accepted."""
    what = "EncryptedContentInfo.contentEncryptionAlgorithm"
    try:
        alg = algos.EncryptionAlgorithm.load(raw, strict=True)
        oid = alg["algorithm"].dotted
        if oid not in _CONTENT_CIPHERS:
            raise UnsupportedAlgorithmError(
                f"content encryption {oid} is not AES-CBC (SDP uses aes256-CBC, DIGEST 4.6)",
                subject=what,
            )
        iv = alg["parameters"].native  # asn1crypto reads AES-CBC parameters as OCTET STRING
    except _ASN1_ERRORS as exc:
        raise _asn1_error(exc, what) from exc
    if not isinstance(iv, bytes) or len(iv) != 16:
        raise CmsError("the AES-CBC IV must be a 16-byte OCTET STRING", subject=what)
    return _CONTENT_CIPHERS[oid], iv


def _content_key(
    recipient_infos_raw: bytes,
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate | None,
    key_length: int,
) -> bytes:
    """Find our KeyTransRecipientInfo and unwrap the content-encryption key with `key`."""
    what = "EnvelopedData.recipientInfos"
    try:
        infos = cms.RecipientInfos.load(recipient_infos_raw, strict=True)
        ktris = [ri.chosen for ri in infos if ri.name == "ktri"]
        candidates = ktris
        if certificate is not None:
            acert = ax509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
            candidates = [k for k in ktris if _recipient_matches(k["rid"], acert)]
        # Parse everything we need now so that garbage fails here, as CmsError.
        parsed = [(k["key_encryption_algorithm"], k["encrypted_key"].native) for k in candidates]
    except _ASN1_ERRORS as exc:
        raise _asn1_error(exc, what) from exc
    if not ktris:
        raise UnsupportedAlgorithmError(
            "no KeyTransRecipientInfo (only RSA key transport is supported, DIGEST 4.6)",
            subject=what,
        )
    if not parsed:
        raise NotForRecipientError(
            f"encrypted to someone else: no RecipientInfo names issuer "
            f"{certificate.issuer.rfc4514_string() if certificate else '?'} and serial "
            f"{certificate.serial_number if certificate else '?'}",
            subject=what,
        )
    failure: Exception | None = None
    for alg, encrypted_key in parsed:
        try:
            pad = _key_transport_padding(alg)
        except _ASN1_ERRORS as exc:
            raise _asn1_error(exc, "KeyTransRecipientInfo.keyEncryptionAlgorithm") from exc
        try:
            content_key = key.decrypt(encrypted_key, pad)
        except ValueError as exc:
            failure = exc
            continue
        # PKCS#1 v1.5 decryption with implicit rejection returns random bytes instead of
        # failing, so a wrong-length key is the sign of a wrong private key.
        if len(content_key) == key_length:
            return content_key
        failure = ValueError(f"unwrapped key has {len(content_key)} bytes, not {key_length}")
    raise DecryptionError(
        f"cannot unwrap the content-encryption key; wrong private key? ({failure})",
        subject="KeyTransRecipientInfo.encryptedKey",
    )


_PEM_CMS = re.compile(rb"-----BEGIN (CMS|PKCS7)-----(.*?)-----END \1-----", re.DOTALL)


def _open_source(source: bytes | BinaryIO) -> _Reader:
    """A reader over the DER/BER bytes, unwrapping PEM armour (`openssl cms -outform PEM`)."""
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    prefix = stream.read(11)
    if prefix.lstrip()[:10] != b"-----BEGIN":
        return _Reader(stream, prefix)
    text = prefix + stream.read()
    m = _PEM_CMS.search(text)
    if m is None:
        raise CmsError("PEM input without a CMS or PKCS7 block", subject="ContentInfo")
    try:
        der = base64.b64decode(re.sub(rb"\s+", b"", m.group(2)), validate=True)
    except binascii.Error as exc:
        raise CmsError(f"bad base64 in PEM: {exc}", subject="ContentInfo") from exc
    return _Reader(io.BytesIO(der))


@overload
def decrypt(
    source: bytes | BinaryIO,
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate | None = None,
    out: None = None,
) -> bytes: ...


@overload
def decrypt(
    source: bytes | BinaryIO,
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate | None,
    out: BinaryIO,
) -> int: ...


def decrypt(
    source: bytes | BinaryIO,
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate | None = None,
    out: BinaryIO | None = None,
) -> bytes | int:
    """Decrypt a CMS EnvelopedData (DER, BER or PEM) with the recipient's private key.

    With `certificate`, only a RecipientInfo naming its issuer and serial is used, otherwise
    `NotForRecipientError`; without it every KeyTransRecipientInfo is tried. Returns the
    plaintext, or with `out` streams it there and returns the number of bytes written. On any
    error, what was already written to `out` must be discarded: the padding (the integrity
    signal of CBC) is only checked at the end.
    """
    if certificate is not None:
        public = certificate.public_key()
        if not (
            isinstance(public, rsa.RSAPublicKey)
            and public.public_numbers() == key.public_key().public_numbers()
        ):
            raise KeyMaterialError(
                "the private key does not belong to the given certificate",
                subject=certificate.subject.rfc4514_string(),
            )
    r = _open_source(source)

    # ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }  (DIGEST 4.6)
    content_info = _open(r, b"\x30", "ContentInfo")
    content_type = _read_oid(r, "ContentInfo.contentType")
    if content_type != _OID_ENVELOPED_DATA:
        raise CmsError(
            f"content type {content_type} is not id-envelopedData ({_OID_ENVELOPED_DATA})",
            subject="ContentInfo.contentType",
        )
    explicit = _open(r, b"\xa0", "ContentInfo.content")
    enveloped = _open(r, b"\x30", "EnvelopedData")
    version = _read_header(r, "EnvelopedData.version")
    _expect(version, b"\x02", "EnvelopedData.version")
    _read_element(r, "EnvelopedData.version", version)
    h = _read_header(r, "EnvelopedData.recipientInfos")
    if h.identifier == b"\xa0":  # originatorInfo: certificates we do not need
        _read_element(r, "EnvelopedData.originatorInfo", h)
        h = _read_header(r, "EnvelopedData.recipientInfos")
    _expect(h, b"\x31", "EnvelopedData.recipientInfos")
    recipient_infos = _read_element(r, "EnvelopedData.recipientInfos", h)

    eci = _open(r, b"\x30", "EncryptedContentInfo")
    inner_type = _read_oid(r, "EncryptedContentInfo.contentType")
    if inner_type != _OID_DATA:
        raise CmsError(
            f"content type {inner_type} is not id-data ({_OID_DATA})",
            subject="EncryptedContentInfo.contentType",
        )
    alg = _read_element(r, "EncryptedContentInfo.contentEncryptionAlgorithm")
    key_length, iv = _content_algorithm(alg)
    content_key = _content_key(recipient_infos, key, certificate, key_length)

    h = _read_header(r, "EncryptedContentInfo.encryptedContent")
    if h.identifier not in (b"\x80", b"\xa0"):
        raise CmsError(
            "absent (detached content is not supported)",
            subject="EncryptedContentInfo.encryptedContent",
        )
    decryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).decryptor()
    unpadder = sympadding.PKCS7(128).unpadder()
    sink = out if out is not None else io.BytesIO()
    written = 0
    for piece in _content_chunks(r, h):
        plain = unpadder.update(decryptor.update(piece))
        written += len(plain)
        _write_all(sink, plain)
    for container in (eci, enveloped, explicit, content_info):
        _close(r, container)
    if r.read_upto(1):
        raise CmsError(f"trailing data after byte {r.pos - 1}", subject="ContentInfo")
    try:
        last = unpadder.update(decryptor.finalize()) + unpadder.finalize()
    except ValueError as exc:
        raise DecryptionError(
            f"bad ciphertext or padding; wrong key or corrupt package ({exc})",
            subject="EncryptedContentInfo.encryptedContent",
        ) from exc
    written += len(last)
    _write_all(sink, last)
    if out is None:
        assert isinstance(sink, io.BytesIO)
        return sink.getvalue()
    return written
