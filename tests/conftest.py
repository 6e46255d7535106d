"""Shared fixtures: where the official spec lives, and a freshly generated test PKI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdp import devpki

ROOT = Path(__file__).resolve().parents[1]
#: The official specification, read in place (never copied into the repository).
SPEC = Path(os.environ.get("SDP_SPEC_DIR", ROOT.parent / "shared" / "sdp-spec"))
EXAMPLES = SPEC / "eksempler"

# Organisation numbers that pass the mod-11 check (DIGEST 12.2 lists the first four).
MF_ORGNR = devpki.MELDINGSFORMIDLER_ORGNR  # 984661185
SENDER_ORGNR = "991825827"
MAILBOX_ORGNR = "996460320"
PROCESSOR_ORGNR = "889640782"


@pytest.fixture(scope="session")
def spec() -> Path:
    if not SPEC.is_dir():
        pytest.fail(f"the official specification is expected at {SPEC} (set SDP_SPEC_DIR)")
    return SPEC


@pytest.fixture(scope="session")
def ca() -> devpki.Identity:
    return devpki.make_ca("SDP Test Root CA")


@pytest.fixture(scope="session")
def intermediate(ca: devpki.Identity) -> devpki.Identity:
    return devpki.make_ca("SDP Test Issuing CA", parent=ca)


@pytest.fixture(scope="session")
def sender(intermediate: devpki.Identity) -> devpki.Identity:
    return devpki.make_enterprise_certificate(intermediate, SENDER_ORGNR, "Test Avsender AS")


@pytest.fixture(scope="session")
def mailbox(intermediate: devpki.Identity) -> devpki.Identity:
    return devpki.make_enterprise_certificate(intermediate, MAILBOX_ORGNR, "Test Postkasse AS")


@pytest.fixture(scope="session")
def broker(intermediate: devpki.Identity) -> devpki.Identity:
    return devpki.make_enterprise_certificate(intermediate, MF_ORGNR, "Test Meldingsformidler")
