"""Pinned artifacts: sync from the mirror or from upstream, checksums, and fresh bindings."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import codegen
from tests.conftest import SPEC


@pytest.fixture(scope="module")
def pins() -> list[codegen.Pinned]:
    return codegen.read_lock()


@pytest.fixture
def mirror(tmp_path: Path, pins: list[codegen.Pinned], spec: Path) -> Path:
    """A copy of just the pinned files, laid out like the specification folder."""
    root = tmp_path / "mirror"
    for pin in pins:
        target = root / pin.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SPEC / pin.path, target)
    return root


def test_lock_covers_every_required_artifact(pins: list[codegen.Pinned]) -> None:
    paths = {p.path for p in pins}
    for required in [
        "xsd/sdp.xsd", "xsd/sdp-felles.xsd", "xsd/sdp-melding.xsd", "xsd/sdp-kvittering.xsd",
        "xsd/sdp-feil.xsd", "xsd/sdp-manifest.xsd", "xsd/utvidelser/lenke.xsd",
        "xsd/utvidelser/bevis.xsd", "xsd/utvidelser/arrangement.xsd",
        "xsd/SBDH20040506-02/StandardBusinessDocumentHeader.xsd",
        "xsd/ebxml/ebms-header-3_0-200704.xsd", "xsd/ebxml/ebbp-signals-2.0.xsd",
        "xsd/w3/soap-envelope.xsd", "xsd/w3/xmldsig-core-schema.xsd", "xsd/w3/xenc-schema.xsd",
        "xsd/etsi/XAdES.xsd", "xsd/asic-e/ts_102918v010201.xsd",
        "xsd/oasis-200401-wss-wssecurity-secext-1.0.xsd",
        "xsd/oasis-200401-wss-wssecurity-utility-1.0.xsd", "xsd/w3/xml.xsd", "xsd/w3/xlink.xsd",
        "xsd/w3/exc-c14n.xsd",
    ]:
        assert required in paths, required
    assert sum(p.path.startswith("sikkerhet/sertifikater/") for p in pins) == 8
    for pin in pins:
        assert pin.url.startswith("https://"), pin.path
        assert len(pin.sha256) == 64
        if "wssecurity" in pin.path:
            assert "klient-dotnet/c66cab1e700ca6aff7db35a9797c3eed63624990" in pin.url
        else:
            assert "felleslosninger/docs/edc2469b59ce9a914c56d118cd2d6d331db3e176" in pin.url


def test_sync_from_mirror_verifies_every_file(mirror: Path, tmp_path: Path,
                                              pins: list[codegen.Pinned]) -> None:
    dest = tmp_path / "dest"
    done = codegen.sync(dest, mirror)
    assert len(done) == len(pins)
    for pin in pins:
        assert (dest / pin.path).read_bytes() == (mirror / pin.path).read_bytes()


def test_sync_fails_naming_the_file_with_one_changed_byte(mirror: Path, tmp_path: Path) -> None:
    victim = mirror / "xsd" / "sdp-felles.xsd"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(codegen.SyncError) as err:
        codegen.sync(tmp_path / "dest", mirror)
    assert "xsd/sdp-felles.xsd" in str(err.value)
    assert "SHA-256 mismatch" in str(err.value)
    assert "xsd/sdp.xsd:" not in str(err.value)  # only the changed file is named


def test_sync_command_exits_non_zero_on_mismatch(mirror: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    victim = mirror / "xsd" / "utvidelser" / "lenke.xsd"
    victim.write_bytes(victim.read_bytes() + b" ")
    rc = codegen.main(["sync", "--mirror", str(mirror), "--dest", str(tmp_path / "d")])
    assert rc == 1
    assert "xsd/utvidelser/lenke.xsd" in capsys.readouterr().err


def _unquote(path: str) -> str:
    return unquote(path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_sync_downloads_from_upstream_when_no_mirror(pins: list[codegen.Pinned], mirror: Path,
                                                     tmp_path: Path) -> None:
    with _serve_upstream(pins, mirror, tmp_path) as base:
        dest = tmp_path / "dest"
        done = codegen.sync(dest, mirror=None, upstream_base=base)
    assert all(line.startswith("download") for line in done)
    assert (dest / "xsd" / "sdp.xsd").read_bytes() == (mirror / "xsd" / "sdp.xsd").read_bytes()


def test_download_with_a_changed_byte_fails(pins: list[codegen.Pinned], mirror: Path,
                                            tmp_path: Path) -> None:
    victim = mirror / "xsd" / "ebxml" / "ebbp-signals-2.0.xsd"
    victim.write_bytes(victim.read_bytes().replace(b"schema", b"Schema", 1))
    with _serve_upstream(pins, mirror, tmp_path) as base, \
            pytest.raises(codegen.SyncError) as err:
        codegen.sync(tmp_path / "dest", mirror=None, upstream_base=base)
    assert "xsd/ebxml/ebbp-signals-2.0.xsd" in str(err.value)


def test_download_refuses_plain_http_to_remote_hosts(tmp_path: Path) -> None:
    with pytest.raises(codegen.SyncError, match="non-TLS"):
        codegen._fetch("http://example.org/x.xsd", None, 1.0)


class _serve_upstream:
    def __init__(self, pins: list[codegen.Pinned], mirror: Path, tmp_path: Path) -> None:
        root = tmp_path / "upstream"
        for pin in pins:
            url = urlsplit(pin.url)
            target = root / url.netloc / _unquote(url.path).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mirror / pin.path, target)
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_generated_bindings_are_up_to_date() -> None:
    assert codegen.check() == 0


def test_stale_bindings_are_reported_with_a_diff(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(codegen.GENERATED / codegen.PACKAGE, stale)
    target = stale / "lenke.py"
    target.write_text(target.read_text() + "\nEXTRA = 1\n")
    diff = codegen._diff_trees(stale, codegen.GENERATED / codegen.PACKAGE)
    assert any("EXTRA = 1" in line for line in diff)
    assert codegen._diff_trees(codegen.GENERATED / codegen.PACKAGE,
                               codegen.GENERATED / codegen.PACKAGE) == []


def test_every_generated_file_names_the_command_that_made_it() -> None:
    for py in (codegen.GENERATED / codegen.PACKAGE).glob("*.py"):
        assert py.read_text().startswith(codegen.HEADER), py.name
