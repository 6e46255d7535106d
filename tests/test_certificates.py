"""Certificate path validation and the organisation number in enterprise certificates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sdp import devpki
from sdp.certificates import orgnr_of, validate_path
from sdp.errors import CertificateChainError, TrustError
from tests.conftest import SENDER_ORGNR

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def small_key() -> rsa.RSAPrivateKey:
    # 1024 bits keeps key generation fast; path validation does not care about the size.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def _name(cn: str, *extra: x509.NameAttribute) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), *extra])


def _issue(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name,
           issuer_key: rsa.RSAPrivateKey, *, ca: bool | None = False,
           path_length: int | None = None, key_cert_sign: bool | None = None,
           start: dt.datetime | None = None, days: int = 30,
           hash_alg: hashes.HashAlgorithm | None = None) -> x509.Certificate:
    start = start or NOW - dt.timedelta(days=1)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days)))
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if key_cert_sign is not None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(issuer_key, hash_alg or hashes.SHA256())


def test_valid_path(sender: devpki.Identity, intermediate: devpki.Identity,
                    ca: devpki.Identity) -> None:
    path = validate_path(sender.certificate, sender.chain, [ca.certificate], NOW)
    assert path == (sender.certificate, intermediate.certificate, ca.certificate)


def test_intermediate_as_anchor_shortens_the_path(sender: devpki.Identity,
                                                  intermediate: devpki.Identity) -> None:
    path = validate_path(sender.certificate, [], [intermediate.certificate], NOW)
    assert path == (sender.certificate, intermediate.certificate)


def test_extra_intermediates_and_root_in_pool_are_fine(sender: devpki.Identity,
                                                       ca: devpki.Identity) -> None:
    pool = [devpki.make_ca("Unrelated CA").certificate, *sender.chain, ca.certificate]
    assert len(validate_path(sender.certificate, pool, [ca.certificate], NOW)) == 3


def test_expired_and_not_yet_valid(sender: devpki.Identity, ca: devpki.Identity) -> None:
    after = sender.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateChainError, match="expired at") as err:
        validate_path(sender.certificate, sender.chain, [ca.certificate], after)
    assert err.value.subject is not None and SENDER_ORGNR in err.value.subject
    before = sender.certificate.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(CertificateChainError, match="not yet valid"):
        validate_path(sender.certificate, sender.chain, [ca.certificate], before)


def test_expired_intermediate() -> None:
    ca = devpki.make_ca("Long-lived Root CA", not_before=NOW - dt.timedelta(days=100))
    old = devpki.make_ca("Old Issuing CA", parent=ca, not_before=NOW - dt.timedelta(days=20),
                         days=10)
    leaf = devpki.make_enterprise_certificate(old, SENDER_ORGNR, "Avsender",
                                              not_before=NOW - dt.timedelta(days=15), days=365)
    with pytest.raises(CertificateChainError, match="expired") as err:
        validate_path(leaf.certificate, leaf.chain, [ca.certificate], NOW)
    assert err.value.subject == old.certificate.subject.rfc4514_string()
    # At a time when both were valid the same path checks out.
    assert len(validate_path(leaf.certificate, leaf.chain, [ca.certificate],
                             NOW - dt.timedelta(days=12))) == 3


def test_untrusted_ca_and_missing_intermediate(sender: devpki.Identity,
                                               ca: devpki.Identity) -> None:
    stranger = devpki.make_ca("Stranger Root CA")
    with pytest.raises(CertificateChainError, match="unknown issuer"):
        validate_path(sender.certificate, sender.chain, [stranger.certificate], NOW)
    with pytest.raises(CertificateChainError, match="not a trust anchor"):
        validate_path(sender.certificate, [*sender.chain, ca.certificate],
                      [stranger.certificate], NOW)
    with pytest.raises(CertificateChainError, match="unknown issuer CN=SDP Test Issuing CA"):
        validate_path(sender.certificate, [], [ca.certificate], NOW)
    with pytest.raises(CertificateChainError, match="no trust anchors"):
        validate_path(sender.certificate, sender.chain, [], NOW)


def test_bad_signature(small_key: rsa.RSAPrivateKey, intermediate: devpki.Identity,
                       ca: devpki.Identity) -> None:
    """Issuer name of the real intermediate, but signed with another key."""
    forged = _issue(_name("Forged"), small_key, intermediate.certificate.subject, small_key)
    with pytest.raises(CertificateChainError, match="bad signature") as err:
        validate_path(forged, [intermediate.certificate], [ca.certificate], NOW)
    assert err.value.subject == "CN=Forged"
    assert isinstance(err.value, TrustError)


def test_issuer_must_be_a_ca(small_key: rsa.RSAPrivateKey) -> None:
    root_name = _name("Root")
    root = _issue(root_name, small_key, root_name, small_key, ca=True)
    not_ca = _issue(_name("Not a CA"), small_key, root_name, small_key, ca=False)
    no_bc = _issue(_name("No BC"), small_key, root_name, small_key, ca=None)
    no_sign = _issue(_name("No certSign"), small_key, root_name, small_key, ca=True,
                     key_cert_sign=False)
    for issuer, reason in [(not_ca, "not a CA"), (no_bc, "no BasicConstraints"),
                           (no_sign, "certificate signing")]:
        leaf = _issue(_name("Leaf"), small_key, issuer.subject, small_key)
        with pytest.raises(CertificateChainError, match=reason) as err:
            validate_path(leaf, [issuer], [root], NOW)
        assert err.value.subject == issuer.subject.rfc4514_string()


def test_path_length_constraint(small_key: rsa.RSAPrivateKey) -> None:
    root_name = _name("Root")
    root = _issue(root_name, small_key, root_name, small_key, ca=True, path_length=0)
    sub = _issue(_name("Sub"), small_key, root_name, small_key, ca=True)
    leaf = _issue(_name("Leaf"), small_key, sub.subject, small_key)
    with pytest.raises(CertificateChainError, match="path length"):
        validate_path(leaf, [sub], [root], NOW)
    direct = _issue(_name("Leaf"), small_key, root_name, small_key)
    assert validate_path(direct, [], [root], NOW) == (direct, root)


def test_hash_outside_the_list_refused(small_key: rsa.RSAPrivateKey) -> None:
    # SHA-1 would be the realistic case, but this OpenSSL build no longer signs with it.
    root_name = _name("Root")
    root = _issue(root_name, small_key, root_name, small_key, ca=True)
    leaf = _issue(_name("Leaf"), small_key, root_name, small_key, hash_alg=hashes.SHA224())
    with pytest.raises(CertificateChainError, match="sha224 is not accepted"):
        validate_path(leaf, [], [root], NOW)


def test_naive_time_is_refused(sender: devpki.Identity, ca: devpki.Identity) -> None:
    with pytest.raises(ValueError, match="timezone"):
        validate_path(sender.certificate, sender.chain, [ca.certificate], dt.datetime(2024, 1, 1))


def test_shipped_buypass_test_chain(spec: Path) -> None:
    """DIGEST 10.2: the Test4 intermediate chains to the Test4 root until 2032."""
    folder = spec / "sikkerhet" / "sertifikater" / "test"
    root = x509.load_der_x509_certificate((folder / "Buypass_Class_3_Test4_Root_CA.cer")
                                          .read_bytes())
    ca3 = x509.load_der_x509_certificate((folder / "Buypass_Class_3_Test4_CA_3.cer").read_bytes())
    assert validate_path(ca3, [], [root], dt.datetime(2020, 1, 1, tzinfo=dt.UTC)) == (ca3, root)
    with pytest.raises(CertificateChainError, match="expired"):
        validate_path(ca3, [], [root], dt.datetime(2033, 1, 1, tzinfo=dt.UTC))


# --- orgnr_of ---------------------------------------------------------------------------------


def test_orgnr_from_serial_number(sender: devpki.Identity) -> None:
    assert orgnr_of(sender.certificate) == SENDER_ORGNR


def test_orgnr_from_organization_identifier(small_key: rsa.RSAPrivateKey) -> None:
    subject = _name("Ny Profil AS",
                    x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "NTRNO-996460320"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, "UNRELATED-1"))
    cert = _issue(subject, small_key, subject, small_key)
    assert orgnr_of(cert) == "996460320"


def test_orgnr_absent(small_key: rsa.RSAPrivateKey, ca: devpki.Identity) -> None:
    assert orgnr_of(ca.certificate) is None
    person = _name("Kari Nordmann", x509.NameAttribute(NameOID.SERIAL_NUMBER, "9578-4050-1"))
    assert orgnr_of(_issue(person, small_key, person, small_key)) is None
    foreign = _name("Svensk AB",
                    x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "VATSE-5560000000"))
    assert orgnr_of(_issue(foreign, small_key, foreign, small_key)) is None


def test_remembered_checks_never_vouch_for_another_certificate_or_time(
        small_key: rsa.RSAPrivateKey) -> None:
    # Signature and CA checks are remembered per certificate pair; a look-alike issuer (same
    # name, other key) and a later validation time must still be judged on their own.
    root_name = _name("Cache Root")
    root = _issue(root_name, small_key, root_name, small_key, ca=True, days=3650)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    leaf = _issue(_name("Cache Leaf"), leaf_key, root_name, small_key, days=10)
    assert validate_path(leaf, [], [root], NOW) == (leaf, root)
    assert validate_path(leaf, [], [root], NOW) == (leaf, root)  # from the cache
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    impostor = _issue(root_name, impostor_key, root_name, impostor_key, ca=True, days=3650)
    with pytest.raises(CertificateChainError, match="bad signature"):
        validate_path(leaf, [], [impostor], NOW)
    with pytest.raises(CertificateChainError, match="expired"):
        validate_path(leaf, [], [root], NOW + dt.timedelta(days=30))
    not_ca = _issue(root_name, small_key, root_name, small_key, ca=False, days=3650)
    sibling = _issue(_name("Cache Leaf 2"), leaf_key, root_name, small_key, days=10)
    with pytest.raises(CertificateChainError, match="not a CA"):
        validate_path(sibling, [not_ca], [leaf], NOW)


def test_oversized_certificates_are_never_remembered(small_key: rsa.RSAPrivateKey) -> None:
    # A peer can send a fresh multi-megabyte certificate with every message, before any
    # signature is checked; caching those would pin their memory (found in review).
    from cryptography.x509.oid import ObjectIdentifier

    from sdp import certificates

    root_name = _name("Big Root")
    root = _issue(root_name, small_key, root_name, small_key, ca=True, days=3650)
    padding_ext = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                                             b"\x04\x83\x01\x00\x00" + bytes(0x10000))
    big = (x509.CertificateBuilder().subject_name(_name("Big Leaf")).issuer_name(root_name)
           .public_key(small_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(NOW - dt.timedelta(days=1))
           .not_valid_after(NOW + dt.timedelta(days=10))
           .add_extension(padding_ext, critical=False)
           .sign(small_key, hashes.SHA256()))
    der = big.public_bytes(serialization.Encoding.DER)
    assert len(der) > certificates.MAX_REMEMBERED_BYTES
    # Judged by lookups, not sizes: in a long test run the caches may already be full.
    loads = certificates._load_der_cached.cache_info()
    assert certificates.load_der(der) == big
    after = certificates._load_der_cached.cache_info()
    assert (after.hits, after.misses) == (loads.hits, loads.misses)
    signatures = certificates._signature_problem_cached.cache_info()
    assert validate_path(big, [], [root], NOW) == (big, root)
    after = certificates._signature_problem_cached.cache_info()
    assert (after.hits, after.misses) == (signatures.hits, signatures.misses)
    assert all(big not in key[:1] for key in certificates._paths)
    small = _issue(_name("Small Leaf"), small_key, root_name, small_key, days=10)
    certificates.load_der(small.public_bytes(serialization.Encoding.DER))
    certificates.load_der(small.public_bytes(serialization.Encoding.DER))
    assert certificates._load_der_cached.cache_info().hits == loads.hits + 1
