"""Pre-flight rules for documents (DIGEST 4.1, 4.2, 4.5, 13) and the zip compression choice."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from sdp.errors import DocumentError, PackageSizeError
from sdp.package.documents import (
    DOCUMENT_MIME_TYPES,
    EXTENSION_MIME_TYPES,
    HTML_MAX_BYTES,
    HTML_RULES,
    Document,
    DuplicateNameError,
    EhfError,
    EmptyDocumentError,
    ExecutableDocumentError,
    ExtensionData,
    HtmlRuleError,
    InvalidNameError,
    MimeTypeError,
    MissingMainDocumentError,
    StreamConsumedError,
    TitleError,
    TooManyAttachmentsError,
    check_documents,
    check_html,
    compression_for,
    html_violations,
)
from tests.conftest import SPEC

PDF = b"%PDF-1.4\n% test\n"
LENKE = b'<lenke xmlns="http://begrep.difi.no/sdp/utvidelser/lenke"><url>https://x.no</url></lenke>'
INVOICE = (b'<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2" '
           b'xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">'
           b"<cbc:ID>1</cbc:ID></Invoice>")


def pdf(name: str = "vedtak.pdf", **kw: object) -> Document:
    return Document(PDF, name, "application/pdf", **kw)  # type: ignore[arg-type]


class _OneShot(io.RawIOBase):
    """A non-seekable stream of unknown length, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def OneShot(data: bytes) -> BinaryIO:
    """Typed as the BinaryIO the API takes; a RawIOBase is one at run time."""
    return cast(BinaryIO, _OneShot(data))


# --- the allowed list, read from the spec itself ---------------------------------------------


def test_mime_list_matches_spec_table() -> None:
    table = (SPEC / "forretningslag/Dokumentformat/mimetypes.md").read_text(encoding="utf-8")
    listed = {cell.strip().strip("[").split("]")[0]
              for line in table.splitlines() if line.startswith("|")
              for cell in line.split("|")[2:3] if "/" in cell}
    assert listed == DOCUMENT_MIME_TYPES | EXTENSION_MIME_TYPES


def test_valid_package_passes(tmp_path: Path) -> None:
    path = tmp_path / "info.txt"
    path.write_text("hei", encoding="utf-8")
    main = pdf(title="Vedtak", data=ExtensionData(LENKE, "lenke.xml",
                                                  "application/vnd.difi.dpi.lenke+xml"))
    html = Document(b'<p>Hei <a href="https://x.no" target="_blank">her</a></p>', "brev.html",
                    "text/html")
    check_documents(main, [Document.from_path(path), html, pdf("blåbær-vedlegg.pdf")])


# --- counts ---------------------------------------------------------------------------------


def test_no_main_document() -> None:
    with pytest.raises(MissingMainDocumentError, match="main document"):
        check_documents(None, [pdf()])  # type: ignore[arg-type]


def test_more_than_200_attachments() -> None:
    attachments = [pdf(f"v{i:03}.pdf") for i in range(201)]
    with pytest.raises(TooManyAttachmentsError, match="201"):
        check_documents(pdf(), attachments)
    check_documents(pdf(), attachments[:200])  # exactly 200 is fine


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["vedtak.pdf", "VEDTAK.pdf"], ids=["same", "case-only"])
def test_duplicate_document_names(other: str) -> None:
    with pytest.raises(DuplicateNameError) as info:
        check_documents(pdf(), [pdf(other)])
    assert info.value.subject == other


def test_duplicate_name_across_extension_data() -> None:
    main = pdf(data=ExtensionData(LENKE, "lenke.xml", "application/vnd.difi.dpi.lenke+xml"))
    clash = Document(b"x", "lenke.xml", "text/plain")
    with pytest.raises(DuplicateNameError, match=r"lenke\.xml"):
        check_documents(main, [clash])


def test_duplicate_name_after_unicode_normalisation() -> None:
    with pytest.raises(DuplicateNameError):
        check_documents(pdf("bl\u00e5.pdf"), [pdf("bla\u030a.pdf")])


@pytest.mark.parametrize("name", [
    pytest.param("a.pd", id="4-chars-ok"),
    pytest.param("x" * 96 + ".pdf", id="100-chars-ok"),
    pytest.param("søknad æøå.pdf", id="utf8-ok"),
])
def test_valid_names(name: str) -> None:
    check_documents(pdf(name), [])


@pytest.mark.parametrize(("name", "fragment"), [
    pytest.param("a.b", "3 characters", id="too-short"),
    pytest.param("x" * 97 + ".pdf", "101 characters", id="too-long"),
    pytest.param("dir/vedtak.pdf", "path separator", id="slash"),
    pytest.param("dir\\vedtak.pdf", "path separator", id="backslash"),
    pytest.param("META-INF/x.pdf", "path separator", id="meta-inf-folder"),
    pytest.param("manifest.xml", "reserved", id="manifest"),
    pytest.param("Manifest.XML", "reserved", id="manifest-case"),
    pytest.param("META-INF", "reserved", id="meta-inf"),
    pytest.param("mimetype", "reserved", id="mimetype"),
    pytest.param("tab\there.pdf", "control", id="control-char"),
    pytest.param("nul\x00.pdf", "control", id="nul"),
    pytest.param("C:vedtak.pdf", "drive", id="drive-letter"),
    pytest.param(" vedtak.pdf", "white space", id="leading-space"),
    pytest.param("\udc80bad.pdf", "UTF-8", id="lone-surrogate"),
])
def test_invalid_names(name: str, fragment: str) -> None:
    with pytest.raises(InvalidNameError, match=fragment):
        check_documents(pdf(name), [])


def test_invalid_extension_data_name() -> None:
    main = pdf(data=ExtensionData(LENKE, "../lenke.xml", "application/vnd.difi.dpi.lenke+xml"))
    with pytest.raises(InvalidNameError, match="separator"):
        check_documents(main, [])


# --- MIME types -----------------------------------------------------------------------------


def test_mime_outside_list() -> None:
    doc = Document(b"x", "data.csv", "text/csv")
    with pytest.raises(MimeTypeError, match="text/csv") as info:
        check_documents(pdf(), [doc])
    assert info.value.subject == "data.csv"
    check_documents(pdf(), [doc], allow_other_mime_types=True)


@pytest.mark.parametrize("mime", ["pdf", "", "text/", "a/b c", "x/" + "y" * 99],
                         ids=["no-slash", "empty", "no-subtype", "space", "over-100"])
def test_mime_syntax_even_with_opt_in(mime: str) -> None:
    with pytest.raises(MimeTypeError):
        check_documents(Document(PDF, "vedtak.pdf", mime), [], allow_other_mime_types=True)


def test_extension_mime_is_not_a_document_type() -> None:
    doc = Document(LENKE, "lenke.xml", "application/vnd.difi.dpi.lenke+xml")
    with pytest.raises(MimeTypeError):
        check_documents(doc, [])


def test_extension_data_needs_extension_mime() -> None:
    main = pdf(data=ExtensionData(LENKE, "lenke.xml", "application/xml"))
    with pytest.raises(MimeTypeError, match="extension"):
        check_documents(main, [])


def test_from_path_guesses_mime(tmp_path: Path) -> None:
    (tmp_path / "a.docx").write_bytes(b"PK")
    (tmp_path / "a.exe").write_bytes(b"MZ")
    doc = Document.from_path(tmp_path / "a.docx", title="T")
    assert (doc.href, doc.mime_type) == ("a.docx", DOCUMENT_MIME_TYPES_BY_NAME["docx"])
    with pytest.raises(MimeTypeError, match=r"\.exe"):
        Document.from_path(tmp_path / "a.exe")


DOCUMENT_MIME_TYPES_BY_NAME = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


# --- empty and size -------------------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(EmptyDocumentError) as info:
        check_documents(pdf(), [Document(b"", "tom.txt", "text/plain")])
    assert info.value.subject == "tom.txt"


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "tom.pdf").write_bytes(b"")
    with pytest.raises(EmptyDocumentError):
        check_documents(Document.from_path(tmp_path / "tom.pdf"), [])


def test_empty_extension_data() -> None:
    main = pdf(data=ExtensionData(b"", "lenke.xml", "application/vnd.difi.dpi.lenke+xml"))
    with pytest.raises(EmptyDocumentError, match="extension"):
        check_documents(main, [])


def test_single_document_over_limit() -> None:
    big = Document(b"x" * 1001, "stor.txt", "text/plain")
    with pytest.raises(PackageSizeError, match="alone") as info:
        check_documents(pdf(), [big], max_package_bytes=1000)
    assert info.value.subject == "stor.txt"


def test_documents_together_over_limit() -> None:
    docs = [Document(b"x" * 400, f"del{i}.txt", "text/plain") for i in range(3)]
    with pytest.raises(PackageSizeError, match="add up"):
        check_documents(docs[0], docs[1:], max_package_bytes=1000)


def test_stream_with_declared_size_over_limit() -> None:
    doc = Document(OneShot(b"x"), "stor.pdf", "application/pdf", size=5000)
    with pytest.raises(PackageSizeError):
        check_documents(doc, [], max_package_bytes=1000)


def test_seekable_stream_size_is_known() -> None:
    stream = io.BytesIO(b"abc" * 10)
    stream.seek(3)
    assert Document(stream, "s.pdf", "application/pdf").known_size() == 27
    assert Document(OneShot(b"abc"), "s.pdf", "application/pdf").known_size() is None


def test_stream_is_read_once() -> None:
    doc = Document(OneShot(b"abc"), "s.pdf", "application/pdf")
    with doc.open() as f:
        assert f.read() == b"abc"
    with pytest.raises(StreamConsumedError), doc.open():
        pass


# --- titles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "fragment"), [
    pytest.param({"title": "x" * 256}, "256", id="title-too-long"),
    pytest.param({"title": ""}, "0 characters", id="title-empty"),
    pytest.param({"title": "a\x00b"}, "XML", id="title-nul"),
    pytest.param({"language": "NOR"}, "two-letter", id="lang-3"),
    pytest.param({"language": "n1"}, "two-letter", id="lang-digit"),
])
def test_title_rules(kw: dict[str, str], fragment: str) -> None:
    with pytest.raises(TitleError, match=fragment):
        check_documents(pdf(**kw), [])


# --- executables ----------------------------------------------------------------------------


PE = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 16


@pytest.mark.parametrize(("doc"), [
    pytest.param(Document(b"x", "setup.exe", "application/pdf"), id="suffix"),
    pytest.param(Document(b"x", "prog.dat", "application/x-msdownload"), id="mime"),
    pytest.param(Document(b"\x7fELF\x02\x01", "prog.dat", "application/x-data"), id="elf"),
    pytest.param(Document(PE, "prog.dat", "application/x-data"), id="pe"),
])
def test_executables_are_refused_even_with_opt_in(doc: Document) -> None:
    with pytest.raises(ExecutableDocumentError):
        check_documents(pdf(), [doc], allow_other_mime_types=True)


def test_mz_without_pe_header_is_not_executable() -> None:
    check_documents(Document(b"MZ is a text" + b" " * 80, "mz.txt", "text/plain"), [])


# --- EHF ------------------------------------------------------------------------------------


def ehf(content: bytes = INVOICE, name: str = "faktura.xml") -> Document:
    return Document(content, name, "application/ehf+xml")


def test_ehf_as_main_document_passes() -> None:
    check_documents(ehf(), [pdf()])


def test_ehf_as_attachment() -> None:
    with pytest.raises(EhfError, match="main document") as info:
        check_documents(pdf(), [ehf()])
    assert info.value.subject == "faktura.xml"


def test_more_than_one_ehf() -> None:
    with pytest.raises(EhfError, match="at most one"):
        check_documents(ehf(), [ehf(name="faktura2.xml")])


def test_ehf_credit_note() -> None:
    note = INVOICE.replace(b"Invoice", b"CreditNote")
    with pytest.raises(EhfError, match="credit notes"):
        check_documents(ehf(note), [])


def test_ehf_embedded_attachment() -> None:
    embedded = INVOICE.replace(b"</Invoice>", b"<cbc:EmbeddedDocumentBinaryObject mimeCode="
                               b'"application/pdf">JVBERg==</cbc:EmbeddedDocumentBinaryObject>'
                               b"</Invoice>")
    with pytest.raises(EhfError, match="embedded"):
        check_documents(ehf(embedded), [])


def test_ehf_not_xml() -> None:
    with pytest.raises(EhfError, match="XML"):
        check_documents(ehf(b"<Invoice>"), [])


def test_ehf_stream_is_inspected_and_kept() -> None:
    doc = Document(OneShot(INVOICE), "faktura.xml", "application/ehf+xml")
    check_documents(doc, [])
    with doc.open() as f:
        assert f.read() == INVOICE


# --- HTML -----------------------------------------------------------------------------------

IMG = "data:image/png;base64,iVBORw0KGgo="

HTML_CASES = [
    ("script", "<p>x</p><script>alert(1)</script>", "script"),
    ("svg-script", "<svg><script>alert(1)</script></svg>", "script"),
    ("onclick", '<p onclick="x()">x</p>', "event-handler"),
    ("onload-body", '<body onload="x()"><p>x</p></body>', "event-handler"),
    ("js-href", '<a href="javascript:alert(1)" target="_blank">x</a>', "javascript-url"),
    ("js-href-obfuscated", '<a href="jav&#x09;ascript:x()" target="_blank">x</a>',
     "javascript-url"),
    ("img-external", '<img src="https://cdn.example/x.png">', "image-data-url"),
    ("img-relative", '<img src="x.png">', "image-data-url"),
    ("img-svg-data", '<img src="data:image/svg+xml;base64,PHN2Zz4=">', "image-data-url"),
    ("img-multiline", '<img src="data:image/png;base64,iVBO\nRw0KGgo=">', "image-src-multiline"),
    ("style-url", '<p style="background: url(https://x.no/a.png)">x</p>', "external-reference"),
    ("style-url-escaped", '<p style="background: u\\72l(//x.no/a.png)">x</p>',
     "external-reference"),
    ("style-element-import", "<style>@import 'https://x.no/a.css';</style>",
     "external-reference"),
    ("style-element-url", "<style>body { background: url('a.png') }</style>",
     "external-reference"),
    ("css-expression", '<p style="width: expression(alert(1))">x</p>', "css-script"),
    ("link-stylesheet", '<link rel="stylesheet" href="https://x.no/a.css">',
     "external-reference"),
    ("base", '<base href="https://x.no/">', "external-reference"),
    ("td-background", '<table><tr><td background="https://x.no/a.png">x</td></tr></table>',
     "external-reference"),
    ("video-src", '<video src="https://x.no/a.mp4"></video>', "external-reference"),
    ("form", '<form action="https://x.no"><p>x</p></form>', "form"),
    ("input", '<input name="x">', "form"),
    ("iframe", '<iframe src="https://x.no"></iframe>', "frame"),
    ("frameset", "<frameset><frame></frameset>", "frame"),
    ("object", '<object data="a.swf"></object>', "plugin"),
    ("embed", '<embed src="a.swf">', "plugin"),
    ("applet", '<applet code="A.class"></applet>', "plugin"),
    ("meta-refresh", '<meta http-equiv="refresh" content="0;url=https://x.no">',
     "meta-http-equiv"),
    ("hr-align", '<hr align="left">', "hr-align"),
    ("empty-td", "<table><tr><td></td><td>x</td></tr></table>", "empty-td"),
    ("blank-td", "<table><tr><td>  \n </td></tr></table>", "empty-td"),
    ("unclosed-empty-td", "<table><tr><td><td>x</table>", "empty-td"),
    ("link-no-target", '<a href="https://x.no">x</a>', "link-target"),
    ("link-wrong-target", '<a href="https://x.no" target="_self">x</a>', "link-target"),
    ("link-file-scheme", '<a href="file:///etc/passwd" target="_blank">x</a>', "link-url"),
    ("ping", '<a href="https://x.no" target="_blank" ping="https://t.no">x</a>',
     "external-reference"),
]


@pytest.mark.parametrize(("html", "rule"), [pytest.param(h, r, id=i) for i, h, r in HTML_CASES])
def test_html_rule(html: str, rule: str) -> None:
    doc = Document(html.encode(), "brev.html", "text/html")
    with pytest.raises(HtmlRuleError) as info:
        check_documents(doc, [])
    assert rule in {v.rule for v in info.value.violations}
    assert info.value.subject == "brev.html"
    assert rule in str(info.value)


def test_every_html_rule_has_a_case() -> None:
    covered = {rule for _, _, rule in HTML_CASES} | {"too-large"}
    assert covered == set(HTML_RULES)


ACCEPTED_HTML = f"""<!DOCTYPE html>
<html lang="no"><head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<meta name="viewport" content="width=device-width">
<title>Brev</title>
<style type="text/css">body {{ font-family: arial; color: #333 }} .logo {{ background:
url({IMG}) }}</style>
</head><body>
<h1 id="top">Vedtak</h1>
<p style="margin: 0 auto">Se <a href="https://www.nav.no/side" target="_blank">nav.no</a>,
<a href="mailto:post@nav.no" target="_blank">e-post</a> eller <a href="#top">toppen</a>.</p>
<img src="{IMG}" alt="logo" width="100">
<table><tr><th></th><td>&nbsp;</td><td><br></td><td>3</td></tr></table>
<hr><ul><li>punkt</li></ul>
</body></html>"""


def test_html_that_follows_the_rules_passes() -> None:
    assert html_violations(ACCEPTED_HTML.encode()) == []


def test_javascript_in_plain_text_attributes_is_not_a_url() -> None:
    assert html_violations(b'<p title="javascript: a language">x</p>') == []
    assert {v.rule for v in html_violations(b'<img src="javascript:x()">')} == {
        "javascript-url", "image-data-url"}


def test_html_lists_every_violation_with_lines() -> None:
    html = b"<p>ok</p>\n<script>x()</script>\n<form></form>\n<hr align=center>"
    found = [(v.rule, v.line) for v in html_violations(html)]
    assert found == [("script", 2), ("form", 3), ("hr-align", 4)]


def test_html_in_latin1_is_decoded_by_its_charset() -> None:
    html = ('<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
            '<p onclick="x()">bl\u00e5</p>').encode("latin-1")
    assert [v.rule for v in html_violations(html)] == ["event-handler"]


def test_html_too_large() -> None:
    with pytest.raises(HtmlRuleError, match="too-large"):
        check_html(b"<p>" + b"x" * HTML_MAX_BYTES + b"</p>")


def test_html_stream_too_large() -> None:
    doc = Document(OneShot(b"x" * (HTML_MAX_BYTES + 1)), "brev.html", "text/html")
    with pytest.raises(HtmlRuleError, match="too-large"):
        check_documents(doc, [])


def test_html_stream_is_inspected_and_still_readable() -> None:
    html = b'<p>Hei <a href="https://x.no" target="_blank">x</a></p>'
    doc = Document(OneShot(html), "brev.html", "text/html")
    check_documents(doc, [])
    assert doc.known_size() == len(html)
    with doc.open() as f:
        assert f.read() == html


def test_html_rule_errors_are_document_errors() -> None:
    with pytest.raises(DocumentError):
        check_html(b"<script></script>")


# --- compression ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mime", "method"), [
    ("application/pdf", zipfile.ZIP_STORED),
    ("image/png", zipfile.ZIP_STORED),
    ("image/jpeg", zipfile.ZIP_STORED),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     zipfile.ZIP_STORED),
    ("application/vnd.oasis.opendocument.text", zipfile.ZIP_STORED),
    ("application/octet-stream", zipfile.ZIP_STORED),
    ("application/zip", zipfile.ZIP_STORED),
    ("text/plain", zipfile.ZIP_DEFLATED),
    ("text/html", zipfile.ZIP_DEFLATED),
    ("application/xml", zipfile.ZIP_DEFLATED),
    ("application/ehf+xml", zipfile.ZIP_DEFLATED),
    ("application/vnd.difi.dpi.lenke+xml", zipfile.ZIP_DEFLATED),
    ("application/msword", zipfile.ZIP_DEFLATED),
    ("Application/PDF", zipfile.ZIP_STORED),
])
def test_compression_for(mime: str, method: int) -> None:
    assert compression_for(mime) == method


def test_repr_leaks_neither_content_nor_title() -> None:
    text = repr(pdf(title="Vedtak om barnevern for Ola"))
    assert "vedtak.pdf" in text
    assert "barnevern" not in text and "PDF-1.4" not in text
