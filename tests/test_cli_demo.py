"""`sdp demo` runs the whole flow and says so only when everything happened."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdp.cli import main


def test_demo_prints_complete_timelines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDP_KEYSTORE_PASSWORD", raising=False)
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    digital = re.search(r"digital post \S+: (\w+)", out)
    physical = re.search(r"physical post \S+: (\w+)", out)
    assert digital and digital.group(1) == "OPENED"
    assert physical and physical.group(1) == "DELIVERED"
    for step in ("SENDING", "SENT", "DELIVERED", "OPENED", "ACCEPTED_FOR_PRINT"):
        assert step in out
    seconds = float(re.search(r"done in ([0-9.]+) s", out).group(1))  # type: ignore[union-attr]
    assert seconds < 30
    # The broker kept its state on disk; the store holds both consignments.
    assert (tmp_path / "demo" / "broker").is_dir()
    assert (tmp_path / "demo" / "store.sqlite").is_file()


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    assert main(["demo", "--dir", str(tmp_path)]) == 2
    assert (tmp_path / "x").read_text() == "keep me"
