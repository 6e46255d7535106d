"""Development PKI: a throw-away CA and enterprise certificates shaped like the real ones.

Tests, the simulator and `sdp dev-certs` use this so that everything runs offline with no
certificate from Buypass or Commfides. The organisation number sits in the subject
`serialNumber` attribute (OID 2.5.4.5), where Norwegian enterprise certificates of the old
profile carry it (DIGEST 10.1).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sdp.identifiers import MELDINGSFORMIDLER_ORGNR
from sdp.keys import SigningIdentity

__all__ = ["MELDINGSFORMIDLER_ORGNR", "Identity", "make_ca", "make_enterprise_certificate"]


#: Development identities are ordinary signing identities.
Identity = SigningIdentity


def _new_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(
    name: str = "SDP Development Root CA",
    *,
    bits: int = 2048,
    not_before: dt.datetime | None = None,
    days: int = 3650,
    parent: Identity | None = None,
) -> Identity:
    """A root CA for a development trust store, or an intermediate when `parent` is given."""
    key = _new_key(bits)
    start = not_before or _now() - dt.timedelta(days=1)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sikker-digital-post development"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    signer = parent.key if parent else key
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.certificate.subject if parent else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return Identity(key, cert, _chain_below(parent) if parent else ())


def make_enterprise_certificate(
    issuer: Identity,
    orgnr: str,
    organisation: str,
    *,
    bits: int = 2048,
    not_before: dt.datetime | None = None,
    days: int = 730,
    key: rsa.RSAPrivateKey | None = None,
) -> Identity:
    """An enterprise certificate (virksomhetssertifikat) for `orgnr`, issued by `issuer`.

    Usable for signing (XAdES, SBD, WS-Security) and for key transport (CMS), as the
    mailbox providers' certificates are in practice (DIGEST 10.1).
    """
    key = key or _new_key(bits)
    start = not_before or _now() - dt.timedelta(hours=1)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{organisation}"),
            x509.NameAttribute(NameOID.COMMON_NAME, organisation),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, orgnr),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Identity(key, cert, _chain_below(issuer))


def _chain_below(issuer: Identity) -> tuple[x509.Certificate, ...]:
    """The certificates a child of `issuer` presents above itself: intermediates, no root."""
    if issuer.certificate.issuer == issuer.certificate.subject:
        return ()
    return (issuer.certificate, *issuer.chain)
