"""Configuration: file < environment < flags, relative paths, typos, and the dev-certs file."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from sdp.certificates import orgnr_of, validate_path
from sdp.cli import main
from sdp.config import (
    Config,
    add_config_arguments,
    config_from_args,
    default_store_path,
    load_config,
)
from sdp.environment import PRODUCTION_URL, TEST_URL
from sdp.errors import ConfigurationError
from sdp.keys import load_certificates
from tests.conftest import MF_ORGNR, PROCESSOR_ORGNR, SENDER_ORGNR

OTHER_ORGNR = "974760673"


@pytest.fixture(scope="module")
def devpki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cfg") / "pki"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SDP_KEYSTORE_PASSWORD", raising=False)
        assert main(["dev-certs", str(folder)]) == 0
    return folder


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder so a stray ./sdp.toml in the checkout cannot leak in."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _write(folder: Path, text: str, name: str = "sdp.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# --- the file written by dev-certs ---------------------------------------------------------------


def test_dev_certs_config_gives_a_loopback_environment_and_identity(devpki: Path) -> None:
    config = load_config(devpki / "sdp.toml", env={})
    env = config.environment_object()
    assert env.url == "http://127.0.0.1:8040/api/ebms"
    assert env.mf_orgnr == MF_ORGNR
    assert list(env.trust_anchors) == load_certificates(devpki / "ca.pem")
    assert list(env.intermediates) == load_certificates(devpki / "intermediate.pem")
    assert env.min_pull_interval(False) == dt.timedelta(0)
    identity = config.signing_identity()
    assert orgnr_of(identity.certificate) == SENDER_ORGNR == config.orgnr
    path = validate_path(identity.certificate, env.intermediates, env.trust_anchors,
                         dt.datetime.now(dt.UTC))
    assert len(path) == 3
    assert config.store == devpki / "store.sqlite"
    assert config.source == devpki / "sdp.toml"


def test_dev_certs_with_processor_sends_as_the_databehandler(tmp_path: Path) -> None:
    assert main(["dev-certs", str(tmp_path / "pki"), "--processor", PROCESSOR_ORGNR,
                 "--print-orgnr", OTHER_ORGNR]) == 0
    config = load_config(tmp_path / "pki" / "sdp.toml", env={})
    assert config.orgnr == SENDER_ORGNR and config.databehandler == PROCESSOR_ORGNR
    assert orgnr_of(config.signing_identity().certificate) == PROCESSOR_ORGNR


def test_password_in_repr_is_hidden(devpki: Path) -> None:
    config = load_config(devpki / "sdp.toml", env={})
    assert config.password == "changeit"
    assert "changeit" not in repr(config)


# --- precedence ----------------------------------------------------------------------------------


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[sender]\norgnr = "{SENDER_ORGNR}"\n[store]\npath = "f.sqlite"\n'
                  '[environment]\nname = "production"\n')
    assert load_config(path, env={}).orgnr == SENDER_ORGNR
    env = {"SDP_ORGNR": OTHER_ORGNR, "SDP_STORE": "/e/store.sqlite", "SDP_ENV": "test"}
    from_env = load_config(path, env=env)
    assert (from_env.orgnr, from_env.store, from_env.environment) == (
        OTHER_ORGNR, Path("/e/store.sqlite"), "test")
    flags = load_config(path, env=env, overrides={"orgnr": PROCESSOR_ORGNR, "store": None,
                                                  "environment": "http://localhost:1/x"})
    assert flags.orgnr == PROCESSOR_ORGNR
    assert flags.store == Path("/e/store.sqlite")  # None means "flag not given"
    assert flags.environment == "http://localhost:1/x"


def test_cli_helpers_parse_and_override(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[sender]\norgnr = "{SENDER_ORGNR}"\n')
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--env", "production", "--orgnr",
                              OTHER_ORGNR, "--password", "pw", "--store", "s.sqlite"])
    config = config_from_args(args, env={"SDP_ORGNR": PROCESSOR_ORGNR})
    assert config.environment == "production"
    assert config.orgnr == OTHER_ORGNR
    assert config.password == "pw"
    assert config.store == Path.cwd() / "s.sqlite"  # flags resolve against the working folder
    assert config.source == path


def test_flag_errors_name_the_flag(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--orgnr", "123456789"])
    with pytest.raises(ConfigurationError, match="--orgnr"):
        config_from_args(args, env={})


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = load_config(None, env={"XDG_DATA_HOME": str(tmp_path / "data")})
    assert config == Config(store=tmp_path / "data" / "sikker-digital-post" / "store.sqlite")
    assert config.source is None and config.environment == "test"
    assert default_store_path({"HOME": "/home/ola"}) == Path(
        "/home/ola/.local/share/sikker-digital-post/store.sqlite")


def test_sdp_config_env_and_local_file_are_found(tmp_path: Path, _elsewhere: Path) -> None:
    named = _write(tmp_path / "a", f'[sender]\norgnr = "{SENDER_ORGNR}"\n')
    assert load_config(None, env={"SDP_CONFIG": str(named)}).orgnr == SENDER_ORGNR
    _write(_elsewhere, f'[sender]\norgnr = "{OTHER_ORGNR}"\n')
    assert load_config(None, env={}).orgnr == OTHER_ORGNR  # ./sdp.toml
    with pytest.raises(ConfigurationError, match="not found"):
        load_config(None, env={"SDP_CONFIG": str(tmp_path / "missing.toml")})


# --- paths ---------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_file(devpki: Path, tmp_path: Path,
                                                 _elsewhere: Path) -> None:
    keystore_bytes = (devpki / "sender.p12").read_bytes()
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "keys").mkdir()
    (folder / "keys" / "s.p12").write_bytes(keystore_bytes)
    path = _write(folder, '[sender]\nkeystore = "keys/s.p12"\n[store]\npath = "db/x.sqlite"\n')
    config = load_config(path, env={})
    assert config.keystore == folder / "keys" / "s.p12"
    assert config.store == folder / "db" / "x.sqlite"
    # From the environment a relative path means the working folder.
    (_elsewhere / "k.p12").write_bytes(keystore_bytes)
    assert load_config(path, env={"SDP_KEYSTORE": "k.p12"}).keystore == _elsewhere / "k.p12"


def test_missing_referenced_file_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path, '[sender]\nkeystore = "nope.p12"\n')
    with pytest.raises(ConfigurationError, match=r"sender\.keystore .*no such file") as exc:
        load_config(path, env={})
    assert exc.value.subject == str(tmp_path / "nope.p12")
    path = _write(tmp_path, 'environment.url = "http://127.0.0.1:1/x"\n'
                  'environment.trust = ["ca.pem"]\n')
    with pytest.raises(ConfigurationError, match=r"environment\.trust"):
        load_config(path, env={})


# --- typos and bad values ------------------------------------------------------------------------


def test_unknown_key_names_the_key_and_suggests(tmp_path: Path) -> None:
    path = _write(tmp_path, '[sender]\nkeystor = "sender.p12"\n')
    with pytest.raises(ConfigurationError, match=r"sender\.keystor; did you mean sender\.keystore"):
        load_config(path, env={})


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[recepits]\npriority = true\n")
    with pytest.raises(ConfigurationError, match=r"\[recepits\]"):
        load_config(path, env={})


@pytest.mark.parametrize(("text", "message"), [
    ("[sender]\norgnr = 991825827\n", "must be a string"),
    ('[sender]\norgnr = "991825828"\n', "check digit"),
    ('[environment]\nname = "prod"\n', "neither test, production"),
    ('[environment]\nname = "test"\nurl = "http://127.0.0.1/x"\n', "name or url"),
    ('[sender]\npassword = "a"\npassword_env = "B"\n', "password or password_env"),
    ("[transport]\nread_timeout = 0\n", "greater than zero"),
    ('[receipts]\nmpc_id = "has space"\n', "receipts.mpc_id"),
    ('[receipts]\npriority = "maybe"\n', "true or false"),
    ("not toml = = 1\n", "not valid TOML"),
])
def test_bad_values_are_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_config(_write(tmp_path, text), env={})


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="SDP_ORGNR"):
        load_config(None, env={"SDP_ORGNR": "12"})
    with pytest.raises(ConfigurationError, match="SDP_ENV"):
        load_config(None, env={"SDP_ENV": "staging"})


def test_env_values_are_typed() -> None:
    config = load_config(None, env={"SDP_PRIORITY": "yes", "SDP_LOG_BODIES": "0",
                                    "SDP_READ_TIMEOUT": "2.5", "SDP_MPC_ID": "batch-1"})
    assert config.priority is True and config.log_bodies is False
    assert config.timeouts().read == 2.5 and config.timeouts().connect == 10.0
    assert config.mpc_id == "batch-1"


# --- passwords -----------------------------------------------------------------------------------


def test_password_env_reads_the_named_variable(devpki: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, f'[sender]\nkeystore = "{devpki / "sender.p12"}"\n'
                  'password_env = "MY_PW"\n')
    config = load_config(path, env={"MY_PW": "changeit"})
    assert config.password == "changeit"
    assert orgnr_of(config.signing_identity().certificate) == SENDER_ORGNR
    # SDP_KEYSTORE_PASSWORD is the environment layer: it beats the file's password_env.
    assert load_config(path, env={"MY_PW": "a", "SDP_KEYSTORE_PASSWORD": "b"}).password == "b"
    unset = load_config(path, env={})
    with pytest.raises(ConfigurationError, match="MY_PW"):
        unset.signing_identity()


def test_no_keystore_is_an_error_only_when_one_is_needed() -> None:
    config = load_config(None, env={})
    with pytest.raises(ConfigurationError, match="no sender keystore"):
        config.signing_identity()


# --- environments --------------------------------------------------------------------------------


def test_named_environments_are_the_pinned_ones(spec: Path) -> None:
    production = load_config(None, env={"SDP_ENV": "production"}).environment_object()
    test = load_config(None, env={}).environment_object()
    assert (production.url, test.url) == (PRODUCTION_URL, TEST_URL)
    assert production.trust_anchors and test.trust_anchors
    assert not set(production.trust_anchors) & set(test.trust_anchors)
    assert production.min_pull_interval(False) == dt.timedelta(minutes=10)


def test_trust_adds_certificates_to_a_named_environment(devpki: Path) -> None:
    config = load_config(None, env={"SDP_ENV": "test", "SDP_TRUST": str(devpki / "ca.pem")})
    env = config.environment_object()
    assert load_certificates(devpki / "ca.pem")[0] in env.trust_anchors
    assert env.url == TEST_URL


def test_custom_url_needs_trust() -> None:
    config = load_config(None, env={"SDP_ENV": "http://127.0.0.1:8040/api/ebms"})
    with pytest.raises(ConfigurationError, match="needs trust"):
        config.environment_object()


def test_remote_custom_broker_keeps_the_pull_back_off(devpki: Path) -> None:
    env = load_config(None, env={"SDP_ENV": "https://broker.example/api/ebms",
                                 "SDP_TRUST": str(devpki / "trust.pem")}).environment_object()
    assert env.min_pull_interval(False) == dt.timedelta(minutes=10)
    assert env.min_pull_interval(True) == dt.timedelta(minutes=1)
    localhost = load_config(None, env={"SDP_ENV": "http://localhost:9/x",
                                       "SDP_TRUST": str(devpki / "trust.pem")})
    assert localhost.environment_object().min_pull_interval(False) == dt.timedelta(0)
