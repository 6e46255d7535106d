"""`sdp.validate` and `sdp validate`: which schema, every violation, safe parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from sdp import schemas
from sdp.cli import main
from sdp.errors import SchemaMissingError, SchemaValidationError, XmlSecurityError
from tests.conftest import EXAMPLES

DIGITAL = EXAMPLES / "sdpMelding-digital.xml"


def _without(path: Path, start: str, end: str) -> bytes:
    """The example with the lines from `start` to `end` (inclusive) removed."""
    out, skipping = [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.strip() == start:
            skipping = True
        if not skipping:
            out.append(line)
        if skipping and line.strip() == end:
            skipping = False
    return "".join(out).encode()


def test_validate_accepts_bytes_path_file_and_element(spec: Path) -> None:
    data = DIGITAL.read_bytes()
    for source in (data, DIGITAL, etree.fromstring(data)):
        found = schemas.validate(source)
        assert found.schema == "sdp.xsd"
        assert found.local_name == "digitalPost"
    with DIGITAL.open("rb") as fh:
        assert schemas.validate(fh).namespace == schemas.NS_SDP


def test_validate_lists_every_violation_with_its_path(spec: Path) -> None:
    bad = (
        DIGITAL.read_bytes()
        .replace(b"<sikkerhetsnivaa>3</sikkerhetsnivaa>", b"<sikkerhetsnivaa>7</sikkerhetsnivaa>")
        .replace(b"<aapningskvittering>false", b"<aapningskvittering>nei")
    )
    with pytest.raises(SchemaValidationError) as err:
        schemas.validate(bad)
    paths = [p for p, _ in err.value.violations]
    assert paths == [
        "/sdp:digitalPost/sdp:digitalPostInfo/sdp:aapningskvittering",
        "/sdp:digitalPost/sdp:digitalPostInfo/sdp:sikkerhetsnivaa",
    ]
    assert "xs:boolean" in err.value.violations[0][1]


def test_validate_names_a_missing_element(spec: Path) -> None:
    with pytest.raises(SchemaValidationError) as err:
        schemas.validate(_without(DIGITAL, "<avsender>", "</avsender>"))
    assert err.value.violations[0][0] == "/sdp:digitalPost/sdp:mottaker"
    assert "avsender" in str(err.value)


def test_validate_rejects_unknown_roots(spec: Path) -> None:
    with pytest.raises(SchemaValidationError, match="not a document of any SDP schema"):
        schemas.validate(b"<foo xmlns='urn:x'/>")


def test_validate_refuses_doctype_before_validating() -> None:
    evil = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    with pytest.raises(XmlSecurityError, match="DOCTYPE"):
        schemas.validate(evil)


def test_schema_is_compiled_once_per_process(spec: Path) -> None:
    schemas.validate(DIGITAL)
    assert schemas._combined_schema() is schemas._combined_schema()


def test_missing_artifact_says_to_run_sync(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("SDP_SCHEMA_DIR", str(tmp_path))
    with pytest.raises(SchemaMissingError) as err:
        schemas.artifact("xsd/sdp.xsd")
    assert "python codegen.py sync" in str(err.value)
    assert "xsd/sdp.xsd" in str(err.value)


def test_cli_validate_valid_example_exits_0(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DIGITAL)]) == 0
    assert "valid (sdp.xsd" in capsys.readouterr().out


def test_cli_validate_names_the_removed_element(spec: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(_without(DIGITAL, "<avsender>", "</avsender>"))
    assert main(["validate", str(DIGITAL), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.xml: INVALID" in out
    assert "avsender" in out


def test_cli_validate_json(spec: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(_without(DIGITAL, "<mottaker>", "</mottaker>"))
    assert main(["validate", "--json", str(DIGITAL), str(bad), str(tmp_path / "nope.xml")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    first, second, third = report["files"]
    assert first["valid"] is True and first["schema"] == "sdp.xsd"
    assert second["valid"] is False and second["violations"][0]["path"].startswith("/sdp:")
    assert third["valid"] is False and "no such file" in third["error"]


def test_cli_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2
