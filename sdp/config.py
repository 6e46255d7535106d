"""Client configuration from `sdp.toml`, `SDP_*` environment variables and flags.

Precedence, lowest first: the file, the environment, explicit overrides (command-line flags).
One file keeps the environment choice, the trust store and the keystore together, so switching
between the local broker, test and production is one setting, and passwords need not sit in
the file or in shell history (`password_env`). Typos in the file are errors, never ignored:
a misspelt `keystore` silently falling back to a default would send with the wrong identity.

File layout (every key optional; relative paths resolve against the file's folder)::

    [environment]
    name = "test"                     # or "production"; or instead:
    url = "http://127.0.0.1:8040/api/ebms"
    trust = ["ca.pem", "intermediate.pem"]  # CA PEMs: the custom environment's trust store,
                                      # or extra CAs (new generations) for test/production
    mf_orgnr = "984661185"
    tls_ca_bundle = "tls-ca.pem"      # CA bundle for the broker's HTTPS certificate
    min_pull_interval = 600           # seconds after an empty pull (custom environments)

    [sender]
    keystore = "sender.p12"           # PKCS#12, PEM or JKS
    password_env = "SDP_KEYSTORE_PASSWORD"   # or password = "..." (development only)
    alias = "avsender"                # JKS entry, when the keystore holds several
    orgnr = "991825827"               # avsender (behandlingsansvarlig); default: certificate
    databehandler = "889640782"       # the data processor, when it sends on the avsender's behalf

    [store]
    path = "store.sqlite"             # default: $XDG_DATA_HOME/sikker-digital-post/store.sqlite

    [receipts]
    mpc_id = "batch-1"
    priority = false

    [transport]
    connect_timeout = 10
    read_timeout = 60
    log_bodies = false

Environment variables (see `ENV_VARS`): SDP_CONFIG (the file; default ./sdp.toml when present),
SDP_ENV, SDP_TRUST (paths separated by the OS path separator), SDP_MF_ORGNR, SDP_TLS_CA_BUNDLE,
SDP_KEYSTORE, SDP_KEYSTORE_PASSWORD, SDP_KEYSTORE_ALIAS, SDP_ORGNR, SDP_DATABEHANDLER,
SDP_STORE, SDP_MPC_ID, SDP_PRIORITY, SDP_CONNECT_TIMEOUT, SDP_READ_TIMEOUT, SDP_LOG_BODIES.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from sdp import ebms
from sdp.environment import Environment
from sdp.errors import ConfigurationError, InputError, KeyMaterialError
from sdp.identifiers import MELDINGSFORMIDLER_ORGNR, parse_orgnr
from sdp.keys import SigningIdentity, load_certificates, load_signing_identity
from sdp.transport import Timeouts

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_VARS",
    "Config",
    "add_config_arguments",
    "config_from_args",
    "default_store_path",
    "load_config",
]

CONFIG_FILE_NAME = "sdp.toml"
APP_DIR = "sikker-digital-post"
ENVIRONMENT_NAMES = ("test", "production")


def default_store_path(env: Mapping[str, str] = os.environ) -> Path:
    """Per-user data folder, so receipts survive across working directories (XDG on Unix)."""
    if os.name == "nt" and env.get("LOCALAPPDATA"):
        base = Path(env["LOCALAPPDATA"])
    elif env.get("XDG_DATA_HOME"):
        base = Path(env["XDG_DATA_HOME"])
    else:
        base = Path(env.get("HOME") or Path.home()) / ".local" / "share"
    return base / APP_DIR / "store.sqlite"


@dataclass(frozen=True)
class Config:
    """Everything a sender command needs to talk to one meldingsformidler.

    `environment` is `test`, `production` or the URL of a custom one (the local broker).
    `orgnr` is the avsender (behandlingsansvarlig); None means the orgnr in the sender
    certificate. `password` is never shown in `repr`.
    """

    environment: str = "test"
    trust: tuple[Path, ...] = ()
    mf_orgnr: str = MELDINGSFORMIDLER_ORGNR
    tls_ca_bundle: Path | None = None
    min_pull_interval: float | None = None
    keystore: Path | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    alias: str | None = None
    orgnr: str | None = None
    databehandler: str | None = None
    store: Path = field(default_factory=default_store_path)
    mpc_id: str | None = None
    priority: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    log_bodies: bool = False
    #: The file this configuration was read from, if any.
    source: Path | None = None

    @property
    def is_custom(self) -> bool:
        return self.environment not in ENVIRONMENT_NAMES

    def trust_certificates(self) -> list[x509.Certificate]:
        certs: list[x509.Certificate] = []
        for path in self.trust:
            try:
                certs.extend(load_certificates(path))
            except KeyMaterialError as exc:
                raise ConfigurationError(f"trust: {exc}", subject=str(path)) from exc
        return certs

    def environment_object(self) -> Environment:
        """The configured meldingsformidler; a loopback URL gets no pull back-off."""
        extra = self.trust_certificates()
        if not self.is_custom:
            env = (Environment.test(extra_certificates=extra) if self.environment == "test"
                   else Environment.production(extra_certificates=extra))
            if self.mf_orgnr != env.mf_orgnr:
                env = dataclasses.replace(env, mf_orgnr=self.mf_orgnr)
            if self.tls_ca_bundle is not None:
                env = dataclasses.replace(env, tls_ca_bundle=str(self.tls_ca_bundle))
            return env
        if not extra:
            raise ConfigurationError(
                "a custom environment needs trust (the CA PEMs its certificates chain to): "
                "set [environment] trust, SDP_TRUST, or use test/production",
                subject=self.environment)
        env = Environment.custom(
            self.environment, extra, mf_orgnr=self.mf_orgnr,
            tls_ca_bundle=str(self.tls_ca_bundle) if self.tls_ca_bundle else None)
        if self.min_pull_interval is not None:
            wait = dt.timedelta(seconds=self.min_pull_interval)
            return dataclasses.replace(env, min_pull_interval_normal=wait,
                                       min_pull_interval_prioritized=wait)
        if _is_loopback(self.environment):
            return env  # the local simulator: pull as often as a test wants
        # A remote broker deserves the same back-off as the real ones (DIGEST 8.2).
        defaults = Environment("remote", self.environment)  # only for its default intervals
        return dataclasses.replace(
            env, min_pull_interval_normal=defaults.min_pull_interval_normal,
            min_pull_interval_prioritized=defaults.min_pull_interval_prioritized)

    def signing_identity(self) -> SigningIdentity:
        """The sender's key and certificate chain, from the configured keystore."""
        if self.keystore is None:
            raise ConfigurationError(
                "no sender keystore configured: set [sender] keystore, SDP_KEYSTORE or "
                "--keystore", subject="keystore")
        if self.password is None and self.password_env:
            raise ConfigurationError(
                f"the keystore password is to come from ${self.password_env} "
                "(password_env), which is not set", subject=self.password_env)
        return load_signing_identity(self.keystore, self.password, alias=self.alias)

    def timeouts(self) -> Timeouts:
        return Timeouts(connect=self.connect_timeout, read=self.read_timeout)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- value parsing ----------------------------------------------------------------------------
#
# One parser per kind of value. Each gets the raw value (a TOML value, or an environment string),
# the folder relative paths resolve against, and a label naming where the value came from, so
# an error says "SDP_ORGNR: check digit is wrong" rather than just "bad orgnr".

_Parser = Callable[[object, Path, str], object]
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _str(value: object, base: Path, label: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{label} must be a string, not {type(value).__name__}")
    return value


def _path(value: object, base: Path, label: str) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ConfigurationError(f"{label} must be a path string, not {type(value).__name__}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _paths(value: object, base: Path, label: str) -> tuple[Path, ...]:
    if isinstance(value, str):
        items: list[object] = [v for v in value.split(os.pathsep) if v]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigurationError(f"{label} must be a list of paths")
    return tuple(_path(v, base, label) for v in items)


def _bool(value: object, base: Path, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{label} must be true or false, not {value!r}")


def _seconds(value: object, base: Path, label: str) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"{label} must be a number of seconds")
    try:
        number = float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        number = None
    if number is None or not number >= 0 or number == float("inf"):
        raise ConfigurationError(f"{label} must be a number of seconds, not {value!r}")
    return number


def _orgnr(value: object, base: Path, label: str) -> str:
    try:
        return parse_orgnr(_str(value, base, label), field=label)
    except InputError as exc:
        raise ConfigurationError(f"{label}: {exc}") from None


def _environment(value: object, base: Path, label: str) -> str:
    text = _str(value, base, label).strip()
    if text in ENVIRONMENT_NAMES:
        return text
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname:
        return text
    raise ConfigurationError(
        f"{label}: {text!r} is neither test, production nor an http(s) URL")


def _mpc_id(value: object, base: Path, label: str) -> str:
    text = _str(value, base, label)
    try:
        ebms.mpc(False, text)
    except InputError as exc:
        raise ConfigurationError(f"{label}: {exc}") from None
    return text


def _env_name(value: object, base: Path, label: str) -> str:
    text = _str(value, base, label)
    if not text or "=" in text or "\0" in text:
        raise ConfigurationError(f"{label} must name an environment variable")
    return text


# --- the three layers --------------------------------------------------------------------------

#: [section] -> key -> (Config field, parser). `environment.name` and `.url` share a field.
_FILE_KEYS: dict[str, dict[str, tuple[str, _Parser]]] = {
    "environment": {
        "name": ("environment", _environment),
        "url": ("environment", _environment),
        "trust": ("trust", _paths),
        "mf_orgnr": ("mf_orgnr", _orgnr),
        "tls_ca_bundle": ("tls_ca_bundle", _path),
        "min_pull_interval": ("min_pull_interval", _seconds),
    },
    "sender": {
        "keystore": ("keystore", _path),
        "password": ("password", _str),
        "password_env": ("password_env", _env_name),
        "alias": ("alias", _str),
        "orgnr": ("orgnr", _orgnr),
        "databehandler": ("databehandler", _orgnr),
    },
    "store": {"path": ("store", _path)},
    "receipts": {"mpc_id": ("mpc_id", _mpc_id), "priority": ("priority", _bool)},
    "transport": {
        "connect_timeout": ("connect_timeout", _seconds),
        "read_timeout": ("read_timeout", _seconds),
        "log_bodies": ("log_bodies", _bool),
    },
}

#: Environment variable -> (Config field, parser). Documented in the module docstring.
ENV_VARS: dict[str, tuple[str, _Parser]] = {
    "SDP_ENV": ("environment", _environment),
    "SDP_TRUST": ("trust", _paths),
    "SDP_MF_ORGNR": ("mf_orgnr", _orgnr),
    "SDP_TLS_CA_BUNDLE": ("tls_ca_bundle", _path),
    "SDP_KEYSTORE": ("keystore", _path),
    "SDP_KEYSTORE_PASSWORD": ("password", _str),
    "SDP_KEYSTORE_ALIAS": ("alias", _str),
    "SDP_ORGNR": ("orgnr", _orgnr),
    "SDP_DATABEHANDLER": ("databehandler", _orgnr),
    "SDP_STORE": ("store", _path),
    "SDP_MPC_ID": ("mpc_id", _mpc_id),
    "SDP_PRIORITY": ("priority", _bool),
    "SDP_CONNECT_TIMEOUT": ("connect_timeout", _seconds),
    "SDP_READ_TIMEOUT": ("read_timeout", _seconds),
    "SDP_LOG_BODIES": ("log_bodies", _bool),
}

#: Override key -> parser; the keys are Config field names.
_OVERRIDES: dict[str, _Parser] = {
    "environment": _environment, "trust": _paths, "mf_orgnr": _orgnr,
    "tls_ca_bundle": _path, "min_pull_interval": _seconds, "keystore": _path,
    "password": _str, "password_env": _env_name, "alias": _str, "orgnr": _orgnr,
    "databehandler": _orgnr, "store": _path, "mpc_id": _mpc_id, "priority": _bool,
    "connect_timeout": _seconds, "read_timeout": _seconds, "log_bodies": _bool,
}

#: How an override is named in errors when it came from `add_config_arguments`.
_FLAGS = {"environment": "--env", "keystore": "--keystore", "password": "--password",
          "orgnr": "--orgnr", "store": "--store"}

# field -> (value, where it came from)
_Layer = dict[str, tuple[object, str]]


def _file_layer(path: Path) -> _Layer:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError("configuration file not found", subject=str(path)) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration: {exc.strerror}",
                                 subject=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"not valid TOML: {exc}", subject=str(path)) from None
    base = path.parent
    layer: _Layer = {}
    for section, table in data.items():
        known = _FILE_KEYS.get(section)
        if known is None:
            raise ConfigurationError(_unknown(f"[{section}]", [f"[{s}]" for s in _FILE_KEYS]),
                                     subject=str(path))
        if not isinstance(table, dict):
            raise ConfigurationError(f"{section} must be a table ([{section}])",
                                     subject=str(path))
        if "name" in table and "url" in table and section == "environment":
            raise ConfigurationError("[environment] takes name or url, not both",
                                     subject=str(path))
        for key, value in table.items():
            if key not in known:
                raise ConfigurationError(
                    _unknown(f"{section}.{key}", [f"{section}.{k}" for k in known]),
                    subject=str(path))
            target, parse = known[key]
            label = f"{section}.{key} in {path}"
            layer[target] = (parse(value, base, label), label)
    if "password" in layer and "password_env" in layer:
        raise ConfigurationError("[sender] takes password or password_env, not both",
                                 subject=str(path))
    return layer


def _unknown(name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f"; did you mean {hint[0]}?" if hint else f" (known: {', '.join(known)})"
    return f"unknown key {name}{suggestion}"


def _env_layer(env: Mapping[str, str]) -> _Layer:
    cwd = Path.cwd()
    layer: _Layer = {}
    for name, (target, parse) in ENV_VARS.items():
        value = env.get(name)
        if value:  # an empty variable counts as unset, as shells make it easy to leave one so
            layer[target] = (parse(value, cwd, name), name)
    return layer


def _override_layer(overrides: Mapping[str, object]) -> _Layer:
    cwd = Path.cwd()
    layer: _Layer = {}
    for key, value in overrides.items():
        if value is None:
            continue  # an option that was not given
        parse = _OVERRIDES.get(key)
        if parse is None:
            raise ConfigurationError(_unknown(key, sorted(_OVERRIDES)), subject="overrides")
        label = _FLAGS.get(key, key)
        layer[key] = (parse(value, cwd, label), label)
    return layer


def _config_path(path: Path | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return path
    if env.get("SDP_CONFIG"):
        return Path(env["SDP_CONFIG"]).expanduser()
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.is_file() else None


def load_config(path: Path | None = None, env: Mapping[str, str] = os.environ,
                overrides: Mapping[str, object] | None = None) -> Config:
    """Merge the file (`path`, else $SDP_CONFIG, else ./sdp.toml), `env` and `overrides`.

    `overrides` use Config field names; None values are skipped so argparse defaults can be
    passed through. Raises ConfigurationError naming the key and where it came from.
    """
    source = _config_path(path, env)
    if source is not None:
        source = source.absolute()
    layers = [_file_layer(source) if source else {}, _env_layer(env),
              _override_layer(overrides or {})]
    merged: _Layer = {}
    for layer in layers:
        if "password" in layer:
            merged.pop("password_env", None)  # a password given higher up wins outright
        merged.update(layer)
    values: dict[str, Any] = {name: value for name, (value, _label) in merged.items()}
    password_env = values.get("password_env")
    if isinstance(password_env, str) and "password" not in values:
        secret = env.get(password_env)
        if secret is not None:
            values["password"] = secret
    values.setdefault("store", default_store_path(env))
    config = Config(**values, source=source)
    _check_files(config, merged)
    try:
        config.timeouts()
    except InputError:
        raise ConfigurationError("timeouts must be greater than zero",
                                 subject="connect_timeout/read_timeout") from None
    return config


def _check_files(config: Config, merged: _Layer) -> None:
    """Referenced files must exist now, not fail later in the middle of a send."""
    checks: list[tuple[str, Path]] = [("trust", p) for p in config.trust]
    if config.keystore is not None:
        checks.append(("keystore", config.keystore))
    if config.tls_ca_bundle is not None:
        checks.append(("tls_ca_bundle", config.tls_ca_bundle))
    for name, path in checks:
        if not path.is_file():
            label = merged[name][1]
            raise ConfigurationError(f"{label}: no such file {path}", subject=str(path))


# --- command-line helpers ----------------------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a broker shares; they beat file and env."""
    g = parser.add_argument_group(
        "configuration", "override the configuration file and SDP_* environment variables")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help=f"configuration file (default: $SDP_CONFIG, else ./{CONFIG_FILE_NAME} "
                   "if present)")
    g.add_argument("--env", metavar="test|production|URL",
                   help="meldingsformidler environment, or the URL of a custom one "
                   "(default: $SDP_ENV, else the file, else test)")
    g.add_argument("--keystore", type=Path, metavar="FILE",
                   help="sender's PKCS#12, PEM or JKS (default: $SDP_KEYSTORE)")
    g.add_argument("--password",
                   help="keystore password (default: $SDP_KEYSTORE_PASSWORD, else the file's "
                   "password_env)")
    g.add_argument("--orgnr", help="avsender orgnr (default: $SDP_ORGNR, else the file, else "
                   "the sender certificate's)")
    g.add_argument("--store", type=Path, metavar="FILE",
                   help="local store (default: $SDP_STORE, else the file, else "
                   f"$XDG_DATA_HOME/{APP_DIR}/store.sqlite)")


def config_from_args(args: argparse.Namespace,
                     env: Mapping[str, str] = os.environ) -> Config:
    """`load_config` with the options from `add_config_arguments` as overrides."""
    overrides: dict[str, Any] = {
        "environment": getattr(args, "env", None),
        "keystore": getattr(args, "keystore", None),
        "password": getattr(args, "password", None),
        "orgnr": getattr(args, "orgnr", None),
        "store": getattr(args, "store", None),
    }
    return load_config(getattr(args, "config", None), env, overrides)
