"""What every fuzz target shares: the test PKI, where files go, and the verdict on exceptions.

A target's `TestOneInput(data)` returns normally when the library accepted the input or
refused it with a typed `sdp.errors.SdpError`; any other exception escapes and is a finding
(libFuzzer saves the input). The PKI is generated once and kept in the work folder, so the
seeds `make_corpus.py` wrote and the keys a target decrypts or verifies with belong together.

Nothing from `sdp` is imported at module level: a target imports `sdp` inside
`atheris.instrument_imports()` (see `instrumented`), and an import here would come first and
escape the instrumentation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

    from sdp.keys import SigningIdentity

ROOT = Path(__file__).resolve().parents[1]
#: Keys, seeds, the growing corpus and crash artifacts (git-ignored).
WORK = Path(os.environ.get("SDP_FUZZ_WORK", Path(__file__).resolve().parent / ".work"))
#: The official specification, read in place and never copied (as tests/conftest.py does).
SPEC = Path(os.environ.get("SDP_SPEC_DIR", ROOT.parent / "shared" / "sdp-spec"))
#: Crash inputs kept as regression tests: tests/fuzz_regressions/<target>/<file>.
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"

TARGETS = ("envelope", "wssecurity", "mime", "cms", "asice", "sbd")

# Organisation numbers that pass the mod-11 check (the same as tests/conftest.py).
SENDER_ORGNR = "991825827"
MAILBOX_ORGNR = "996460320"

#: The Content-ID of the package attachment in our own seeds.
SEED_CID = "d6f0f811-69c4-4e03-a5a3-5ef02c4dfc11@meldingsformidler.sdp.difi.no"
#: The boundary our multipart seeds use; the `mime` target's default Content-Type names it.
SEED_BOUNDARY = "MIMEBoundary_0123456789abcdef0123456789abcdef"
SEED_SOAP_CID = "soap-part@fuzz.sdp"
DEFAULT_CONTENT_TYPE = (f'multipart/related; type="application/soap+xml"; '
                        f'boundary="{SEED_BOUNDARY}"; start="<{SEED_SOAP_CID}>"')


@dataclass(frozen=True)
class Pki:
    """The development PKI the seeds were made with; `at` is a time all certificates cover."""

    ca: SigningIdentity
    intermediate: SigningIdentity
    sender: SigningIdentity
    mailbox: SigningIdentity
    broker: SigningIdentity
    at: dt.datetime

    @property
    def trust(self) -> list[x509.Certificate]:
        return [self.ca.certificate]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [self.intermediate.certificate]


_ROLES = ("ca", "intermediate", "sender", "mailbox", "broker")
_pki: Pki | None = None


def use_pki(pki: Pki | None) -> None:
    """Make the targets use `pki` (the CI test passes its session fixtures); None resets."""
    global _pki
    _pki = pki


def new_pki() -> Pki:
    from sdp import devpki

    ca = devpki.make_ca("SDP Fuzz Root CA")
    intermediate = devpki.make_ca("SDP Fuzz Issuing CA", parent=ca)
    return Pki(
        ca=ca,
        intermediate=intermediate,
        sender=devpki.make_enterprise_certificate(intermediate, SENDER_ORGNR, "Fuzz Avsender"),
        mailbox=devpki.make_enterprise_certificate(intermediate, MAILBOX_ORGNR, "Fuzz Postkasse"),
        broker=devpki.make_enterprise_certificate(intermediate, devpki.MELDINGSFORMIDLER_ORGNR,
                                                  "Fuzz Meldingsformidler"),
        at=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )


def save_pki(pki: Pki, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for role in _ROLES:
        identity: SigningIdentity = getattr(pki, role)
        (folder / f"{role}.key.pem").write_bytes(identity.key_pem())
        (folder / f"{role}.cert.pem").write_bytes(identity.cert_pem())
    (folder / "pki.json").write_text(json.dumps({"at": pki.at.isoformat()}))


def load_pki(folder: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from sdp.keys import SigningIdentity

    identities: dict[str, SigningIdentity] = {}
    for role in _ROLES:
        key = load_pem_private_key((folder / f"{role}.key.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        certs = x509.load_pem_x509_certificates((folder / f"{role}.cert.pem").read_bytes())
        identities[role] = SigningIdentity(key, certs[0], tuple(certs[1:]))
    at = dt.datetime.fromisoformat(json.loads((folder / "pki.json").read_text())["at"])
    return Pki(**identities, at=at)


def pki() -> Pki:
    """The PKI in use: set by `use_pki`, else loaded from (or created in) WORK/keys."""
    global _pki
    if _pki is None:
        folder = WORK / "keys"
        if not (folder / "pki.json").is_file():
            save_pki(new_pki(), folder)
        _pki = load_pki(folder)
    return _pki


def instrumented(enabled: bool) -> contextlib.AbstractContextManager[object]:
    """`atheris.instrument_imports()` for the project's code when running under libFuzzer.

    Imported for the CI test (not `__main__`), targets stay uninstrumented and do not need
    atheris at all.
    """
    if not enabled:
        return contextlib.nullcontext()
    import atheris  # type: ignore[import-untyped,unused-ignore]

    # sdp is the code under test; xsdata and asn1crypto parse on its behalf, so their branches
    # guide the fuzzer towards inputs that reach deeper into sdp.
    manager: contextlib.AbstractContextManager[object] = atheris.instrument_imports(
        include=["sdp", "xsdata", "asn1crypto"])
    return manager


def typed_errors_only(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """Wrap a target body: SdpError is a verdict, anything else propagates as a finding."""
    from sdp.errors import SdpError

    @functools.wraps(target)
    def run(data: bytes) -> None:
        try:
            target(data)
        except SdpError:
            return

    return run


def run_fuzzer(test_one_input: Callable[[bytes], None]) -> None:
    """Hand the target to libFuzzer with the command line (corpus folders, -runs, ...)."""
    import logging
    import sys
    import warnings

    import atheris  # type: ignore[import-untyped,unused-ignore]

    # Hostile certificates make cryptography warn (negative serials, odd names), and xsdata
    # logs every unknown element: neither is a finding, and both would drown libFuzzer's log.
    warnings.simplefilter("ignore")
    logging.getLogger("xsdata").setLevel(logging.ERROR)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
