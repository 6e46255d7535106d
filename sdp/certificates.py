"""Certificate path validation against a trust store, and the orgnr in enterprise certificates.

A small path builder instead of `cryptography.x509.verification`: that verifier applies the
CA/Browser-Forum web-PKI profile (it demands a subjectAltName on the leaf, an authority key
identifier on every CA and so on), which Norwegian enterprise certificates and our
development PKI do not follow, and its errors are opaque strings. SDP needs the plain
RFC 5280 core (DIGEST 10.3): an unbroken chain of signatures from the leaf to a trust anchor,
every certificate valid at the validation time, issuers marked as CAs. Revocation is not
checked (DIGEST 10.3 leaves it implicit).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from sdp.errors import CertificateChainError

#: Longest path tried (leaf, intermediates, anchor); real SDP chains have three certificates.
MAX_PATH_LENGTH = 8
#: Hashes accepted in certificate signatures below the anchor (DIGEST 10.2: all SHA-256).
ACCEPTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def subject_of(cert: x509.Certificate) -> str:
    """The subject as errors name it."""
    return cert.subject.rfc4514_string()


def load_der(der: bytes) -> x509.Certificate:
    """A certificate from DER, fully parsed, remembered by its bytes (see `_load_der`)."""
    return _load_der_cached(der) if len(der) <= MAX_REMEMBERED_BYTES else _load_der(der)


def _load_der(der: bytes) -> x509.Certificate:
    """A certificate from DER, fully parsed.

    Signed messages carry the same few certificates again and again; parsing each anew was a
    measurable part of verifying a receipt. Every field verification uses is touched here, so
    a corrupt certificate fails now (ValueError, TypeError, UnsupportedAlgorithm or
    InvalidVersion, for the caller to type) rather than later inside a check.
    """
    with warnings.catch_warnings():
        # The example certificates (a private 2014 test CA) have negative serial numbers,
        # which cryptography still parses but warns about (DIGEST 15 item 27). Trust is
        # decided by the chain check, not by a warning nobody reads.
        warnings.filterwarnings("ignore", message="Parsed a serial number which wasn't")
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.public_key(), cert.subject, cert.issuer, cert.serial_number)
    return cert


# lru_cache hides argument types from mypy, hence the typed wrappers around these.
_load_der_cached = functools.lru_cache(maxsize=256)(_load_der)

#: Certificates larger than this are never remembered (by any cache here): real ones are 1-2
#: KB, and a peer can send a fresh multi-megabyte one with every message before any
#: signature has been checked (found in review: 40 such pinned 200 MiB).
MAX_REMEMBERED_BYTES = 16 * 1024


def _small(*certs: x509.Certificate) -> bool:
    return all(len(c.tbs_certificate_bytes) <= MAX_REMEMBERED_BYTES for c in certs)


def _check_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise CertificateChainError(
            f"not yet valid at {at.isoformat()} "
            f"(valid from {cert.not_valid_before_utc.isoformat()})",
            subject=subject_of(cert))
    if at > cert.not_valid_after_utc:
        raise CertificateChainError(
            f"expired at {at.isoformat()} (valid until {cert.not_valid_after_utc.isoformat()})",
            subject=subject_of(cert))


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """The issuer's key signed `cert`: RSA PKCS#1 v1.5 (or PSS/ECDSA) with the cert's hash."""
    problem = (_signature_problem_cached(cert, issuer) if _small(cert, issuer)
               else _signature_problem(cert, issuer))
    if problem is not None:
        raise CertificateChainError(problem, subject=subject_of(cert))


def _signature_problem(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `issuer` did not sign `cert`, or None. A pure function of the two certificates
    (compared by their DER), so it is remembered: every transport receipt and business
    receipt carries the same few certificates, and re-checking them was a third of the
    cost of verifying a receipt (bench/e2e.py). Validity in time is checked on every use."""
    hash_alg = cert.signature_hash_algorithm
    if not isinstance(hash_alg, ACCEPTED_HASHES):
        name = hash_alg.name if hash_alg else "none"
        return f"signature hash {name} is not accepted"
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            pad = params if isinstance(params, padding.PSS) else padding.PKCS1v15()
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
        else:
            return "issuer key type is not supported"
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return f"bad signature: not signed by {subject_of(issuer)}"
    return None


def _check_issuer_is_ca(issuer: x509.Certificate, below: int, *, anchor: bool) -> None:
    """BasicConstraints CA (and pathLen), KeyUsage keyCertSign when present."""
    problem = (_issuer_problem_cached(issuer, below, anchor) if _small(issuer)
               else _issuer_problem(issuer, below, anchor))
    if problem is not None:
        raise CertificateChainError(problem, subject=subject_of(issuer))


def _issuer_problem(issuer: x509.Certificate, below: int, anchor: bool) -> str | None:
    """Why `issuer` may not issue a certificate `below` CAs above the leaf, or None; like
    `_signature_problem`, it depends only on its arguments."""
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        if anchor:
            return None  # a configured anchor is trusted as such, e.g. an old v1 root
        return "issues certificates but has no BasicConstraints"
    if not bc.ca:
        return "issues certificates but is not a CA"
    if bc.path_length is not None and below > bc.path_length:
        return f"path length constraint {bc.path_length} exceeded ({below} CAs below)"
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not ku.key_cert_sign:
        return "key usage does not allow certificate signing"
    return None


_signature_problem_cached = functools.lru_cache(maxsize=512)(_signature_problem)
_issuer_problem_cached = functools.lru_cache(maxsize=512)(_issuer_problem)


def validate_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
) -> tuple[x509.Certificate, ...]:
    """Build and check a path from `leaf` to one of `anchors`; return it, leaf first.

    `intermediates` are untrusted candidates (those from the signature plus any extra
    ones from a cert store, DIGEST 10.2); only `anchors` are trusted. When several paths are
    possible the first that checks out wins; when none does, the error of the first failed
    attempt is raised (it names the certificate and the reason).
    """
    if at.tzinfo is None:
        raise ValueError("validation time must be timezone-aware")
    at = at.astimezone(dt.UTC)
    if not anchors:
        raise CertificateChainError("no trust anchors configured", subject=subject_of(leaf))
    key = (leaf, tuple(intermediates), tuple(anchors))
    known = _paths.get(key)
    if known is not None and all(c.not_valid_before_utc <= at <= c.not_valid_after_utc
                                 for c in known):
        # The same certificates chain the same way (signatures and CA rules do not depend
        # on time, see _signature_problem); only validity is checked again. Building the
        # path compares names in Python and was most of a receipt's chain check.
        return known
    try:
        path = tuple(_extend([leaf], list(intermediates), list(anchors), at))
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
        # A malformed extension or key surfaces only when cryptography parses it lazily.
        raise CertificateChainError(f"malformed certificate in the path: {exc}",
                                    subject=subject_of(leaf)) from None
    if not _small(*path, *key[1]):
        return path
    with _paths_lock:
        if len(_paths) >= _MAX_PATHS:
            _paths.pop(next(iter(_paths)))
        _paths[key] = path
    return path


#: Paths found, by (leaf, intermediates, anchors); the oldest goes first when full.
_paths: dict[tuple[x509.Certificate, tuple[x509.Certificate, ...],
                   tuple[x509.Certificate, ...]], tuple[x509.Certificate, ...]] = {}
_paths_lock = threading.Lock()
_MAX_PATHS = 256


def _extend(path: list[x509.Certificate], pool: list[x509.Certificate],
            anchors: list[x509.Certificate], at: dt.datetime) -> list[x509.Certificate]:
    cert = path[-1]
    _check_validity(cert, at)
    if cert in anchors:
        return path  # the certificate itself is trusted
    if len(path) >= MAX_PATH_LENGTH:
        raise CertificateChainError("path too long", subject=subject_of(path[0]))
    candidates = [(a, True) for a in anchors if a.subject == cert.issuer]
    candidates += [(c, False) for c in pool
                   if c.subject == cert.issuer and c not in path and c not in anchors]
    if not candidates and cert.issuer == cert.subject:
        raise CertificateChainError("self-signed and not a trust anchor",
                                    subject=subject_of(cert))
    if not candidates:
        raise CertificateChainError(f"unknown issuer {cert.issuer.rfc4514_string()}",
                                    subject=subject_of(cert))
    first_error: CertificateChainError | None = None
    for issuer, is_anchor in candidates:
        try:
            _check_signature(cert, issuer)
            _check_issuer_is_ca(issuer, below=len(path) - 1, anchor=is_anchor)
            if is_anchor:
                _check_validity(issuer, at)
                return [*path, issuer]
            return _extend([*path, issuer], pool, anchors, at)
        except CertificateChainError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


_ORGNR = re.compile(r"[0-9]{9}")
_NTRNO = re.compile(r"NTRNO-([0-9]{9})")


def orgnr_of(cert: x509.Certificate) -> str | None:
    """The organisation number a Norwegian enterprise certificate was issued to, if any
    (see `_orgnr_of`; remembered per certificate, as it is asked for every message)."""
    return _orgnr_of_cached(cert) if _small(cert) else _orgnr_of(cert)


def _orgnr_of(cert: x509.Certificate) -> str | None:
    """The organisation number a Norwegian enterprise certificate was issued to, if any.

    Newer profiles carry `organizationIdentifier` `NTRNO-<orgnr>` (2.5.4.97); the old profile
    puts the bare number in the subject `serialNumber` (2.5.4.5) (DIGEST 10.1, 15 item 33).
    The private Digipost test CA of the 2014 SOAP examples puts it in the CN alone; a CN that
    is exactly nine digits is read as a last resort (DIGEST 10.2).
    """
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        m = _NTRNO.fullmatch(value.strip())
        if m:
            return m.group(1)
    for attr in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        if _ORGNR.fullmatch(value.strip()):
            return value.strip()
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        if _ORGNR.fullmatch(value.strip()):
            return value.strip()
    return None


_orgnr_of_cached = functools.lru_cache(maxsize=256)(_orgnr_of)
