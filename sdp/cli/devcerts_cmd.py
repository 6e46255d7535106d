"""`sdp dev-certs DIR`: a complete development PKI and client configuration in one folder.

The local broker, the tests and a developer's first send all need the same set of parties
(meldingsformidler, mailbox and print providers, sender, optionally a data processor) with
enterprise-style certificates chaining to one throw-away CA (DIGEST 10.1). The file names are
fixed because `sdp broker serve` finds its keys by them. Re-running is safe: a complete folder
is reported, never rewritten, and no existing file is overwritten without `--force`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from sdp import devpki
from sdp.certificates import orgnr_of, subject_of
from sdp.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    PASSWORD_ENV,
    UsageError,
    add_json,
    emit,
    fail,
)
from sdp.config import CONFIG_FILE_NAME
from sdp.errors import InputError, KeyMaterialError
from sdp.identifiers import MELDINGSFORMIDLER_ORGNR, parse_orgnr
from sdp.keys import load_certificates

DEFAULT_PASSWORD = "changeit"  # noqa: S105 - the documented password of a development PKI
DEFAULT_SENDER = "991825827"
DEFAULT_MAILBOX = "996460320"
DEFAULT_PRINT = "889640782"
DEFAULT_BROKER_URL = "http://127.0.0.1:8040/api/ebms"
DEFAULT_VALIDITY_DAYS = 730

CA_FILE = "ca.pem"
#: The root CA's key, so `sdp broker serve` can issue certificates for fault scenarios.
CA_KEYSTORE = "ca.p12"
INTERMEDIATE_FILE = "intermediate.pem"
TRUST_FILE = "trust.pem"
#: Roles in the order they are made and reported; each is `<role>.p12/.pem/-key.pem`.
ROLES = ("broker", "mailbox", "print", "sender", "processor")
_ORGANISATIONS = {
    "broker": "Meldingsformidler (development)",
    "mailbox": "Postkasseleverandor (development)",
    "print": "Utskriftsleverandor (development)",
    "sender": "Avsender (development)",
    "processor": "Databehandler (development)",
}
_KEY_MODE = 0o600
_PUBLIC_MODE = 0o644

EPILOG = f"""files (in DIR):
  ca.pem, intermediate.pem  the development root CA and the issuing CA under it
  ca.p12                    the root CA's key, for the broker's fault scenarios (mode 0600)
  trust.pem                 both CAs: the trust store for a custom environment
  ROLE.p12                  key + certificate + chain, password-protected (mode 0600)
  ROLE.pem, ROLE-key.pem    the certificate chain, and the unencrypted key (mode 0600)
  {CONFIG_FILE_NAME:<25} client configuration for the local broker
  ROLE is broker ({MELDINGSFORMIDLER_ORGNR}), mailbox, print, sender and, with --processor,
  processor.

examples:
  sdp dev-certs ./dev-pki
  sdp dev-certs ./dev-pki --sender 991825827 --processor 974760673
  SDP_KEYSTORE_PASSWORD=hemmelig sdp dev-certs ./dev-pki --force --json
  SDP_CONFIG=./dev-pki/{CONFIG_FILE_NAME} sdp ...   # use the generated configuration
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dev-certs", help="create a development PKI and client configuration",
        description="Create a throw-away CA with enterprise certificates for every SDP party "
        "and an sdp.toml pointing at the local broker. Never use these outside development.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, metavar="DIR", help="folder to create the files in")
    p.add_argument("--sender", type=_orgnr, metavar="ORGNR",
                   help=f"avsender orgnr (default {DEFAULT_SENDER})")
    p.add_argument("--processor", type=_orgnr, metavar="ORGNR",
                   help="also make a databehandler certificate; the client configuration "
                   "then sends as it on the avsender's behalf")
    p.add_argument("--mailbox-orgnr", type=_orgnr, metavar="ORGNR",
                   help=f"mailbox provider orgnr (default {DEFAULT_MAILBOX})")
    p.add_argument("--print-orgnr", type=_orgnr, metavar="ORGNR",
                   help=f"print provider orgnr (default {DEFAULT_PRINT})")
    p.add_argument("--password",
                   help=f"PKCS#12 password (default: ${PASSWORD_ENV}, else {DEFAULT_PASSWORD!r})")
    p.add_argument("--validity-days", type=_positive, default=DEFAULT_VALIDITY_DAYS,
                   metavar="N", help=f"certificate lifetime (default {DEFAULT_VALIDITY_DAYS})")
    p.add_argument("--key-size", type=int, choices=(2048, 3072, 4096), default=2048,
                   help="RSA key size in bits (default 2048)")
    p.add_argument("--broker-url", default=DEFAULT_BROKER_URL, metavar="URL",
                   help=f"broker URL written to {CONFIG_FILE_NAME} (default {DEFAULT_BROKER_URL})")
    p.add_argument("--force", action="store_true",
                   help="regenerate everything, overwriting the files of an earlier run")
    add_json(p)
    p.set_defaults(func=run)


def _orgnr(value: str) -> str:
    try:
        return parse_orgnr(value)
    except InputError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    role: str
    orgnr: str

    @property
    def files(self) -> tuple[str, str, str]:
        """PKCS#12, certificate chain PEM, key PEM."""
        return f"{self.role}.p12", f"{self.role}.pem", f"{self.role}-key.pem"


def party_files(role: str) -> tuple[str, str, str]:
    return Party(role, "").files


def expected_files(roles: tuple[str, ...]) -> list[str]:
    """Every file a complete PKI with `roles` consists of; the configuration comes last."""
    names = [CA_FILE, CA_KEYSTORE, INTERMEDIATE_FILE, TRUST_FILE]
    for role in roles:
        names.extend(party_files(role))
    return [*names, CONFIG_FILE_NAME]


def _parties(args: argparse.Namespace) -> list[Party]:
    parties = [
        Party("broker", MELDINGSFORMIDLER_ORGNR),
        Party("mailbox", args.mailbox_orgnr or DEFAULT_MAILBOX),
        Party("print", args.print_orgnr or DEFAULT_PRINT),
        Party("sender", args.sender or DEFAULT_SENDER),
    ]
    if args.processor:
        parties.append(Party("processor", args.processor))
    seen: dict[str, str] = {}
    for party in parties:
        if party.orgnr in seen:
            raise UsageError(f"{party.role} and {seen[party.orgnr]} would share orgnr "
                             f"{party.orgnr}; every party needs its own")
        seen[party.orgnr] = party.role
    return parties


def _password(args: argparse.Namespace) -> tuple[str, str]:
    """The PKCS#12 password and where it came from: flag, env or default."""
    if args.password is not None:
        return args.password, "flag"
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env, "env"
    return DEFAULT_PASSWORD, "default"


# --- generation (all in memory first, so a failure writes nothing) ------------------------------


def generate(parties: list[Party], *, password: str, given_by: str,
             validity_days: int, key_size: int, broker_url: str
             ) -> dict[str, tuple[bytes, int]]:
    """File name -> (content, mode) for a fresh PKI."""
    tag = secrets.token_hex(3)  # tells regenerated CAs apart in error messages and tools
    # The CAs outlive the leaves: they start a day earlier and run a day longer.
    root = devpki.make_ca(f"SDP Development Root CA {tag}", bits=key_size,
                          days=validity_days + 1)
    issuing = devpki.make_ca(f"SDP Development Issuing CA {tag}", bits=key_size,
                             days=validity_days + 1, parent=root)
    root_pem = root.certificate.public_bytes(serialization.Encoding.PEM)
    issuing_pem = issuing.certificate.public_bytes(serialization.Encoding.PEM)
    files: dict[str, tuple[bytes, int]] = {
        CA_FILE: (root_pem, _PUBLIC_MODE),
        CA_KEYSTORE: (root.to_pkcs12(password.encode("utf-8"), name="ca"), _KEY_MODE),
        INTERMEDIATE_FILE: (issuing_pem, _PUBLIC_MODE),
        TRUST_FILE: (root_pem + issuing_pem, _PUBLIC_MODE),
    }
    for party in parties:
        identity = devpki.make_enterprise_certificate(
            issuing, party.orgnr, _ORGANISATIONS[party.role], bits=key_size,
            days=validity_days)
        p12, pem, key = party.files
        files[p12] = (identity.to_pkcs12(password.encode("utf-8"), name=party.role), _KEY_MODE)
        files[pem] = (identity.cert_pem(), _PUBLIC_MODE)
        files[key] = (identity.key_pem(), _KEY_MODE)
    inline = given_by == "default"
    files[CONFIG_FILE_NAME] = (
        client_config(parties, broker_url, password if inline else None).encode("utf-8"),
        _KEY_MODE if inline else _PUBLIC_MODE)
    return files


def _q(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def client_config(parties: list[Party], broker_url: str, password: str | None) -> str:
    """An `sdp.toml` for the local broker; with a processor, it sends as the databehandler."""
    by_role = {p.role: p for p in parties}
    sender = by_role["sender"]
    processor = by_role.get("processor")
    keystore = processor.files[0] if processor else sender.files[0]
    secret = (f"password = {_q(password)}  # the development default; use password_env for "
              "real keystores" if password is not None else
              f"password_env = {_q(PASSWORD_ENV)}  # export the password given to dev-certs")
    lines = [
        "# Written by `sdp dev-certs` for the local broker (`sdp broker serve`).",
        "# Development certificates only: never use them with the real meldingsformidler.",
        "",
        "[environment]",
        f"url = {_q(broker_url)}",
        f"trust = [{_q(CA_FILE)}, {_q(INTERMEDIATE_FILE)}]",
        f"mf_orgnr = {_q(by_role['broker'].orgnr)}",
        "",
        "[sender]",
        f"keystore = {_q(keystore)}",
        secret,
        f"orgnr = {_q(sender.orgnr)}  # avsender (behandlingsansvarlig)",
    ]
    if processor:
        lines.append(f"databehandler = {_q(processor.orgnr)}")
    lines += ["", "[store]", f"path = {_q('store.sqlite')}", ""]
    return "\n".join(lines)


# --- writing --------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write via a temporary file and a rename, so no reader sees half a key.

    Without `overwrite` the final step is a hard link, which fails if the name appeared in
    the meantime; an existing file is then never replaced.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UsageError(f"{path} appeared while writing; not overwritten") from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise UsageError(f"{path} appeared while writing; not overwritten") from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# --- reporting ------------------------------------------------------------------------------------


def _describe(directory: Path, roles: list[str]) -> dict[str, Any]:
    """What the folder holds, read from the certificates themselves."""
    parties: dict[str, Any] = {}
    for role in roles:
        p12, pem, key = party_files(role)
        try:
            cert = load_certificates(directory / pem)[0]
        except KeyMaterialError as exc:
            raise UsageError(f"{directory / pem} is unreadable ({exc}); "
                             "regenerate with --force") from None
        parties[role] = {
            "orgnr": orgnr_of(cert), "subject": subject_of(cert),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "p12": str(directory / p12), "pem": str(directory / pem), "key": str(directory / key),
        }
    broker_url = None
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        loaded = tomllib.loads((directory / CONFIG_FILE_NAME).read_text("utf-8"))
        environment = loaded.get("environment")
        broker_url = environment.get("url") if isinstance(environment, dict) else None
    return {
        "directory": str(directory), "config": str(directory / CONFIG_FILE_NAME),
        "ca": str(directory / CA_FILE), "ca_keystore": str(directory / CA_KEYSTORE),
        "intermediate": str(directory / INTERMEDIATE_FILE),
        "trust": str(directory / TRUST_FILE), "broker_url": broker_url, "parties": parties,
    }


def _lines(data: dict[str, Any], created: bool, given_by: str) -> list[str]:
    head = "created a development PKI in" if created else "development PKI already complete in"
    lines = [f"{head} {data['directory']}",
             f"  {CA_FILE:<18} root CA ({CA_KEYSTORE}: its key)",
             f"  {INTERMEDIATE_FILE:<18} issuing CA",
             f"  {TRUST_FILE:<18} root + issuing CA (trust store)"]
    for role, info in data["parties"].items():
        lines.append(f"  {role:<10} {info['orgnr']}  {role}.p12, {role}.pem, {role}-key.pem")
    url = f" (broker at {data['broker_url']})" if data["broker_url"] else ""
    lines.append(f"  {CONFIG_FILE_NAME:<18} client configuration{url}")
    lines.extend(f"  removed stale {name}" for name in data.get("removed", []))
    if created:
        lines.append({
            "default": f"PKCS#12 password: {DEFAULT_PASSWORD} (the default; choose one with "
                       f"--password or ${PASSWORD_ENV})",
            "env": f"PKCS#12 password: the value of ${PASSWORD_ENV}",
            "flag": f"PKCS#12 password: as given; export {PASSWORD_ENV} to use {CONFIG_FILE_NAME}",
        }[given_by])
    else:
        lines.append("nothing changed; use --force to regenerate")
    lines.append(f"use it: SDP_CONFIG={data['config']} sdp ...")
    return lines


# --- the command ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as exc:
        return fail(args, exc, EXIT_USAGE)
    except OSError as exc:
        return fail(args, UsageError(f"{exc.filename or args.dir}: {exc.strerror}"), EXIT_USAGE)


def _run(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    parties = _parties(args)
    roles = tuple(p.role for p in parties)
    password, given_by = _password(args)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a folder")
    ours = expected_files(ROLES)  # every name this command may own, processor included
    present = [name for name in ours if (directory / name).exists()]

    if not args.force and present:
        # A processor made by an earlier run belongs to the PKI even when not asked for now.
        on_disk = tuple(r for r in ROLES if r in roles
                        or any(name in present for name in party_files(r)))
        missing = [name for name in expected_files(on_disk) if name not in present]
        if missing:
            raise UsageError(
                f"{directory} holds an incomplete development PKI: missing "
                f"{', '.join(missing)}; present {', '.join(present)}. Nothing was changed; "
                "use --force to regenerate (and overwrite) all of it, or an empty folder")
        data = _describe(directory, list(on_disk))
        _check_requested(args, data)
        emit(args, {"ok": True, "created": False, **data},
             _lines(data, created=False, given_by=given_by))
        return EXIT_OK

    if given_by == "flag" and not password:
        print("warning: an empty password leaves the PKCS#12 files unencrypted",
              file=sys.stderr)
    files = generate(parties, password=password, given_by=given_by,
                     validity_days=args.validity_days, key_size=args.key_size,
                     broker_url=args.broker_url)
    directory.mkdir(parents=True, exist_ok=True)
    for name, (content, mode) in files.items():
        write_atomic(directory / name, content, mode, overwrite=args.force)
    # With --force, files of a party no longer requested would chain to the old CA: remove them.
    removed = [name for name in present if name not in files]
    for name in removed:
        (directory / name).unlink(missing_ok=True)
    data = {**_describe(directory, list(roles)), "removed": removed}
    emit(args, {"ok": True, "created": True, **data},
         _lines(data, created=True, given_by=given_by))
    return EXIT_OK


def _check_requested(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """An explicitly requested orgnr that differs from what is on disk is a usage error."""
    requested = {"sender": args.sender, "processor": args.processor,
                 "mailbox": args.mailbox_orgnr, "print": args.print_orgnr}
    for role, orgnr in requested.items():
        have = data["parties"].get(role, {}).get("orgnr")
        if orgnr and have != orgnr:
            raise UsageError(f"{data['directory']} already has a {role} certificate for orgnr "
                             f"{have}, not {orgnr}; use --force to regenerate everything")
