"""The documents a sender puts in a package, and the rules they must pass before anything is built.

A mailbox rejects a package with a KLIENT `feil` long after it was sent when a document breaks a
format rule (DIGEST 4.5, 13). Checking here, before signing and encryption, turns that into an
immediate, typed error that names the document and the rule.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import unicodedata
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO, ClassVar

from sdp import xmlparse
from sdp.errors import DocumentError, PackageSizeError, XmlSecurityError

#: "Dokumentpakken kan ikke overstige 30Mb" (DIGEST 4.1). Read as MiB of document content,
#: the stricter reading of an ambiguous text (DIGEST 15 item 13).
DEFAULT_MAX_PACKAGE_BYTES = 30 * 1024 * 1024
#: At most 200 attachments next to the one main document (DIGEST 4.1).
MAX_ATTACHMENTS = 200
#: `Dokument/@href` and `DokumentData/@href` are xsd:string 4..100 characters (sdp-manifest.xsd).
HREF_MIN, HREF_MAX = 4, 100
#: `Dokument/@mime` is xsd:string 1..100 characters (sdp-manifest.xsd).
MIME_MAX = 100
#: `Tittel` is 1..255 characters with a two-character `lang` (sdp-felles.xsd, DIGEST 13).
TITLE_MAX = 255
#: The mailbox HTML sanitiser policy (htmlPolmd, directive maxInputSize).
HTML_MAX_BYTES = 5_000_000

#: Document MIME types the mailboxes display (DIGEST 4.5, Dokumentformat/mimetypes.md).
DOCUMENT_MIME_TYPES: frozenset[str] = frozenset({
    "application/pdf",
    "text/html",
    "application/ehf+xml",
    "text/plain",
    "application/vnd.oasis.opendocument.formula",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/vnd.oasis.opendocument.graphics",
    "image/gif",
    "image/jpeg",
    "image/png",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/octet-stream",  # listed for "zip"
})
#: Extension data files (DIGEST 5.1, the "Utvidelser" rows of mimetypes.md).
EXTENSION_MIME_TYPES: frozenset[str] = frozenset({
    "application/vnd.difi.dpi.bevis+xml",
    "application/vnd.difi.dpi.lenke+xml",
    "application/vnd.difi.dpi.arrangement+xml",
})
#: The EHF invoice MIME type (DIGEST 4.5, ehf.md item 2).
EHF_MIME_TYPE = "application/ehf+xml"
HTML_MIME_TYPE = "text/html"

#: File extension -> MIME type, for `Document.from_path` (the file-type column of mimetypes.md).
MIME_BY_SUFFIX: dict[str, str] = {
    ".pdf": "application/pdf",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".odf": "application/vnd.oasis.opendocument.formula",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".fods": "application/vnd.oasis.opendocument.spreadsheet",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".fodp": "application/vnd.oasis.opendocument.presentation",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".fodg": "application/vnd.oasis.opendocument.graphics",
    ".odg": "application/vnd.oasis.opendocument.graphics",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".zip": "application/octet-stream",
}

# Executables are forbidden whatever MIME type is declared (DIGEST 4.1, Dokumentformat/index.md).
_EXECUTABLE_SUFFIXES = frozenset({
    ".exe", ".com", ".bat", ".cmd", ".msi", ".msp", ".scr", ".pif", ".cpl", ".dll", ".sys",
    ".vbs", ".vbe", ".js", ".jse", ".wsf", ".wsh", ".ps1", ".psm1", ".hta", ".jar", ".class",
    ".sh", ".bash", ".csh", ".ksh", ".command", ".app", ".apk", ".elf", ".bin", ".run", ".so",
    ".dylib", ".deb", ".rpm", ".reg", ".lnk",
})
_EXECUTABLE_MIME_TYPES = frozenset({
    "application/x-msdownload", "application/x-msdos-program", "application/x-ms-installer",
    "application/x-msi", "application/x-executable", "application/x-sharedlib",
    "application/x-mach-binary", "application/x-elf", "application/x-sh", "application/x-csh",
    "application/x-bat", "application/java-archive", "application/x-java-archive",
    "application/java-vm", "application/javascript", "text/javascript",
    "application/vnd.microsoft.portable-executable", "application/x-dosexec",
})

_MIME_SYNTAX = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_LANGUAGE = re.compile(r"[A-Za-z]{2}")
_DRIVE = re.compile(r"[A-Za-z]:")


# --- errors, one per rule so callers and tests can tell them apart ----------------------------


class DocumentRuleError(DocumentError):
    """A document breaks one named pre-flight rule; `rule` says which, `subject` names the file."""

    rule: ClassVar[str] = "document rule"

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        super().__init__(f"{message} [{self.rule}]", subject=subject)


class MissingMainDocumentError(DocumentRuleError):
    """There is no main document (hoveddokument 1..1)."""

    rule = "exactly one main document (DIGEST 4.1)"


class TooManyAttachmentsError(DocumentRuleError):
    """More than 200 attachments."""

    rule = "at most 200 attachments (DIGEST 4.1)"


class DuplicateNameError(DocumentRuleError):
    """Two files of the package would get the same name."""

    rule = "file names are unique in the package (DIGEST 4.1)"


class InvalidNameError(DocumentRuleError):
    """A file name the manifest schema or the container cannot carry."""

    rule = "file name: 4-100 UTF-8 characters, a plain file in the zip root (DIGEST 13)"


class MimeTypeError(DocumentRuleError):
    """A MIME type outside the allowed list, or not a MIME type at all."""

    rule = "allowed MIME types (DIGEST 4.5)"


class EmptyDocumentError(DocumentRuleError):
    """A document or extension file without content."""

    rule = "documents are not empty"


class TitleError(DocumentRuleError):
    """A title or language code the manifest schema does not accept."""

    rule = "tittel 1-255 characters, lang 2 letters (DIGEST 4.2)"


class ExecutableDocumentError(DocumentRuleError):
    """An executable file, which SDP never carries."""

    rule = "executable files are forbidden (DIGEST 4.1)"


class EhfError(DocumentRuleError):
    """An EHF invoice that breaks ehf.md: not the main document, more than one, not an invoice."""

    rule = "EHF rules (DIGEST 4.5, ehf.md)"


class StreamConsumedError(DocumentError):
    """A document read from a one-shot stream was asked for its content a second time."""


@dataclass(frozen=True)
class HtmlViolation:
    """One broken HTML rule: which rule, where, and what was found."""

    rule: str
    line: int
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.rule}: {self.detail}"


class HtmlRuleError(DocumentRuleError):
    """An HTML document the mailbox would reject (DIGEST 4.5, html.md); lists every violation."""

    rule = "HTML mailbox rules (DIGEST 4.5, html.md)"

    def __init__(self, violations: list[HtmlViolation], *, subject: str | None = None) -> None:
        self.violations = violations
        shown = "; ".join(str(v) for v in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"{shown}{more}", subject=subject)


# --- the input model ----------------------------------------------------------------------------

#: Where a document's bytes come from: a file path, the bytes themselves, or a readable stream.
Content = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


@dataclass(frozen=True)
class ExtensionData:
    """An extension file (lenke, bevis, arrangement) enriching one document (DIGEST 5.1).

    Carried as-is; the manifest layer validates it against the extension schema.
    """

    content: bytes = field(repr=False)
    href: str
    mime_type: str


@dataclass(eq=False)
class Document:
    """One document of the package: its bytes, its file name in the zip and its manifest data.

    `content` may be a one-shot stream of unknown length; it is then read exactly once, by the
    container writer (or by the pre-flight check for HTML and EHF, which must look inside).
    `size` optionally declares a stream's length so the size limit can be checked early.
    """

    content: Content = field(repr=False)  # may be 30 MiB
    href: str
    mime_type: str
    #: May hold personal data (DIGEST 4.2), so it stays out of repr and logs.
    title: str | None = field(default=None, repr=False)
    language: str = "NO"
    data: ExtensionData | None = None
    size: int | None = None
    _consumed: bool = field(default=False, init=False, repr=False)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, href: str | None = None,
                  mime_type: str | None = None, title: str | None = None,
                  language: str = "NO", data: ExtensionData | None = None) -> Document:
        """A document read from disk; file name and MIME type default from the path."""
        p = Path(path)
        name = href if href is not None else p.name
        if mime_type is None:
            mime_type = MIME_BY_SUFFIX.get(p.suffix.lower())
            if mime_type is None:
                raise MimeTypeError(f"cannot tell the MIME type from the suffix {p.suffix!r}; "
                                    "pass mime_type", subject=name)
        return cls(p, name, mime_type, title, language, data)

    @property
    def is_stream(self) -> bool:
        """True when the content is a caller's stream that can be read only once."""
        return not isinstance(self.content, str | os.PathLike | bytes | bytearray | memoryview)

    def known_size(self) -> int | None:
        """The content length in bytes when it can be known without reading; else None."""
        content = self.content
        if isinstance(content, bytes | bytearray | memoryview):
            return len(content)
        if isinstance(content, str | os.PathLike):
            try:
                return os.stat(content).st_size
            except OSError as exc:
                raise DocumentError(f"cannot read the file: {exc}", subject=self.href) from exc
        if self.size is not None:
            return self.size
        try:
            if content.seekable():
                pos = content.tell()
                end = content.seek(0, io.SEEK_END)
                content.seek(pos)
                return end - pos
        except (OSError, ValueError):
            return None
        return None

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """Yield a binary stream of the content; a caller's stream is handed out only once."""
        content = self.content
        if isinstance(content, bytes | bytearray | memoryview):
            yield io.BytesIO(content)
        elif isinstance(content, str | os.PathLike):
            try:
                f = open(content, "rb")
            except OSError as exc:
                raise DocumentError(f"cannot read the file: {exc}", subject=self.href) from exc
            with f:
                yield f
        else:
            if self._consumed:
                raise StreamConsumedError("the content stream was already read", subject=self.href)
            self._consumed = True
            yield content

    def head(self, n: int) -> bytes | None:
        """The first `n` bytes when they can be read without consuming a stream; else None."""
        if self.is_stream:
            return None
        with self.open() as f:
            return f.read(n)

    def read_all(self, limit: int) -> bytes | None:
        """Read the whole content and keep it for later readers; None if over `limit` bytes.

        Used for HTML and EHF, which must be inspected before the writer streams them. A stream
        longer than `limit` is left consumed: the document fails its check anyway.
        """
        content = self.content
        if isinstance(content, bytes):
            return content if len(content) <= limit else None
        with self.open() as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            return None
        if self.is_stream:
            # The stream is gone; keep its bytes so the writer can still read them once.
            self.content = data
            self.size = len(data)
            self._consumed = False
        return data


# --- pre-flight checks --------------------------------------------------------------------------


def check_documents(main: Document, attachments: Sequence[Document], *,
                    allow_other_mime_types: bool = False,
                    max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES) -> None:
    """Raise the first rule a set of documents breaks, before any signing or encryption.

    HTML and EHF streams are read into memory here (they must be inspected); other streams
    are left unread, so their emptiness and size are checked again by the container writer.
    """
    if not isinstance(main, Document):
        raise MissingMainDocumentError("a package needs a main document (hoveddokument)")
    if len(attachments) > MAX_ATTACHMENTS:
        raise TooManyAttachmentsError(f"{len(attachments)} attachments given")
    documents = [main, *attachments]
    _check_names(documents)
    for doc in documents:
        _check_mime(doc, allow_other_mime_types)
        _check_title(doc)
        _check_executable(doc)
    _check_sizes(documents, max_package_bytes)
    _check_ehf(main, attachments)
    for doc in documents:
        if doc.mime_type.lower() == HTML_MIME_TYPE:
            data = doc.read_all(HTML_MAX_BYTES)
            if data is None:
                raise HtmlRuleError([HtmlViolation("too-large", 0, HTML_RULES["too-large"])],
                                    subject=doc.href)
            check_html(data, subject=doc.href)


def check_name(name: str) -> None:
    """Raise `InvalidNameError` unless `name` can be a document's file name in the package."""
    if not HREF_MIN <= len(name) <= HREF_MAX:
        raise InvalidNameError(f"{len(name)} characters, the schema allows "
                               f"{HREF_MIN}-{HREF_MAX}", subject=name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidNameError("not encodable as UTF-8", subject=repr(name)) from exc
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidNameError("contains control characters", subject=repr(name))
    if "/" in name or "\\" in name:
        raise InvalidNameError("contains a path separator; documents sit in the zip root "
                               "(DIGEST 4.1)", subject=name)
    if _DRIVE.match(name):
        raise InvalidNameError("starts like a drive letter", subject=name)
    if name.strip() != name:
        raise InvalidNameError("starts or ends with white space", subject=name)
    # manifest.xml and META-INF/ belong to the container itself; an ASiC `mimetype` entry is
    # treated by readers as unsigned, so a document of that name would escape the signature.
    if name.casefold() in {"manifest.xml", "meta-inf", "mimetype"}:
        raise InvalidNameError("is reserved for the container", subject=name)


def _name_key(name: str) -> str:
    # Names that differ only in case or Unicode normalisation collide when the recipient saves
    # them to a case-insensitive or normalising file system.
    return unicodedata.normalize("NFC", name).casefold()


def _check_names(documents: Sequence[Document]) -> None:
    seen: dict[str, str] = {}
    for doc in documents:
        names = [doc.href] + ([doc.data.href] if doc.data is not None else [])
        for name in names:
            check_name(name)
            key = _name_key(name)
            if key in seen:
                raise DuplicateNameError(f"used twice (also as {seen[key]!r})", subject=name)
            seen[key] = name


def _check_mime_syntax(mime: str, subject: str) -> None:
    if not 1 <= len(mime) <= MIME_MAX or not _MIME_SYNTAX.fullmatch(mime):
        raise MimeTypeError(f"{mime!r} is not a type/subtype MIME type of at most {MIME_MAX} "
                            "characters", subject=subject)


def _check_mime(doc: Document, allow_other: bool) -> None:
    _check_mime_syntax(doc.mime_type, doc.href)
    if not allow_other and doc.mime_type.lower() not in DOCUMENT_MIME_TYPES:
        raise MimeTypeError(f"{doc.mime_type!r} is not on the list the mailboxes display; pass "
                            "allow_other_mime_types=True to send it anyway", subject=doc.href)
    if doc.data is not None:
        ext = doc.data
        _check_mime_syntax(ext.mime_type, ext.href)
        if not allow_other and ext.mime_type.lower() not in EXTENSION_MIME_TYPES:
            raise MimeTypeError(f"{ext.mime_type!r} is not an extension MIME type (DIGEST 5.1)",
                                subject=ext.href)
        if not ext.content:
            raise EmptyDocumentError("the extension data file is empty", subject=ext.href)


def _check_title(doc: Document) -> None:
    if doc.title is not None:
        if not 1 <= len(doc.title) <= TITLE_MAX:
            raise TitleError(f"the title has {len(doc.title)} characters", subject=doc.href)
        if any(not _xml_char(ch) for ch in doc.title):
            raise TitleError("the title contains characters XML cannot carry", subject=doc.href)
    if not _LANGUAGE.fullmatch(doc.language):
        raise TitleError(f"language {doc.language!r} is not a two-letter code",
                         subject=doc.href)


def _xml_char(ch: str) -> bool:
    c = ord(ch)
    return c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or c >= 0x10000


def _check_executable(doc: Document) -> None:
    suffix = Path(doc.href).suffix.lower()
    if suffix in _EXECUTABLE_SUFFIXES:
        raise ExecutableDocumentError(f"the suffix {suffix} names an executable", subject=doc.href)
    if doc.mime_type.lower() in _EXECUTABLE_MIME_TYPES:
        raise ExecutableDocumentError(f"{doc.mime_type} is an executable type", subject=doc.href)
    head = doc.head(4096)
    if head is not None and _looks_executable(head):
        raise ExecutableDocumentError("the content is a native executable", subject=doc.href)


def _looks_executable(head: bytes) -> bool:
    if head.startswith((b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf",
                        b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")):
        return True
    if head.startswith(b"MZ") and len(head) >= 0x40:
        offset = int.from_bytes(head[0x3C:0x40], "little")
        return head[offset:offset + 4] == b"PE\0\0"
    return False


def _check_sizes(documents: Sequence[Document], limit: int) -> None:
    total = 0
    for doc in documents:
        size = doc.known_size()
        if size == 0:
            raise EmptyDocumentError("the document is empty", subject=doc.href)
        if size is not None:
            total += size
            if size > limit:
                raise PackageSizeError(f"{size} bytes alone exceed the package limit of "
                                       f"{limit} bytes", subject=doc.href)
        if doc.data is not None:
            total += len(doc.data.content)
        if total > limit:
            raise PackageSizeError(f"the documents up to this one add up to {total} bytes, over "
                                   f"the package limit of {limit} bytes", subject=doc.href)


_UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"


def _check_ehf(main: Document, attachments: Sequence[Document]) -> None:
    ehf = [d for d in (main, *attachments) if d.mime_type.lower() == EHF_MIME_TYPE]
    if len(ehf) > 1:
        raise EhfError(f"{len(ehf)} EHF files; at most one per consignment (ehf.md item 4)",
                       subject=ehf[1].href)
    for doc in attachments:
        if doc.mime_type.lower() == EHF_MIME_TYPE:
            raise EhfError("an EHF invoice must be the main document (ehf.md item 3)",
                           subject=doc.href)
    if ehf:
        _check_ehf_content(main)


def _check_ehf_content(doc: Document) -> None:
    data = doc.read_all(xmlparse.MAX_XML_BYTES)
    if data is None:
        raise EhfError(f"larger than the {xmlparse.MAX_XML_BYTES} bytes an XML document may "
                       "have", subject=doc.href)
    try:
        root = xmlparse.parse(data, what=doc.href)
    except XmlSecurityError as exc:
        raise EhfError(f"not acceptable XML: {exc}", subject=doc.href) from exc
    local = root.tag.split("}")[-1] if isinstance(root.tag, str) else ""
    if local != "Invoice":
        raise EhfError(f"root element {local!r}: only invoices are supported, not credit notes "
                       "(ehf.md item 1)", subject=doc.href)
    for node in root.iter():
        if isinstance(node.tag, str) and node.tag.endswith("}EmbeddedDocumentBinaryObject"):
            raise EhfError("embedded attachments are not allowed; add them as ordinary "
                           "attachments (ehf.md item 6)", subject=doc.href)


# --- HTML (DIGEST 4.5, forretningslag/Dokumentformat/html.md and the htmlPolmd policy) --------

HTML_RULES: dict[str, str] = {
    "too-large": "larger than the 5 000 000 bytes the mailbox sanitiser accepts (htmlPolmd)",
    "script": "no JavaScript (html.md items 1 and 5)",
    "event-handler": "no JavaScript event handler attributes (html.md items 1 and 5)",
    "javascript-url": "no javascript: URLs (html.md items 1 and 5)",
    "css-script": "no script in CSS: expression(), behavior, -moz-binding (html.md item 1)",
    "external-reference": "no references to external content (html.md item 1)",
    "image-data-url": "images must be inline data:image/...;base64 URLs (html.md item 3)",
    "image-src-multiline": "an img src may not span several lines (html.md item 3)",
    "form": "no forms (html.md item 4)",
    "plugin": "no Flash, Java or other plug-ins (html.md item 5)",
    "frame": "no frames or iframes: they load external content (html.md item 1)",
    "meta-http-equiv": "meta http-equiv only as Content-Type (htmlPolmd)",
    "hr-align": "hr align is not allowed (html.md item 6)",
    "empty-td": "td elements may not be empty (html.md item 7)",
    "link-target": 'links need target="_blank" to be clickable (html.md item 2)',
    "link-url": "links only to http(s), ftp, mailto or relative URLs (htmlPolmd)",
}

_FORM_TAGS = frozenset({"form", "input", "button", "select", "textarea", "option", "optgroup",
                        "datalist", "keygen", "output"})
_PLUGIN_TAGS = frozenset({"object", "embed", "applet", "param"})
_FRAME_TAGS = frozenset({"iframe", "frame", "frameset"})
_EXTERNAL_TAGS = frozenset({"link", "base", "portal"})
#: Attributes through which a browser fetches something by itself.
_FETCH_ATTRS = frozenset({"src", "srcset", "background", "poster", "action", "formaction",
                          "href", "xlink:href", "lowsrc", "dynsrc", "data", "codebase",
                          "manifest", "ping", "archive", "profile"})
_LINK_TAGS = frozenset({"a", "area"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_IMAGE_DATA_URL = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/\s]*={0,2}", re.IGNORECASE)
_URL_STRIP = re.compile(r"[\t\n\r]")
_CSS_COMMENT = re.compile(r"/\*.*?(\*/|$)", re.DOTALL)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t\r\n\f]?|\\(.)", re.DOTALL)
_CSS_URL = re.compile(r"url\(\s*(?:\"([^\"]*)\"|'([^']*)'|([^)]*?))\s*\)", re.IGNORECASE)
_CSS_SCRIPT = re.compile(r"expression\s*\(|javascript:|vbscript:|behavior\s*:|-moz-binding",
                         re.IGNORECASE)
_CHARSET = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_ASCII_SPACE = " \t\n\r\f"


def check_html(data: bytes, *, subject: str = "HTML document") -> None:
    """Raise `HtmlRuleError` listing every mailbox HTML rule `data` breaks.

    This is a pre-flight lint of the sender's own HTML, not a sanitiser: it finds what html.md
    forbids so the mailbox does not reject the consignment later.
    """
    violations = html_violations(data)
    if violations:
        raise HtmlRuleError(violations, subject=subject)


def html_violations(data: bytes) -> list[HtmlViolation]:
    """Every HTML rule `data` breaks, in document order."""
    if len(data) > HTML_MAX_BYTES:
        return [HtmlViolation("too-large", 0, f"{len(data)} bytes")]
    checker = _HtmlChecker()
    checker.feed(_decode_html(data))
    checker.close()
    return checker.violations


def _decode_html(data: bytes) -> str:
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    encoding = "utf-8"
    match = _CHARSET.search(data[:4096])
    if match:
        try:
            encoding = codecs.lookup(match.group(1).decode("ascii")).name
        except LookupError:
            encoding = "utf-8"
    return data.decode(encoding, errors="replace")


def _url_scheme(value: str) -> str | None:
    # Browsers drop tabs and line breaks inside URLs and ignore leading spaces and controls.
    cleaned = _URL_STRIP.sub("", value).lstrip("".join(map(chr, range(0x21))))
    match = _SCHEME.match(cleaned)
    return match.group(1).lower() if match else None


def _css_violations(css: str) -> list[tuple[str, str]]:
    text = _CSS_COMMENT.sub(" ", css)
    text = _CSS_ESCAPE.sub(
        lambda m: chr(min(int(m.group(1), 16), 0x10FFFF) or 0xFFFD) if m.group(1) else m.group(2),
        text)
    found: list[tuple[str, str]] = []
    script = _CSS_SCRIPT.search(text)
    if script:
        found.append(("css-script", script.group(0)))
    if "@import" in text.lower():
        found.append(("external-reference", "CSS @import"))
    for match in _CSS_URL.finditer(text):
        url = next(g for g in match.groups() if g is not None).strip()
        if url.startswith("#"):
            continue
        if not _IMAGE_DATA_URL.fullmatch(url):
            found.append(("external-reference", f"CSS url({url[:60]})"))
    return found


@dataclass
class _Cell:
    is_td: bool
    line: int
    has_content: bool = False


class _HtmlChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.violations: list[HtmlViolation] = []
        # Open table cells and tables, innermost last, to find empty td elements.
        self._cells: list[_Cell | None] = []
        self._style_depth = 0
        self._style_text: list[str] = []

    def _add(self, rule: str, detail: str) -> None:
        self.violations.append(HtmlViolation(rule, self.getpos()[0], detail))

    # -- element and attribute rules

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._track_cells_start(tag)
        if tag == "script":
            self._add("script", "<script>")
        elif tag in _FORM_TAGS:
            self._add("form", f"<{tag}>")
        elif tag in _PLUGIN_TAGS:
            self._add("plugin", f"<{tag}>")
        elif tag in _FRAME_TAGS:
            self._add("frame", f"<{tag}>")
        elif tag in _EXTERNAL_TAGS:
            self._add("external-reference", f"<{tag}>")
        elif tag == "style":
            self._style_depth += 1
        values = {name: value or "" for name, value in attrs}
        if tag == "meta":
            self._check_meta(values)
        if tag == "hr" and "align" in values:
            self._add("hr-align", f'<hr align="{values["align"]}">')
        if tag == "img":
            self._check_img(values)
        if tag in _LINK_TAGS:
            self._check_link(tag, values)
        for name, value in values.items():
            self._check_attribute(tag, name, value)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ("td", "th", "style"):
            self.handle_endtag(tag)

    def _check_attribute(self, tag: str, name: str, value: str) -> None:
        if name.startswith("on"):
            self._add("event-handler", f"<{tag} {name}>")
            return
        if name == "style":
            for rule, detail in _css_violations(value):
                self._add(rule, f"<{tag} style>: {detail}")
            return
        if name not in _FETCH_ATTRS and name not in ("cite", "longdesc"):
            return  # not a URL: title="javascript: a language" is harmless text
        if _url_scheme(value) in ("javascript", "vbscript", "livescript"):
            self._add("javascript-url", f"<{tag} {name}>")
            return
        if name not in _FETCH_ATTRS or (tag == "img" and name == "src"):
            return
        if tag in _LINK_TAGS and name == "href":
            return  # a followed link, not a fetch; checked by _check_link
        stripped = value.strip(_ASCII_SPACE)
        if not stripped or stripped.startswith("#"):
            return
        if name in ("src", "background", "poster") and _IMAGE_DATA_URL.fullmatch(stripped):
            return
        self._add("external-reference", f"<{tag} {name}={stripped[:60]!r}>")

    def _check_img(self, values: dict[str, str]) -> None:
        src = values.get("src")
        if src is None:
            return
        if "\n" in src or "\r" in src:
            self._add("image-src-multiline", "<img src> contains a line break")
        elif not _IMAGE_DATA_URL.fullmatch(src.strip(_ASCII_SPACE)):
            self._add("image-data-url", f"<img src={src[:60]!r}>")

    def _check_link(self, tag: str, values: dict[str, str]) -> None:
        href = values.get("href")
        if href is None:
            return
        stripped = href.strip(_ASCII_SPACE)
        if stripped.startswith("#"):
            return  # a jump inside the document
        scheme = _url_scheme(stripped)
        if scheme in ("javascript", "vbscript", "livescript"):
            return  # reported by _check_attribute
        if scheme is not None and scheme not in ("http", "https", "ftp", "mailto"):
            self._add("link-url", f"<{tag} href={stripped[:60]!r}>")
        if values.get("target") != "_blank":
            self._add("link-target", f"<{tag} href={stripped[:60]!r}> has no target=\"_blank\"")

    def _check_meta(self, values: dict[str, str]) -> None:
        equiv = values.get("http-equiv")
        if equiv is not None and equiv.strip().lower() != "content-type":
            self._add("meta-http-equiv", f'<meta http-equiv="{equiv}">')

    # -- style element content

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._style_depth:
            self._style_depth -= 1
            for rule, detail in _css_violations("".join(self._style_text)):
                self._add(rule, f"<style>: {detail}")
            self._style_text.clear()
        self._track_cells_end(tag)

    def handle_data(self, data: str) -> None:
        if self._style_depth:
            self._style_text.append(data)
        if data.strip(_ASCII_SPACE):  # a non-breaking space counts as content
            self._mark_content()

    def close(self) -> None:
        super().close()
        if self._style_depth:
            for rule, detail in _css_violations("".join(self._style_text)):
                self._add(rule, f"<style>: {detail}")
        while self._cells:
            self._pop_cell()

    # -- empty td (html.md item 7); html.parser does not close cells implicitly, so we do

    def _mark_content(self) -> None:
        if self._cells and self._cells[-1] is not None:
            self._cells[-1].has_content = True

    def _pop_cell(self) -> None:
        cell = self._cells.pop()
        if cell is not None and cell.is_td and not cell.has_content:
            self.violations.append(HtmlViolation("empty-td", cell.line, "<td></td>"))

    def _track_cells_start(self, tag: str) -> None:
        if tag in ("td", "th", "tr"):
            if self._cells and self._cells[-1] is not None:
                self._pop_cell()  # a new cell or row closes the open cell
            if tag != "tr":
                self._cells.append(_Cell(tag == "td", self.getpos()[0]))
            return
        self._mark_content()
        if tag == "table":
            self._cells.append(None)

    def _track_cells_end(self, tag: str) -> None:
        if tag in ("td", "th", "tr"):
            if self._cells and self._cells[-1] is not None:
                self._pop_cell()
        elif tag == "table":
            while self._cells:
                top = self._cells[-1]
                self._pop_cell()
                if top is None:
                    break


# --- zip compression per MIME type --------------------------------------------------------------

#: Formats that are compressed already; deflating them again costs time and saves little.
_STORED_MIME_TYPES = frozenset({
    "application/pdf",
    "application/zip",
    "application/octet-stream",  # the list's "zip" row
    "application/gzip",
    "application/vnd.oasis.opendocument.formula",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/vnd.oasis.opendocument.graphics",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
})


def compression_for(mime_type: str) -> int:
    """`zipfile.ZIP_STORED` for already-compressed formats, `ZIP_DEFLATED` for the rest.

    Text, HTML, XML and the legacy .doc format shrink well; PDF, images, OOXML/ODF (which are
    zip files) and zip do not, so storing them makes packing fast at almost no size cost.
    """
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime in _STORED_MIME_TYPES or mime.startswith(("image/", "audio/", "video/")):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


__all__ = [
    "DEFAULT_MAX_PACKAGE_BYTES", "DOCUMENT_MIME_TYPES", "EHF_MIME_TYPE", "EXTENSION_MIME_TYPES",
    "HTML_RULES", "MAX_ATTACHMENTS", "Content", "Document", "DocumentRuleError",
    "DuplicateNameError", "EhfError", "EmptyDocumentError", "ExecutableDocumentError",
    "ExtensionData", "HtmlRuleError", "HtmlViolation", "InvalidNameError",
    "MimeTypeError", "MissingMainDocumentError", "StreamConsumedError", "TitleError",
    "TooManyAttachmentsError", "check_documents", "check_html", "check_name",
    "compression_for", "html_violations",
]
