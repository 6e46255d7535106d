"""Load the development PKI folder that `sdp dev-certs` writes, for `sdp broker serve --certs`.

Layout (agreed with the dev-certs command):

    DIR/ca.pem        the development root CA certificate, PEM: the trust anchor
    DIR/intermediate.pem  optional: the issuing CA under it (also taken from the keystores)
    DIR/broker.p12    the meldingsformidler: key + certificate + chain (PKCS#12)
    DIR/mailbox.p12   the mailbox provider (decrypts digital post, signs its receipts)
    DIR/print.p12     the print provider (optional)
    DIR/sender.p12    a sender, for the client side (not used by the broker)
    DIR/ca.p12        optional: the CA's key, to issue the "wrong key" fault certificates

Keystore password: $SDP_KEYSTORE_PASSWORD, else "changeit".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from sdp.errors import ConfigurationError
from sdp.keys import SigningIdentity, load_certificates, load_signing_identity

__all__ = ["DEFAULT_PASSWORD", "DevCerts", "load_dev_certs"]

DEFAULT_PASSWORD = "changeit"  # noqa: S105 - the documented development default
PASSWORD_ENV = "SDP_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name


@dataclass(frozen=True)
class DevCerts:
    """The identities and trust store the simulator needs."""

    broker: SigningIdentity
    mailbox: SigningIdentity
    print_provider: SigningIdentity | None
    trust: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    ca: SigningIdentity | None


def load_dev_certs(directory: str | Path, password: str | None = None) -> DevCerts:
    """Read DIR as laid out above; a missing required file is a ConfigurationError."""
    root = Path(directory)
    secret = password if password is not None else os.environ.get(PASSWORD_ENV,
                                                                   DEFAULT_PASSWORD)
    if not root.is_dir():
        raise ConfigurationError("not a directory", subject=str(root))

    def identity(name: str, required: bool = True) -> SigningIdentity | None:
        path = root / name
        if not path.is_file():
            if required:
                raise ConfigurationError("missing (run `sdp dev-certs` to create the folder)",
                                         subject=str(path))
            return None
        return load_signing_identity(path, secret)

    ca_file = root / "ca.pem"
    if not ca_file.is_file():
        raise ConfigurationError("missing (run `sdp dev-certs` to create the folder)",
                                 subject=str(ca_file))
    cas = load_certificates(ca_file)
    if (root / "intermediate.pem").is_file():
        cas.extend(load_certificates(root / "intermediate.pem"))
    broker = identity("broker.p12")
    mailbox = identity("mailbox.p12")
    assert broker is not None and mailbox is not None
    # Intermediates also travel in the keystores' chains; collect them for path building.
    chain = [c for ident in (broker, mailbox) for c in ident.chain]
    anchors = [c for c in cas if c.issuer == c.subject]
    if not anchors:
        raise ConfigurationError("holds no self-signed CA certificate", subject=str(ca_file))
    intermediates = list(dict.fromkeys(c for c in [*cas, *chain] if c.issuer != c.subject))
    return DevCerts(broker, mailbox, identity("print.p12", required=False), anchors,
                    intermediates, identity("ca.p12", required=False))
