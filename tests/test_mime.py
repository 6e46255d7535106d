"""SOAP-with-Attachments packaging (DIGEST 7.9): exact writer output and a strict parser."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdp import xmlparse
from sdp.errors import MimeError, TransportError
from sdp.mime import (
    CMS_CONTENT_TYPE,
    SOAP_CONTENT_TYPE,
    Attachment,
    MimeLimits,
    MultipartBody,
    bare_content_id,
    cid_matches,
    cid_uri,
    content_id_from_uri,
    content_id_header,
    new_content_id,
    parse_content_type,
    parse_message,
)
from tests.conftest import SPEC

ENVELOPE = b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"/>'
SOAP_EXAMPLES = sorted((SPEC / "eksempler" / "soap").glob("*.xml"))
B = "b1"
MP = f'multipart/related; type="application/soap+xml"; boundary="{B}"; start="<root@x>"'


def part(headers: list[str], content: bytes) -> bytes:
    return ("".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + content


def multipart(*parts: bytes, boundary: str = B, close: bool = True) -> bytes:
    out = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


ROOT = part(["Content-Type: application/soap+xml; charset=UTF-8", "Content-ID: <root@x>"],
            ENVELOPE)


def attachment_part(cid: str = "<pkg@x>", content: bytes = b"\x00\x01cms",
                    extra: list[str] | None = None) -> bytes:
    return part(["Content-Type: application/cms", "Content-Transfer-Encoding: binary",
                 f"Content-ID: {cid}", *(extra or [])], content)


# --- cid: URLs (RFC 2392) ---------------------------------------------------------------------


def test_cid_uri_and_back() -> None:
    assert cid_uri("<d6f0f811@meldingsformidler.sdp.difi.no>") == \
        "cid:d6f0f811@meldingsformidler.sdp.difi.no"
    assert cid_uri("a b%c@x") == "cid:a%20b%25c@x"
    assert content_id_from_uri("cid:a%20b%25c@x") == "a b%c@x"
    assert content_id_from_uri("CID:foo%40bar") == "foo@bar"
    assert content_id_header("foo@bar") == "<foo@bar>"
    assert content_id_header("<foo@bar>") == "<foo@bar>"
    for form in ("cid:foo@bar", "<foo@bar>", "foo@bar", " cid:foo%40bar "):
        assert bare_content_id(form) == "foo@bar"


def test_cid_matching() -> None:
    assert cid_matches("cid:foo%40bar", "<foo@bar>")
    assert cid_matches("cid:foo@bar", " <foo@bar> ")
    assert not cid_matches("cid:foo@bar", "<foo@baz>")
    assert not cid_matches("cid:foo@bar", "<Foo@bar>")
    assert not cid_matches("#soapBody", "<soapBody>")


def test_content_id_from_non_cid_uri_is_refused() -> None:
    with pytest.raises(MimeError, match="not a cid"):
        content_id_from_uri("#soapBody")
    with pytest.raises(MimeError):
        content_id_from_uri("cid:")


def test_new_content_id_follows_the_examples() -> None:
    cid = new_content_id()
    assert cid.endswith("@meldingsformidler.sdp.difi.no")
    assert len(cid.split("@")[0]) == 36
    assert new_content_id() != cid


# --- writer -----------------------------------------------------------------------------------


def test_writer_produces_the_digest_shape_byte_for_byte() -> None:
    body = MultipartBody(ENVELOPE, Attachment("<pkg@x>", b"CMS"), soap_content_id="root@x",
                         boundary="BND")
    assert body.content_type == (
        'multipart/related; type="application/soap+xml"; boundary="BND"; start="<root@x>"')
    assert body.to_bytes() == (
        b"--BND\r\n"
        b"Content-Type: application/soap+xml; charset=UTF-8\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"Content-ID: <root@x>\r\n"
        b"\r\n" + ENVELOPE + b"\r\n"
        b"--BND\r\n"
        b"Content-Type: application/cms\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"Content-ID: <pkg@x>\r\n"
        b"\r\n"
        b"CMS\r\n"
        b"--BND--\r\n")
    assert len(body) == len(body.to_bytes())


def test_default_boundary_is_random_and_quoted() -> None:
    a = MultipartBody(ENVELOPE, Attachment("p@x", b""))
    b = MultipartBody(ENVELOPE, Attachment("p@x", b""))
    assert a.boundary != b.boundary
    assert parse_content_type(a.content_type).params["boundary"] == a.boundary


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 300_000])
def test_stream_reads_equal_the_whole_body_for_file_attachments(tmp_path: Path,
                                                                size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "pkg.cms"
    path.write_bytes(payload)
    body = MultipartBody(ENVELOPE, Attachment("p@x", path))
    whole = body.to_bytes()
    assert len(body) == len(whole)
    stream = body.open()
    assert len(stream) == len(whole)
    pieces = []
    for n in (1, 7, 8192, 16384, 100_000):
        pieces.append(stream.read(n))
    pieces.append(stream.read())
    assert b"".join(pieces) == whole
    assert stream.read(10) == b""
    # Each open() is a fresh stream; the body can be sent again.
    assert b"".join(body.open()) == whole
    parsed = parse_message(body.content_type, whole)
    assert parsed.attachment("cid:p@x").data == payload


def test_file_that_changes_size_after_building_fails_instead_of_lying(tmp_path: Path) -> None:
    path = tmp_path / "pkg.cms"
    path.write_bytes(b"a" * 1000)
    grown = MultipartBody(ENVELOPE, Attachment("p@x", path))
    path.write_bytes(b"a" * 1001)
    with pytest.raises(MimeError, match="grew"):
        grown.to_bytes()
    shrunk = MultipartBody(ENVELOPE, Attachment("p@x", path))
    path.write_bytes(b"a" * 10)
    with pytest.raises(MimeError, match="shrank"):
        shrunk.to_bytes()


def test_writer_refuses_inconsistent_input() -> None:
    with pytest.raises(MimeError, match="contains the boundary"):
        MultipartBody(b"<x>--BND</x>", Attachment("p@x", b""), boundary="BND")
    with pytest.raises(MimeError, match="reuses"):
        MultipartBody(ENVELOPE, Attachment("<r@x>", b""), soap_content_id="r@x")
    with pytest.raises(MimeError, match="boundary"):
        MultipartBody(ENVELOPE, Attachment("p@x", b""), boundary="has\"quote")
    with pytest.raises(MimeError, match="Content-ID"):
        MultipartBody(ENVELOPE, Attachment("a b@x", b""))


@settings(max_examples=60, deadline=None)
@given(envelope=st.binary(min_size=1, max_size=2000),
       payload=st.binary(max_size=4000)
       | st.sampled_from([b"\r\n--", b"--\r\n", b"\r\n\r\n", b"\r\n--MIMEBoundary"]))
def test_round_trip_property(envelope: bytes, payload: bytes) -> None:
    body = MultipartBody(envelope, Attachment("pkg@x", payload))
    parsed = parse_message(body.content_type, body.to_bytes())
    assert parsed.multipart
    assert parsed.envelope == envelope
    assert list(parsed.attachments) == ["pkg@x"]
    att = parsed.attachments["pkg@x"]
    assert att.data == payload
    assert att.content_type == CMS_CONTENT_TYPE
    assert att.headers["content-transfer-encoding"] == "binary"


# --- parser: the official examples ------------------------------------------------------------


def test_examples_are_present() -> None:
    assert len(SOAP_EXAMPLES) == 13


@pytest.mark.parametrize("example", SOAP_EXAMPLES, ids=lambda p: p.name)
def test_examples_as_plain_soap(example: Path) -> None:
    data = example.read_bytes()
    parsed = parse_message(SOAP_CONTENT_TYPE, data)
    assert not parsed.multipart
    assert parsed.envelope == data
    assert parsed.attachments == {}
    root = xmlparse.parse(parsed.envelope, what=example.name)
    assert root.tag.endswith("}Envelope")


@pytest.mark.parametrize("example", SOAP_EXAMPLES, ids=lambda p: p.name)
def test_examples_wrapped_with_an_attachment(example: Path) -> None:
    data = example.read_bytes()
    cid = new_content_id()
    body = MultipartBody(data, Attachment(cid, b"\x30\x80" + data[:100]))
    parsed = parse_message(body.content_type, io.BytesIO(body.to_bytes()), length=len(body))
    assert parsed.envelope == data
    assert parsed.attachment(cid_uri(cid)).data == b"\x30\x80" + data[:100]


# --- parser: accepted variations --------------------------------------------------------------


def test_plain_soap_content_type_variants() -> None:
    for ct in ("application/soap+xml", 'Application/SOAP+XML; charset="utf-8"; action="x"',
               "application/soap+xml;charset=UTF-8;"):
        assert parse_message(ct, ENVELOPE).envelope == ENVELOPE


def test_preamble_epilogue_padding_and_folded_headers_are_accepted() -> None:
    body = (b"This is a preamble.\r\n"
            + f"--{B}   \r\n".encode() + ROOT + b"\r\n"
            + f"--{B}\r\n".encode()
            + part(["Content-Type:\r\n application/cms", "Content-ID: <pkg@x>"], b"DATA")
            + f"\r\n--{B}--\r\nepilogue".encode())
    parsed = parse_message(MP, body)
    assert parsed.envelope == ENVELOPE
    assert parsed.attachments["pkg@x"].content_type == "application/cms"
    assert parsed.attachments["pkg@x"].data == b"DATA"


def test_without_start_the_first_part_is_the_root() -> None:
    ct = f'multipart/related; type="application/soap+xml"; boundary={B}'
    parsed = parse_message(ct, multipart(ROOT, attachment_part()))
    assert parsed.envelope == ENVELOPE
    assert set(parsed.attachments) == {"pkg@x"}
    no_id_root = part(["Content-Type: application/soap+xml"], ENVELOPE)
    assert parse_message(ct, multipart(no_id_root, attachment_part())).envelope == ENVELOPE


def test_start_may_point_at_a_later_part() -> None:
    parsed = parse_message(MP, multipart(attachment_part(), ROOT))
    assert parsed.envelope == ENVELOPE
    assert set(parsed.attachments) == {"pkg@x"}


def test_base64_and_quoted_printable_are_decoded() -> None:
    payload = bytes(range(256)) * 3
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    b64 = part(["Content-Type: application/cms", "Content-Transfer-Encoding: BASE64",
                "Content-ID: <b64@x>"], encoded)
    qp = part(["Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable",
               "Content-ID: <qp@x>"], b"caf=C3=A9 =\r\nsoft")
    parsed = parse_message(MP, multipart(ROOT, b64, qp))
    assert parsed.attachment("<b64@x>").data == payload
    assert parsed.attachment("qp@x").data == "café soft".encode()


def test_check_attachments() -> None:
    parsed = parse_message(MP, multipart(ROOT, attachment_part()))
    parsed.check_attachments(["cid:pkg@x"])
    with pytest.raises(MimeError, match="not referenced"):
        parsed.check_attachments([])
    with pytest.raises(MimeError, match="absent"):
        parsed.check_attachments(["cid:pkg@x", "cid:other@x"])
    with pytest.raises(MimeError, match="no attachment"):
        parsed.attachment("cid:other@x")
    parse_message(SOAP_CONTENT_TYPE, ENVELOPE).check_attachments([])  # nothing to refuse


def test_parse_content_type() -> None:
    media = parse_content_type(
        'Multipart/Related; BOUNDARY="a\\"b c"; start="<x@y>"; type="t/s"')
    assert media.mime_type == "multipart/related"
    assert media.params == {"boundary": 'a"b c', "start": "<x@y>", "type": "t/s"}
    for bad in ("", "text", "text/", "a/b; x", 'a/b; x="open', "a/b; x=1; X=2", "a/b junk",
                "multipart/related; start=<x@y>"):  # RFC 2045: <, @ and > need quoting
        with pytest.raises(MimeError):
            parse_content_type(bad)


def test_stream_input_with_length() -> None:
    whole = multipart(ROOT, attachment_part())
    parsed = parse_message(MP, io.BytesIO(whole + b"next request"), length=len(whole))
    assert parsed.attachment("cid:pkg@x").data == b"\x00\x01cms"
    with pytest.raises(MimeError, match="truncated"):
        parse_message(MP, io.BytesIO(whole[:-5]), length=len(whole))
    with pytest.raises(MimeError, match="Content-Length"):
        parse_message(MP, whole, length=len(whole) + 1)


# --- parser: strict refusals ------------------------------------------------------------------

GOOD = multipart(ROOT, attachment_part())
MALFORMED: list[tuple[str, str, bytes, str]] = [
    ("no boundary parameter", 'multipart/related; type="application/soap+xml"', GOOD,
     "no boundary"),
    ("boundary not in body", MP.replace(B, "other"), GOOD, "boundary not found"),
    ("invalid boundary", 'multipart/related; boundary=""', GOOD, "invalid boundary"),
    ("start points nowhere", MP.replace("root@x", "nobody@x"), GOOD, "names no part"),
    ("duplicate Content-ID", MP, multipart(ROOT, attachment_part(), attachment_part()),
     "duplicate Content-ID"),
    ("attachment reuses root id", MP, multipart(ROOT, attachment_part("<root@x>")),
     "duplicate Content-ID"),
    ("missing closing delimiter", MP, multipart(ROOT, attachment_part(), close=False),
     "truncated"),
    ("truncated in the middle of a part", MP, GOOD[: len(GOOD) // 2], "truncated"),
    ("truncated before the close delimiter", MP, GOOD[:-6], "truncated"),
    ("truncated inside the close delimiter", MP, GOOD[:-3], "truncated"),
    ("no parts at all", MP, f"--{B}--\r\n".encode(), "no body parts"),
    ("transfer encoding given twice", MP,
     multipart(ROOT, attachment_part(extra=["Content-Transfer-Encoding: base64"])),
     "given twice"),
    ("invalid base64", MP,
     multipart(ROOT, part(["Content-Type: application/cms", "Content-ID: <pkg@x>",
                           "Content-Transfer-Encoding: base64"], b"not*base64!")),
     "invalid base64"),
    ("unknown transfer encoding alone", MP,
     multipart(ROOT, part(["Content-Type: application/cms", "Content-ID: <pkg@x>",
                           "Content-Transfer-Encoding: x-uuencode"], b"begin")),
     "unknown Content-Transfer-Encoding"),
    ("attachment without Content-ID", MP,
     multipart(ROOT, part(["Content-Type: application/cms"], b"x")), "no Content-ID"),
    ("Content-ID without brackets", MP, multipart(ROOT, attachment_part("pkg@x")),
     "angle brackets"),
    ("root is not SOAP", MP,
     multipart(part(["Content-Type: text/xml", "Content-ID: <root@x>"], ENVELOPE)),
     "root part"),
    ("empty root", MP,
     multipart(part(["Content-Type: application/soap+xml", "Content-ID: <root@x>"], b"")),
     "root part is empty"),
    ("type parameter is SOAP 1.1", MP.replace("application/soap+xml", "text/xml"), GOOD,
     "type parameter"),
    ("not a SOAP content type", "text/html; charset=utf-8", b"<html/>", "expected"),
    ("boundary used as a prefix", MP,
     multipart(ROOT).replace(f"--{B}--".encode(), f"--{B}xyz\r\n--{B}--".encode()),
     "malformed delimiter"),
    ("duplicate header", MP,
     multipart(ROOT, attachment_part(extra=["Content-Type: text/plain"])), "given twice"),
    ("header line without colon", MP, multipart(ROOT, attachment_part(extra=["garbage"])),
     "malformed header"),
    ("bare LF in headers", MP,
     multipart(ROOT, part(["Content-Type: application/cms\nContent-ID: <pkg@x>"], b"x")),
     "bare CR or LF"),
    ("non-ASCII header value", MP,
     multipart(ROOT, part(["Content-Type: application/cms", "Content-ID: <pkg@x>",
                           "X-Name: caf\u00e9"], b"x")), "non-ASCII"),
    ("headers never end", MP,
     f"--{B}\r\nContent-Type: application/soap+xml\r\n".encode() + b"X" * 20000
     + f"\r\n--{B}--\r\n".encode(), "headers not terminated"),
    ("empty plain SOAP body", SOAP_CONTENT_TYPE, b"", "empty"),
]


@pytest.mark.parametrize(("content_type", "body", "message"),
                         [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_messages_are_refused(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(MimeError, match=message) as info:
        parse_message(content_type, body)
    assert isinstance(info.value, TransportError)


def test_part_and_header_limits() -> None:
    parts = [ROOT] + [attachment_part(f"<a{i}@x>") for i in range(8)]
    with pytest.raises(MimeError, match="more than 8 parts"):
        parse_message(MP, multipart(*parts))
    assert len(parse_message(MP, multipart(*parts[:8])).attachments) == 7
    many = attachment_part(extra=[f"X-H{i}: v" for i in range(40)])
    with pytest.raises(MimeError, match="more than 32 headers"):
        parse_message(MP, multipart(ROOT, many))
    with pytest.raises(MimeError, match="exceeds the limit"):
        parse_message(MP, GOOD, limits=MimeLimits(max_body_bytes=len(GOOD) - 1))
    with pytest.raises(MimeError, match="exceeds the limit"):
        parse_message(MP, io.BytesIO(GOOD), limits=MimeLimits(max_body_bytes=len(GOOD) - 1))
    with pytest.raises(MimeError, match="boundary not found"):
        parse_message(MP, b"x" * 5000 + GOOD)
