"""The safe parser takes two routes: one call for small documents, an event-counted stream
for large ones. Both must refuse the same things and build the same trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from sdp import xmlparse
from sdp.errors import XmlSecurityError

SPEC = Path(__file__).resolve().parents[2] / "shared" / "sdp-spec"
PAD = b" " * (xmlparse._SMALL_BYTES + 1)  # whitespace text: no extra nodes

REFUSED = {
    "doctype": b'<!DOCTYPE r [<!ELEMENT r ANY>]><r>%s</r>',
    "entity": b'<!DOCTYPE r [<!ENTITY e "x">]><r>&e;%s</r>',
    "external-dtd": b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r>%s</r>',
    "too-deep": (b"<a>" * (xmlparse.MAX_DEPTH + 1) + b"%s" + b"</a>" * (xmlparse.MAX_DEPTH + 1)),
    "not-well-formed": b"<r>%s<a></r>",
    "undeclared-prefix": b"<p:r>%s</p:r>",
}


def _routes(template: bytes) -> list[bytes]:
    small, large = template % b"", template % PAD
    assert len(small) <= xmlparse._SMALL_BYTES < len(large)
    return [small, large]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_both_routes_refuse(name: str) -> None:
    for doc in _routes(REFUSED[name]):
        with pytest.raises(XmlSecurityError):
            xmlparse.parse(doc, what="probe")


def test_small_documents_skip_the_counted_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = xmlparse._parse_counted

    def spy(data: bytes, what: str) -> etree._Element:
        calls.append(len(data))
        return real(data, what)

    monkeypatch.setattr(xmlparse, "_parse_counted", spy)
    xmlparse.parse(b"<r>" + b"<a/>" * 1000 + b"</r>")
    assert calls == []
    xmlparse.parse(b"<r>" + PAD + b"</r>")
    assert len(calls) == 1


def test_the_densest_small_document_stays_within_the_node_limit() -> None:
    # Four bytes per node is the least XML allows, which is what makes the one-call route safe.
    n = (xmlparse._SMALL_BYTES - 7) // 4
    root = xmlparse.parse(b"<r>" + b"<a/>" * n + b"</r>")
    assert len(root) + 1 <= xmlparse.MAX_NODES


def test_depth_limit_is_exact_on_the_small_route() -> None:
    n = xmlparse.MAX_DEPTH
    assert xmlparse.parse(b"<a>" * n + b"</a>" * n).tag == "a"
    with pytest.raises(XmlSecurityError, match="deeper"):
        xmlparse.parse(b"<a>" * (n + 1) + b"</a>" * (n + 1))


def test_both_routes_build_the_same_tree() -> None:
    files = sorted((SPEC / "eksempler").rglob("*.xml"))
    assert len(files) >= 20
    for path in files:
        data = path.read_bytes()
        small = xmlparse.parse(data)
        large = xmlparse._parse_counted(data, str(path))
        assert etree.tostring(small, method="c14n") == etree.tostring(large, method="c14n"), path
