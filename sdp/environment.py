"""Where to send, whom to trust: the meldingsformidler environments.

PRODUCTION and TEST use the CA certificates pinned in schemas/lock.toml (DIGEST 10.2), each
environment with its own trust store so test certificates are never accepted in production.
`Environment.custom` covers the local simulator and new CA generations (the Commfides CAs in
the spec have expired; newer Buypass/Commfides CAs are added without a code change).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from sdp.errors import ConfigurationError
from sdp.identifiers import MELDINGSFORMIDLER_ORGNR, parse_orgnr
from sdp.keys import load_certificates
from sdp.schemas import artifact

#: [EXT] Endpoints from the reference clients; the spec does not give them (DIGEST 7.9).
PRODUCTION_URL = "https://meldingsformidler.digipost.no/api/ebms"
TEST_URL = "https://qaoffentlig.meldingsformidler.digipost.no/api/ebms"

_CERTS = "sikkerhet/sertifikater"
_PRODUCTION_CAS = ("prod/BPClass3RootCA.cer", "prod/BPClass3CA3.cer",
                   "prod/cpn rootca sha256 class 3.crt", "prod/cpn enterprise sha256 class 3.crt")
_TEST_CAS = ("test/Buypass_Class_3_Test4_Root_CA.cer", "test/Buypass_Class_3_Test4_CA_3.cer",
             "test/root - cpn root sha256 ca - test.crt",
             "test/intermediate - commfides cpn enterprise-norwegian sha256 ca - test2.crt")


@dataclass(frozen=True)
class Environment:
    """One meldingsformidler: its endpoint, orgnr, and the CAs its parties' certificates use.

    Self-signed certificates in `certificates` are trust anchors; the others are
    intermediates for path building (DIGEST 10.2). `min_pull_interval` is the wait after an
    empty pull per queue (DIGEST 8.2); the simulator uses zero.
    """

    name: str
    url: str
    mf_orgnr: str = MELDINGSFORMIDLER_ORGNR
    certificates: tuple[x509.Certificate, ...] = ()
    #: CA bundle for the broker's TLS certificate (None: the system's).
    tls_ca_bundle: str | None = None
    min_pull_interval_normal: dt.timedelta = dt.timedelta(minutes=10)
    min_pull_interval_prioritized: dt.timedelta = dt.timedelta(minutes=1)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mf_orgnr", parse_orgnr(self.mf_orgnr, field="mf_orgnr"))

    # Worked out once: name comparisons run in Python, and every receipt's check asks.
    @functools.cached_property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for c in self.certificates if c.issuer == c.subject)

    @functools.cached_property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for c in self.certificates if c.issuer != c.subject)

    def min_pull_interval(self, priority: bool) -> dt.timedelta:
        return self.min_pull_interval_prioritized if priority else self.min_pull_interval_normal

    @classmethod
    def production(cls, *, extra_certificates: Sequence[x509.Certificate] = ()) -> Environment:
        return cls("production", PRODUCTION_URL,
                   certificates=(*_load(_PRODUCTION_CAS), *extra_certificates))

    @classmethod
    def test(cls, *, extra_certificates: Sequence[x509.Certificate] = ()) -> Environment:
        return cls("test", TEST_URL, certificates=(*_load(_TEST_CAS), *extra_certificates))

    @classmethod
    def custom(cls, url: str, certificates: Sequence[x509.Certificate], *,
               mf_orgnr: str = MELDINGSFORMIDLER_ORGNR, name: str = "custom",
               tls_ca_bundle: str | None = None,
               min_pull_interval: dt.timedelta = dt.timedelta(0)) -> Environment:
        if not any(c.issuer == c.subject for c in certificates):
            raise ConfigurationError("a custom environment needs at least one trust anchor "
                                     "(a self-signed CA certificate)", subject=name)
        return cls(name, url, mf_orgnr, tuple(certificates), tls_ca_bundle,
                   min_pull_interval, min_pull_interval)

    @classmethod
    def named(cls, value: str) -> Environment:
        """`test`, `production`, or an error naming the choices."""
        if value == "test":
            return cls.test()
        if value == "production":
            return cls.production()
        raise ConfigurationError("unknown environment; use test, production or a custom URL",
                                 subject=value)


def _load(names: Sequence[str]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for name in names:
        certs.extend(load_certificates(artifact(f"{_CERTS}/{name}")))
    return certs
