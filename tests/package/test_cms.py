"""CMS EnvelopedData (DIGEST 4.6) and the package fingerprint (DIGEST 4.7), with real crypto."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from sdp import devpki
from sdp.errors import (
    CmsError,
    CryptoError,
    DecryptionError,
    InputError,
    KeyMaterialError,
    NotForRecipientError,
    UnsupportedAlgorithmError,
)
from sdp.keys import load_signing_identity
from sdp.package import cms
from sdp.package.cms import KeyTransport

# Interoperability with OpenSSL is part of what we promise: the CLI is required, not optional.
OPENSSL = shutil.which("openssl") or "openssl"

SHA256_OID = bytes.fromhex("0609608648016503040201")
AES256_CBC_OID = bytes.fromhex("060960864801650304012a")
RSAES_OAEP_OID = bytes.fromhex("06092a864886f70d010107")
ENVELOPED_DATA_OID = bytes.fromhex("06092a864886f70d010703")


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _walk_tlv(data: bytes, pos: int, end: int) -> None:
    """Assert every element in data[pos:end] has a definite, minimal DER length."""
    while pos < end:
        ident = data[pos]
        pos += 1
        assert ident & 0x1F != 0x1F, "no high tag numbers expected"
        lb = data[pos]
        pos += 1
        assert lb != 0x80, f"indefinite length at byte {pos - 1}"
        if lb & 0x80:
            n = lb & 0x7F
            length = int.from_bytes(data[pos : pos + n], "big")
            assert length >= 0x80 and data[pos] != 0, "non-minimal length encoding"
            pos += n
        else:
            length = lb
        if ident & 0x20:
            _walk_tlv(data, pos, pos + length)
        pos += length
    assert pos == end


# --- encryption -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_transport", list(KeyTransport))
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 63, 64, 65, 1000, 4096])
def test_round_trip_small_chunks(
    mailbox: devpki.Identity, key_transport: KeyTransport, size: int
) -> None:
    data = _data(size)
    out = io.BytesIO()
    # A 64-byte chunk makes sizes straddle chunk and block boundaries.
    result = cms.encrypt_stream(
        io.BytesIO(data), size, mailbox.certificate, out,
        key_transport=key_transport, chunk_size=64,
    )
    blob = out.getvalue()
    assert result.bytes_written == len(blob)
    assert result.bytes_written == cms.encrypted_length(
        size, mailbox.certificate, key_transport=key_transport
    )
    assert result.fingerprint == hashlib.sha256(blob).digest()
    assert cms.decrypt(blob, mailbox.key, mailbox.certificate) == data


@pytest.mark.parametrize("size", [99, 100, 101, 1000, 1001])
def test_round_trip_unaligned_chunk_size(mailbox: devpki.Identity, size: int) -> None:
    data = _data(size, seed=5)
    out = io.BytesIO()
    result = cms.encrypt_stream(io.BytesIO(data), size, mailbox.certificate, out, chunk_size=100)
    assert result.fingerprint == hashlib.sha256(out.getvalue()).digest()
    assert cms.decrypt(out.getvalue(), mailbox.key) == data


def test_round_trip_default_chunks_across_boundary(mailbox: devpki.Identity) -> None:
    data = _data((1 << 20) * 2 + 7)
    blob = cms.encrypt(data, mailbox.certificate)
    assert cms.decrypt(io.BytesIO(blob), mailbox.key) == data


def test_fingerprint_helpers(mailbox: devpki.Identity) -> None:
    out = io.BytesIO()
    r = cms.encrypt_stream(io.BytesIO(b"zip bytes"), 9, mailbox.certificate, out)
    digest = hashlib.sha256(out.getvalue())
    assert r.fingerprint_hex == digest.hexdigest()
    assert r.fingerprint_base64 == base64.b64encode(digest.digest()).decode()


def test_fresh_key_and_iv_every_time(mailbox: devpki.Identity) -> None:
    a = acms.ContentInfo.load(cms.encrypt(b"same", mailbox.certificate))["content"]
    b = acms.ContentInfo.load(cms.encrypt(b"same", mailbox.certificate))["content"]

    def iv(env: acms.EnvelopedData) -> bytes:
        alg = env["encrypted_content_info"]["content_encryption_algorithm"]
        return bytes(alg["parameters"].native)

    def content_key(env: acms.EnvelopedData) -> bytes:
        wrapped = env["recipient_infos"][0].chosen["encrypted_key"].native
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        return mailbox.key.decrypt(wrapped, oaep)

    assert iv(a) != iv(b)
    assert len(content_key(a)) == 32
    assert content_key(a) != content_key(b)
    assert (
        a["encrypted_content_info"]["encrypted_content"].native
        != b["encrypted_content_info"]["encrypted_content"].native
    )


@pytest.mark.parametrize("size", [0, 16, 200, 70000])
@pytest.mark.parametrize("key_transport", list(KeyTransport))
def test_output_is_der_with_the_profile_structure(
    mailbox: devpki.Identity, key_transport: KeyTransport, size: int
) -> None:
    blob = cms.encrypt(_data(size), mailbox.certificate, key_transport=key_transport)
    _walk_tlv(blob, 0, len(blob))
    ci = acms.ContentInfo.load(blob, strict=True)
    assert ci.dump(force=True) == blob
    assert ci["content_type"].native == "enveloped_data"
    env = ci["content"]
    assert env["version"].native == "v0"
    assert env["originator_info"].native is None
    assert env["unprotected_attrs"].native is None
    assert len(env["recipient_infos"]) == 1
    ktri = env["recipient_infos"][0].chosen
    assert isinstance(ktri, acms.KeyTransRecipientInfo)
    assert ktri["version"].native == "v0"
    ias = ktri["rid"].chosen
    assert ias["serial_number"].native == mailbox.certificate.serial_number
    assert ias["issuer"].dump() == mailbox.certificate.issuer.public_bytes()
    kea = ktri["key_encryption_algorithm"]
    assert kea["algorithm"].dotted == "1.2.840.113549.1.1.7"
    if key_transport is KeyTransport.OAEP_SHA1:
        assert kea["parameters"].dump() == b"\x30\x00"  # all defaults (DIGEST 4.6)
    else:
        params = kea["parameters"]
        assert params["hash_algorithm"]["algorithm"].native == "sha256"
        assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == "sha256"
    assert len(ktri["encrypted_key"].native) == 256
    eci = env["encrypted_content_info"]
    assert eci["content_type"].native == "data"
    assert eci["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
    assert len(eci["content_encryption_algorithm"]["parameters"].native) == 16
    assert len(eci["encrypted_content"].native) == (size // 16 + 1) * 16


def test_source_shorter_or_longer_than_length(mailbox: devpki.Identity) -> None:
    with pytest.raises(InputError, match="ended after 5 of 6 bytes"):
        cms.encrypt_stream(io.BytesIO(b"12345"), 6, mailbox.certificate, io.BytesIO())
    with pytest.raises(InputError, match="more than 4 bytes"):
        cms.encrypt_stream(io.BytesIO(b"12345"), 4, mailbox.certificate, io.BytesIO())
    with pytest.raises(InputError, match="length"):
        cms.encrypt_stream(io.BytesIO(b""), -1, mailbox.certificate, io.BytesIO())


def test_non_rsa_recipient_refused(ca: devpki.Identity) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(ca.certificate.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(ca.certificate.not_valid_before_utc)
        .not_valid_after(ca.certificate.not_valid_after_utc)
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(UnsupportedAlgorithmError, match="needs RSA"):
        cms.encrypt(b"x", cert)


class _GeneratedStream(io.RawIOBase):
    """`size` deterministic bytes made on demand, so the test itself holds no big buffer."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        n = min(len(view), self.remaining)
        view[:n] = bytes([self.remaining & 0xFF]) * n  # one small allocation per call
        self.digest.update(view[:n])
        self.remaining -= n
        return n


class _HashingSink(io.RawIOBase):
    """Counts and hashes what is written instead of keeping it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.digest.update(b)
        n = memoryview(b).nbytes
        self.size += n
        return n


def test_streaming_encryption_memory_stays_flat(mailbox: devpki.Identity) -> None:
    size = 64 << 20
    source, sink = _GeneratedStream(size), _HashingSink()
    tracemalloc.start()
    try:
        result = cms.encrypt_stream(source, size, mailbox.certificate, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, f"peak {peak} bytes for a {size}-byte package"
    assert result.bytes_written == sink.size > size
    assert result.fingerprint == sink.digest.digest()


def test_streaming_decryption_memory_stays_flat(
    mailbox: devpki.Identity, tmp_path: Path
) -> None:
    size = 16 << 20
    source = _GeneratedStream(size)
    path = tmp_path / "big.cms"
    with path.open("wb") as fh:
        cms.encrypt_stream(source, size, mailbox.certificate, fh)
    sink = _HashingSink()
    with path.open("rb") as fh:
        tracemalloc.start()
        try:
            written = cms.decrypt(fh, mailbox.key, mailbox.certificate, sink)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 6 << 20, f"peak {peak} bytes decrypting a {size}-byte package"
    assert written == sink.size == size
    assert sink.digest.digest() == source.digest.digest()


# --- interoperability with OpenSSL ------------------------------------------------------------


@pytest.fixture(scope="module")
def pem_files(mailbox: devpki.Identity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("openssl")
    (d / "key.pem").write_bytes(mailbox.key_pem())
    (d / "cert.pem").write_bytes(
        mailbox.certificate.public_bytes(serialization.Encoding.PEM)
    )
    return d


OAEP_SHA256_OPTS = [
    "-keyopt", "rsa_padding_mode:oaep",
    "-keyopt", "rsa_oaep_md:sha256",
    "-keyopt", "rsa_mgf1_md:sha256",
]
OAEP_SHA1_OPTS = ["-keyopt", "rsa_padding_mode:oaep"]


@pytest.mark.parametrize(
    ("key_transport", "opts"),
    [(KeyTransport.OAEP_SHA256, OAEP_SHA256_OPTS), (KeyTransport.OAEP_SHA1, OAEP_SHA1_OPTS)],
)
def test_openssl_decrypts_our_output(
    mailbox: devpki.Identity, pem_files: Path, key_transport: KeyTransport, opts: list[str]
) -> None:
    data = _data(100_003)
    blob = cms.encrypt(data, mailbox.certificate, key_transport=key_transport)
    (pem_files / "ours.der").write_bytes(blob)
    proc = subprocess.run(
        [OPENSSL, "cms", "-decrypt", "-inform", "DER", "-binary",
         "-in", str(pem_files / "ours.der"),
         "-inkey", str(pem_files / "key.pem"), "-recip", str(pem_files / "cert.pem"), *opts],
        capture_output=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == data


@pytest.mark.parametrize("outform", ["DER", "PEM"])
@pytest.mark.parametrize(
    ("opts", "oid"),
    [
        (OAEP_SHA256_OPTS, "rsaes_oaep"),
        (OAEP_SHA1_OPTS, "rsaes_oaep"),
        ([], "rsaes_pkcs1v15"),
    ],
)
def test_we_decrypt_openssl_streamed_ber(
    mailbox: devpki.Identity, pem_files: Path, outform: str, opts: list[str], oid: str
) -> None:
    data = _data(50_000, seed=2)
    (pem_files / "plain.bin").write_bytes(data)
    proc = subprocess.run(
        [OPENSSL, "cms", "-encrypt", "-aes256", "-binary", "-stream", "-outform", outform,
         "-in", str(pem_files / "plain.bin"), "-recip", str(pem_files / "cert.pem"), *opts],
        capture_output=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    blob = proc.stdout
    if outform == "DER":
        assert blob[:2] == b"\x30\x80", "openssl -stream should write indefinite-length BER"
        kea = acms.ContentInfo.load(blob)["content"]["recipient_infos"][0].chosen[
            "key_encryption_algorithm"
        ]
        assert kea["algorithm"].native == oid
    else:
        assert blob.startswith(b"-----BEGIN CMS-----")
    assert cms.decrypt(blob, mailbox.key, mailbox.certificate) == data
    assert cms.decrypt(io.BytesIO(blob), mailbox.key) == data


# --- the official nyinf examples --------------------------------------------------------------


NYINF = "nyinf/eksempler/komplette"
NYINF_PACKAGES = [
    "digital-avsenderidentifikator-dokumentpakke",
    "digital-dokumentpakke",
    "digital-pa-vegne-av-dokumentpakke",
    "utskrift-dokumentpakke",
]


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # C=Unknown in the example cert
@pytest.mark.parametrize("name", NYINF_PACKAGES)
def test_nyinf_examples_decrypt_to_their_zip(spec: Path, name: str) -> None:
    folder = spec / NYINF
    identity = load_signing_identity(folder / "eksempel.jks", "changeit", alias="eksempel")
    blob = (folder / f"{name}.cms").read_bytes()
    assert blob[:2] == b"\x30\x80"  # BER, indefinite lengths (BouncyCastle streaming)
    plain = cms.decrypt(blob, identity.key, identity.certificate)
    assert plain == (folder / f"{name}.zip").read_bytes()
    assert plain[:4] == b"PK\x03\x04"


# --- errors -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cms(mailbox: devpki.Identity) -> bytes:
    return cms.encrypt(_data(31), mailbox.certificate)  # 31 bytes: one pad byte of 0x01


@pytest.mark.parametrize("cut", [0, 1, 5, 30, 200, 500, -40, -16, -1])
def test_truncated_cms(mailbox: devpki.Identity, small_cms: bytes, cut: int) -> None:
    with pytest.raises(CmsError):
        cms.decrypt(small_cms[:cut], mailbox.key, mailbox.certificate)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"hello world", b"\x30\x80", b"\x30\x84\xff\xff\xff\xff",
     b"\x30\xff", b"\x30\x89" + bytes(9), b"\x04\x80\x00\x00", b"-----BEGIN CMS-----\n@@@\n",
     b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
     random.Random(3).randbytes(4000)],
)
def test_garbage_is_a_cms_error(mailbox: devpki.Identity, garbage: bytes) -> None:
    with pytest.raises(CmsError):
        cms.decrypt(garbage, mailbox.key)


def test_trailing_bytes_refused(mailbox: devpki.Identity, small_cms: bytes) -> None:
    with pytest.raises(CmsError, match="trailing data"):
        cms.decrypt(small_cms + b"\x00", mailbox.key)


def test_wrong_content_type(mailbox: devpki.Identity, small_cms: bytes) -> None:
    assert small_cms.count(ENVELOPED_DATA_OID) == 1
    signed = small_cms.replace(ENVELOPED_DATA_OID, ENVELOPED_DATA_OID[:-1] + b"\x02")
    with pytest.raises(CmsError, match=r"ContentInfo.contentType.*1\.2\.840\.113549\.1\.7\.2"):
        cms.decrypt(signed, mailbox.key)


def test_mutations_only_raise_typed_errors(mailbox: devpki.Identity, small_cms: bytes) -> None:
    rng = random.Random(4)
    typed = 0
    for _ in range(300):
        blob = bytearray(small_cms)
        for _ in range(rng.randint(1, 3)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        try:
            cms.decrypt(bytes(blob), mailbox.key)
        except CryptoError:
            typed += 1
    # Most mutations land in the 256-byte wrapped key or the header: each a typed failure.
    assert typed > 200


def test_encrypted_to_someone_else(
    mailbox: devpki.Identity, sender: devpki.Identity, small_cms: bytes
) -> None:
    with pytest.raises(NotForRecipientError, match="encrypted to someone else"):
        cms.decrypt(small_cms, sender.key, sender.certificate)


def test_wrong_private_key(sender: devpki.Identity, small_cms: bytes) -> None:
    with pytest.raises(DecryptionError, match="wrong private key"):
        cms.decrypt(small_cms, sender.key)


def test_key_not_matching_certificate(
    mailbox: devpki.Identity, sender: devpki.Identity, small_cms: bytes
) -> None:
    with pytest.raises(KeyMaterialError, match="does not belong"):
        cms.decrypt(small_cms, sender.key, mailbox.certificate)


def test_corrupt_padding(mailbox: devpki.Identity, small_cms: bytes) -> None:
    blob = bytearray(small_cms)
    blob[-17] ^= 0x01  # flips the last plaintext byte (the 0x01 pad) to 0x00
    with pytest.raises(DecryptionError, match="padding"):
        cms.decrypt(bytes(blob), mailbox.key)


@pytest.mark.parametrize(
    ("needle", "replacement", "match"),
    [
        (AES256_CBC_OID, AES256_CBC_OID[:-1] + b"\x2e", "2.16.840.1.101.3.4.1.46"),  # AES-GCM
        (RSAES_OAEP_OID, RSAES_OAEP_OID[:-1] + b"\x0a", "1.2.840.113549.1.1.10"),  # RSASSA-PSS
        (SHA256_OID, SHA256_OID[:-1] + b"\x08", "hashFunc 2.16.840.1.101.3.4.2.8"),  # SHA3-256
    ],
)
def test_unsupported_algorithms(
    mailbox: devpki.Identity, needle: bytes, replacement: bytes, match: str
) -> None:
    blob = cms.encrypt(b"package", mailbox.certificate)
    assert needle in blob
    patched = blob.replace(needle, replacement, 1)
    with pytest.raises(UnsupportedAlgorithmError, match=match):
        cms.decrypt(patched, mailbox.key, mailbox.certificate)


@pytest.mark.parametrize("key_transport", list(KeyTransport))
def test_hand_built_header_matches_der_for_a_4096_bit_key(
    ca: devpki.Identity, key_transport: KeyTransport
) -> None:
    # The header is written by hand for speed; a 512-byte encrypted key needs long-form
    # lengths throughout, which a 2048-bit recipient never exercises.
    big = devpki.make_enterprise_certificate(ca, "996460320", "Stor nøkkel AS", bits=4096)
    data = _data(1000)
    blob = cms.encrypt(data, big.certificate, key_transport=key_transport)
    ci = acms.ContentInfo.load(blob, strict=True)
    assert ci.dump(force=True) == blob
    ktri = ci["content"]["recipient_infos"][0].chosen
    assert len(ktri["encrypted_key"].native) == 512
    assert cms.encrypted_length(len(data), big.certificate,
                                key_transport=key_transport) == len(blob)
    assert cms.decrypt(blob, big.key) == data
