"""Conventions every `sdp` sub-command shares: exit codes, passwords, times, output."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from sdp.errors import SdpError
from sdp.keys import SigningIdentity, load_certificates, load_signing_identity

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

PASSWORD_ENV = "SDP_KEYSTORE_PASSWORD"  # noqa: S105 - the variable name, not a password


class UsageError(Exception):
    """Bad invocation: a missing file, an unreadable option. Exit code 2."""


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return path


def iso_time(value: str) -> dt.datetime:
    """ISO 8601; a time without a zone is taken as UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {value!r} (e.g. 2024-05-01T12:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def password(args: argparse.Namespace, attr: str = "password") -> str | None:
    """--password, else $SDP_KEYSTORE_PASSWORD, else none (an unencrypted PEM key)."""
    value: str | None = getattr(args, attr, None)
    return value if value is not None else os.environ.get(PASSWORD_ENV)


def load_identity(path: Path, args: argparse.Namespace, *, alias: str | None = None
                  ) -> SigningIdentity:
    return load_signing_identity(path, password(args), alias=alias)


def load_trust(paths: list[Path] | None) -> list[x509.Certificate] | None:
    if not paths:
        return None
    anchors: list[x509.Certificate] = []
    for p in paths:
        anchors.extend(load_certificates(p))
    return anchors


def emit(args: argparse.Namespace, data: dict[str, Any], text: list[str]) -> None:
    """Print `data` as JSON with --json, else the human-readable lines."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
        print()
    else:
        for line in text:
            print(line)


def fail(args: argparse.Namespace, exc: SdpError | UsageError, code: int) -> int:
    """Report an error the same way everywhere: on stderr, or as JSON with --json."""
    kind = type(exc).__name__
    if getattr(args, "json", False):
        payload: dict[str, Any] = {"ok": False, "error": kind, "message": str(exc)}
        if isinstance(exc, SdpError) and exc.subject:
            payload["subject"] = exc.subject
        json.dump(payload, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(f"error ({kind}): {exc}", file=sys.stderr)
    return code


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_password(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password", help=f"keystore password (default: ${PASSWORD_ENV})")
