"""Hostile input, driven through the public entry points a network peer reaches.

One table (`CASES`) of everything a peer (a sender talking to the broker, a broker answering
the client, a package opened by a provider) might send to break us: XML bombs and external
entities, SOAP signature wrapping, forbidden algorithms, bad timestamps, broken MIME, hostile
CMS and zip containers, and receipts that match nothing we sent. For each case the test asserts

(a) the typed error named in the table (a subclass of `sdp.errors.SdpError`), or for the
    cases that are not errors (an orphan receipt, a manifest disagreeing with the business
    message) the documented outcome;
(b) that it ends within `TIME_LIMIT` seconds (a case still running after `HANG_LIMIT` is a hang);
(c) bounded memory: growth of the process's peak RSS below `RSS_LIMIT`, and for the bombs
    (pure calls, run a second time for this) a tracemalloc peak below `TRACE_LIMIT`;
(d) for the store and outbox cases, nothing half-stored: the store's state is the expected one
    and `store.check()` finds nothing.

`markdown_table()` renders the table for SECURITY.md.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import io
import re
import resource
import socket
import struct
import threading
import time
import tracemalloc
import uuid
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from lxml import etree

import sdp
from sdp import bindings, devpki, ebms, mime, server, xmlparse
from sdp import wssecurity as wss
from sdp import xmldsig as ds
from sdp.broker.core import Broker
from sdp.client import Prepared, SdpClient, TransportReceiptError
from sdp.consignment import Forsendelse, digital_post_info
from sdp.environment import Environment
from sdp.errors import (
    CertificateChainError,
    CmsError,
    DecryptionError,
    DigestMismatchError,
    DuplicateEntryError,
    ExpansionLimitError,
    MimeError,
    NotForRecipientError,
    PackageError,
    ProtocolError,
    ReferenceMismatchError,
    SdpError,
    UnsafeEntryError,
    UnsupportedAlgorithmError,
    XmlSecurityError,
)
from sdp.message import SignerIdentityError, build_digital_post_sbd, receipt_sbd, verify_sbd
from sdp.outbox import Outbox, pull_receipts
from sdp.package import cms, xades
from sdp.package.asice import ReadLimits
from sdp.package.documents import Document
from sdp.package.dokumentpakke import (
    ManifestMismatchError,
    build_package,
    open_container,
    open_package,
)
from sdp.package.entries import SignedEntry
from sdp.parties import avsender, mottaker
from sdp.store import RecipientProtection, SqliteStore, State
from sdp.transport import RetryPolicy, Timeouts
from sdp.xmldsig import AlgorithmNotAllowedError
from tests.conftest import MAILBOX_ORGNR, MF_ORGNR, PROCESSOR_ORGNR, SENDER_ORGNR
from tests.loopback import LoopbackBroker, serve

#: Every hostile input must be refused (or settled) within this many seconds.
TIME_LIMIT = 5.0
#: A case still running after this long is reported as a hang (the worker thread is abandoned).
HANG_LIMIT = 15.0
#: Growth of the process's peak resident set allowed per case (libxml2, zlib, OpenSSL memory
#: is invisible to tracemalloc).
RSS_LIMIT = 128 * 1024 * 1024
#: tracemalloc peak allowed for the bomb cases (Python-side allocations while refusing).
TRACE_LIMIT = 48 * 1024 * 1024

SOAP = wss.SOAP12_NS
EB = wss.EB_NS
NS = {"env": SOAP, "eb": EB, "wsse": ds.WSSE_NS, "wsu": ds.WSU_NS, "ds": ds.DS_NS}
WSU_ID = f"{{{ds.WSU_NS}}}Id"
SOAP_CID = "soap-part@hostile.test"
BOUNDARY = "hostile_boundary_7f3a"


# --- the case table ---------------------------------------------------------------------------


Scenario = Callable[["World"], "Callable[[], object] | Generator[Callable[[], object], Any, None]"]


@dataclass(frozen=True)
class Case:
    """One hostile input: what it is, which public entry point refuses it, and how."""

    id: str
    what: str
    refused_by: str
    #: The typed error expected; None when the input is not an error but is settled safely.
    error: type[SdpError] | None
    scenario: Scenario
    #: An expansion or size attack: also bounded by tracemalloc.
    bomb: bool = False
    #: What happens instead of an error (for `error=None`), as the table says it.
    outcome: str = ""

    @property
    def error_text(self) -> str:
        return self.error.__name__ if self.error is not None else self.outcome


CASES: list[Case] = []


def case(id: str, what: str, refused_by: str, error: type[SdpError] | None, *,
         bomb: bool = False, outcome: str = "") -> Callable[[Scenario], Scenario]:
    """Register a scenario: it returns the hostile call, or yields it and then checks the
    aftermath (the exception, or None, is sent back into the generator)."""
    def register(fn: Scenario) -> Scenario:
        CASES.append(Case(id, what, refused_by, error, fn, bomb, outcome))
        return fn
    return register


def markdown_table() -> str:
    """The case table for SECURITY.md: case, what, refused by, error."""
    rows = ["| case | what | refused by | error |", "|---|---|---|---|"]
    rows += [f"| `{c.id}` | {c.what} | `{c.refused_by}` | "
             + (f"`{c.error_text}` |" if c.error else f"{c.error_text} |") for c in CASES]
    return "\n".join(rows)


# --- the world: identities and one valid consignment to break ---------------------------------


@dataclass
class World:
    sender: devpki.Identity
    mailbox: devpki.Identity
    broker: devpki.Identity
    ca: devpki.Identity
    intermediate: devpki.Identity
    tmp: pytest.TempPathFactory
    prepared: Prepared
    package: bytes
    zip: bytes

    @property
    def trust(self) -> list[x509.Certificate]:
        return [self.ca.certificate]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [self.intermediate.certificate]

    @property
    def environment(self) -> Environment:
        return Environment.custom("http://127.0.0.1:9/unused",
                                  [self.ca.certificate, self.intermediate.certificate])

    # building blocks, each valid until a case breaks it

    def envelope(self, *, now: dt.datetime | None = None,
                 signer: devpki.Identity | None = None, sbd_xml: bytes | None = None,
                 fingerprint: bytes | None = None) -> etree._Element:
        """The signed SOAP envelope of the prepared consignment, as the client sends it."""
        p = self.prepared
        now = now or dt.datetime.now(dt.UTC)
        messaging = ebms.user_message(
            message_id=p.message_id, timestamp=now, from_orgnr=p.from_orgnr, to_orgnr=MF_ORGNR,
            action=p.action, conversation_id=p.sbd_instance_identifier, mpc=p.mpc,
            attachment_cid=p.content_id)
        envelope = ebms.build_envelope(messaging, sbd_xml or p.sbd_xml,
                                       messaging_id=p.messaging_id, body_id=p.body_id)
        wss.sign(envelope, signer or self.sender,
                 attachments={p.content_id: fingerprint or p.fingerprint}, now=now)
        return envelope

    def request(self, envelope: etree._Element | bytes | None = None, *,
                package: bytes | None = None,
                extra: tuple[tuple[str, str | None, bytes], ...] = ()) -> tuple[str, bytes]:
        """Content-Type and body of a multipart/related request with the package attached."""
        if envelope is None:
            envelope = self.envelope()
        data = envelope if isinstance(envelope, bytes) else etree.tostring(
            envelope, xml_declaration=True, encoding="UTF-8")
        parts = [(mime.SOAP_CONTENT_TYPE, SOAP_CID, data),
                 (mime.CMS_CONTENT_TYPE, self.prepared.content_id,
                  self.package if package is None else package), *extra]
        return multipart(parts)

    def verify_request(self, content_type: str, body: bytes) -> server.IncomingUserMessage:
        """The broker's entry: split, then verify everything (DIGEST 14)."""
        return server.verify_user_message(mime.parse_message(content_type, body),
                                          trust=self.trust, intermediates=self.intermediates)

    def verify_envelope(self, envelope: etree._Element,
                        attachments: dict[str, bytes] | None = None) -> wss.WssResult:
        if attachments is None:
            attachments = {self.prepared.content_id: self.package}
        return wss.verify(envelope, attachments=attachments, trust=self.trust,
                          intermediates=self.intermediates)

    def zip_entries(self) -> list[tuple[str, bytes]]:
        with zipfile.ZipFile(io.BytesIO(self.zip)) as z:
            return [(i.filename, z.read(i)) for i in z.infolist()]

    def resign_zip(self, entries: list[tuple[str, bytes]]) -> bytes:
        """A container of `entries` with a fresh, valid signatures.xml over all of them: what a
        sender with a valid certificate can produce."""
        files = [(n, d) for n, d in entries if not n.startswith("META-INF/")]
        signed = [SignedEntry(n, "application/xml" if n.endswith(".xml") else "application/pdf",
                              hashlib.sha256(d).digest()) for n, d in files if n != "mimetype"]
        signature = xades.sign(signed, self.sender, dt.datetime.now(dt.UTC))
        return zip_of([*files, ("META-INF/signatures.xml", signature)])


def forsendelse(mailbox: devpki.Identity, *, orgnr: str = SENDER_ORGNR) -> Forsendelse:
    return Forsendelse(
        avsender=avsender(orgnr),
        hoveddokument=Document(b"%PDF-1.7 hostile test letter", "brev.pdf", "application/pdf",
                               title="Brev"),
        recipient_certificate=mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
        mottaker=mottaker("01043100358", "ola.nordmann#1ABC"),
        digital_post_info=digital_post_info("Brev fra kommunen"))


@pytest.fixture(scope="module")
def world(sender: devpki.Identity, mailbox: devpki.Identity, broker: devpki.Identity,
          ca: devpki.Identity, intermediate: devpki.Identity,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    env = Environment.custom("http://127.0.0.1:9/unused",
                             [ca.certificate, intermediate.certificate])
    with SdpClient(env, sender) as client:
        prepared = client.prepare(forsendelse(mailbox), tmp_path_factory.mktemp("prepared"))
    package = prepared.package_path.read_bytes()
    plain = cms.decrypt(package, mailbox.key, mailbox.certificate)
    return World(sender, mailbox, broker, ca, intermediate, tmp_path_factory, prepared, package,
                 plain)


# --- helpers for building hostile bytes -------------------------------------------------------


def multipart(parts: list[tuple[str, str | None, bytes]], *, boundary: str = BOUNDARY,
              start: str | None = SOAP_CID) -> tuple[str, bytes]:
    chunks: list[bytes] = []
    for content_type, cid, data in parts:
        head = (f"--{boundary}\r\nContent-Type: {content_type}\r\n"
                "Content-Transfer-Encoding: binary\r\n"
                + (f"Content-ID: <{cid}>\r\n" if cid else "") + "\r\n")
        chunks += [head.encode("ascii"), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    content_type = (f'multipart/related; type="{mime.SOAP_MEDIA_TYPE}"; boundary="{boundary}"'
                    + (f'; start="<{start}>"' if start else ""))
    return content_type, b"".join(chunks)


def zip_of(entries: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(out, "w") as z:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                z.writestr(info, data, compress_type=method)
    return out.getvalue()


def patch_declared_size(data: bytes, name: str, size: int) -> bytes:
    """Make the local header and the central directory of `name` declare `size` bytes."""
    buf = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        offset = z.getinfo(name).header_offset
    struct.pack_into("<I", buf, offset + 22, size)  # local header: uncompressed size
    encoded = name.encode()
    for m in re.finditer(re.escape(b"PK\x01\x02"), bytes(buf)):
        start = m.start()
        name_len = struct.unpack_from("<H", buf, start + 28)[0]
        if bytes(buf[start + 46:start + 46 + name_len]) == encoded:
            struct.pack_into("<I", buf, start + 24, size)  # central directory
    return bytes(buf)


def signature_of(root: etree._Element) -> etree._Element:
    found = root.find("env:Header/wsse:Security/ds:Signature", NS)
    assert found is not None
    return found


def resign(root: etree._Element, signer: devpki.Identity) -> None:
    """Recompute SignatureValue after editing SignedInfo: a signer's own hostile output."""
    signature = signature_of(root)
    value = signature.find("ds:SignatureValue", NS)
    assert value is not None
    signature.remove(value)
    ds.add_signature_value(signature, signer.key)


def reference(root: etree._Element, uri: str) -> etree._Element:
    found = signature_of(root).find(f"ds:SignedInfo/ds:Reference[@URI='{uri}']", NS)
    assert found is not None, uri
    return found


def header_of(root: etree._Element) -> etree._Element:
    found = root.find("env:Header", NS)
    assert found is not None
    return found


def body_of(root: etree._Element) -> etree._Element:
    found = root.find("env:Body", NS)
    assert found is not None
    return found


def messaging_of(root: etree._Element) -> etree._Element:
    found = root.find("env:Header/eb:Messaging", NS)
    assert found is not None
    return found


@dataclass
class Listener:
    """A TCP port that records whether anything connected (XXE and external DTD probes)."""

    sock: socket.socket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/evil.dtd"

    def contacted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


def listener() -> Listener:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.setblocking(False)
    return Listener(sock)


# --- XML --------------------------------------------------------------------------------------

LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;")
                                                 * 10) for i in range(1, 10))
          + b"]><lolz>&lol9;</lolz>")
QUADRATIC = (b'<!DOCTYPE r [<!ENTITY a "' + b"A" * 100_000 + b'">]><r>'
             + b"&a;" * 100_000 + b"</r>")


@case("xml-doctype", "a DOCTYPE with an internal subset", "sdp.xmlparse.parse", XmlSecurityError)
def _xml_doctype(w: World) -> Callable[[], object]:
    return lambda: xmlparse.parse(b'<!DOCTYPE r [<!ELEMENT r ANY>]><r/>')


@case("xml-xxe-file", "an external entity reading a local file", "sdp.bindings.from_xml",
      XmlSecurityError)
def _xml_xxe_file(w: World) -> Generator[Callable[[], object], Any, None]:
    doc = b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    exc = yield lambda: bindings.from_xml(doc)
    assert "root:" not in str(exc)  # the file's content never shows up


@case("xml-xxe-network", "an external entity on a URL (SSRF probe)", "sdp.validate",
      XmlSecurityError)
def _xml_xxe_network(w: World) -> Generator[Callable[[], object], Any, None]:
    probe = listener()
    doc = f'<!DOCTYPE r [<!ENTITY x SYSTEM "{probe.url}">]><r>&x;</r>'.encode()
    yield lambda: sdp.validate(doc)
    assert not probe.contacted()
    probe.sock.close()


@case("xml-external-dtd", "a DOCTYPE naming an external DTD on a URL", "sdp.ebms.parse_envelope",
      XmlSecurityError)
def _xml_external_dtd(w: World) -> Generator[Callable[[], object], Any, None]:
    probe = listener()
    doc = f'<!DOCTYPE env:Envelope SYSTEM "{probe.url}"><env:Envelope xmlns:env="{SOAP}"/>'
    yield lambda: ebms.parse_envelope(doc.encode())
    assert not probe.contacted()
    probe.sock.close()


@case("xml-parameter-entity", "an external parameter entity in the internal subset",
      "sdp.xmlparse.parse", XmlSecurityError)
def _xml_parameter_entity(w: World) -> Generator[Callable[[], object], Any, None]:
    probe = listener()
    doc = f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{probe.url}"> %p;]><r/>'.encode()
    yield lambda: xmlparse.parse(doc)
    assert not probe.contacted()
    probe.sock.close()


@case("xml-billion-laughs", "entity expansion, 10^9 'lol's (billion laughs)",
      "sdp.ebms.parse_envelope", XmlSecurityError, bomb=True)
def _xml_billion_laughs(w: World) -> Callable[[], object]:
    return lambda: ebms.parse_envelope(LAUGHS)


@case("xml-quadratic-blowup", "one 100 kB entity referenced 100 000 times",
      "sdp.validate", XmlSecurityError, bomb=True)
def _xml_quadratic(w: World) -> Callable[[], object]:
    return lambda: sdp.validate(QUADRATIC)


@case("xml-doctype-in-sbd", "a DOCTYPE with an entity in front of a signed SBD",
      "sdp.message.verify_sbd", XmlSecurityError)
def _xml_doctype_sbd(w: World) -> Callable[[], object]:
    sbd = w.prepared.sbd_xml.split(b"?>", 1)[-1]
    doc = b'<!DOCTYPE x [<!ENTITY e "evil">]>' + sbd
    return lambda: verify_sbd(doc, trust=w.trust, intermediates=w.intermediates)


@case("xml-deep-nesting", "100 000 nested elements", "sdp.bindings.from_xml", XmlSecurityError,
      bomb=True)
def _xml_deep(w: World) -> Callable[[], object]:
    doc = b"<a>" * 100_000 + b"</a>" * 100_000
    return lambda: bindings.from_xml(doc)


@case("xml-depth-over-limit", "65 nested elements (over our limit, under libxml2's)",
      "sdp.xmlparse.parse", XmlSecurityError)
def _xml_depth(w: World) -> Generator[Callable[[], object], Any, None]:
    n = xmlparse.MAX_DEPTH + 1
    exc = yield lambda: xmlparse.parse(b"<a>" * n + b"</a>" * n)
    assert "nested deeper" in str(exc)


@case("xml-too-large", "a 16 MiB + 1 byte document", "sdp.ebms.parse_envelope",
      XmlSecurityError, bomb=True)
def _xml_too_large(w: World) -> Generator[Callable[[], object], Any, None]:
    doc = b"<r>" + b"x" * xmlparse.MAX_XML_BYTES + b"</r>"
    exc = yield lambda: ebms.parse_envelope(doc)
    assert "larger than" in str(exc)


@case("xml-too-large-stream", "an endless stream of XML", "sdp.xmlparse.parse",
      XmlSecurityError, bomb=True)
def _xml_stream(w: World) -> Callable[[], object]:
    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            buffer[:] = b"<" * len(buffer)
            return len(buffer)

    return lambda: xmlparse.parse(io.BufferedReader(Endless()))


@case("xml-wide", "16 MiB of empty sibling elements (4 million nodes)",
      "sdp.ebms.parse_envelope", XmlSecurityError, bomb=True)
def _xml_wide(w: World) -> Generator[Callable[[], object], Any, None]:
    doc = b"<r>" + b"<a/>" * (xmlparse.MAX_XML_BYTES // 4 - 2) + b"</r>"
    exc = yield lambda: ebms.parse_envelope(doc)
    assert "more than" in str(exc)


@case("xml-wide-utf7", "4 million elements hidden in UTF-7 (`+ADw-` for `<`)",
      "sdp.xmlparse.parse", XmlSecurityError)
def _xml_wide_utf7(w: World) -> Callable[[], object]:
    doc = (b'<?xml version="1.0" encoding="UTF-7"?><r>'
           + b"+ADw-a/>" * (xmlparse.MAX_XML_BYTES // 8 - 8) + b"</r>")
    return lambda: xmlparse.parse(doc)


@case("xml-many-attributes", "one element with 300 000 attributes", "sdp.bindings.from_xml",
      XmlSecurityError, bomb=True)
def _xml_attributes(w: World) -> Callable[[], object]:
    # libxml2 builds a whole start tag before the first event: a single tag with millions of
    # attributes costs ~200 bytes each before the count can stop it (see the report).
    doc = b"<r " + b" ".join(b'a%d=""' % i for i in range(300_000)) + b"/>"
    return lambda: bindings.from_xml(doc)


@case("xml-many-comments", "two million comments", "sdp.xmlparse.parse", XmlSecurityError,
      bomb=True)
def _xml_comments(w: World) -> Callable[[], object]:
    return lambda: xmlparse.parse(b"<r>" + b"<!---->" * 2_000_000 + b"</r>")


# --- SOAP and WS-Security ---------------------------------------------------------------------


@case("soap-duplicate-wsu-id", "a header block repeating env:Body's wsu:Id",
      "sdp.wssecurity.verify", wss.SignatureWrappingError)
def _soap_dup_id(w: World) -> Callable[[], object]:
    root = w.envelope()
    decoy = etree.SubElement(header_of(root), "{urn:evil}Decoy")
    decoy.set(WSU_ID, str(body_of(root).get(WSU_ID)))
    return lambda: w.verify_envelope(root)


@case("soap-second-body", "a second env:Body after the signed one", "sdp.ebms.parse_envelope",
      ProtocolError)
def _soap_second_body(w: World) -> Callable[[], object]:
    root = w.envelope()
    root.append(copy.deepcopy(body_of(root)))
    data = etree.tostring(root)
    return lambda: ebms.parse_envelope(data)


@case("soap-body-in-body", "a forged env:Body wrapped inside the signed one",
      "sdp.wssecurity.verify", wss.SignatureWrappingError)
def _soap_body_in_body(w: World) -> Callable[[], object]:
    root = w.envelope()
    body_of(root).append(etree.Element(f"{{{SOAP}}}Body"))
    return lambda: w.verify_envelope(root)


@case("soap-second-messaging", "a second eb:Messaging header", "sdp.server.verify_user_message",
      ProtocolError)
def _soap_second_messaging(w: World) -> Callable[[], object]:
    root = w.envelope()
    header_of(root).append(copy.deepcopy(messaging_of(root)))
    ct, body = w.request(root)
    return lambda: w.verify_request(ct, body)


@case("soap-wrap-messaging-moved", "signed eb:Messaging moved into the Body, forged one in "
      "its place", "sdp.wssecurity.verify", wss.SignatureWrappingError)
def _soap_wrap_messaging(w: World) -> Callable[[], object]:
    root = w.envelope()
    signed = messaging_of(root)
    forged = copy.deepcopy(signed)
    forged.find(".//eb:MessageId", NS).text = ebms.new_message_id()  # type: ignore[union-attr]
    header_of(root).replace(signed, forged)
    body_of(root).append(signed)
    return lambda: w.verify_envelope(root)


@case("soap-wrap-messaging-in-header-block", "signed eb:Messaging hidden in an unknown header "
      "block, forged one without Id in its place", "sdp.wssecurity.verify",
      wss.SignatureWrappingError)
def _soap_wrap_messaging_header(w: World) -> Callable[[], object]:
    root = w.envelope()
    signed = messaging_of(root)
    forged = copy.deepcopy(signed)
    del forged.attrib[WSU_ID]
    wrapper = etree.Element("{urn:evil}Wrapper")
    header_of(root).replace(signed, forged)
    wrapper.append(signed)
    header_of(root).append(wrapper)
    return lambda: w.verify_envelope(root)


@case("soap-wrap-body-moved", "signed env:Body moved into a header block, a forged Body with "
      "the same Id in its place", "sdp.wssecurity.verify", wss.SignatureWrappingError)
def _soap_wrap_body(w: World) -> Callable[[], object]:
    root = w.envelope()
    signed = body_of(root)
    forged = etree.Element(f"{{{SOAP}}}Body")
    forged.set(WSU_ID, str(signed.get(WSU_ID)))
    etree.SubElement(forged, "{urn:evil}Payload").text = "forged"
    wrapper = etree.SubElement(header_of(root), "{urn:evil}Wrapper")
    root.replace(signed, forged)
    wrapper.append(signed)
    return lambda: w.verify_envelope(root)


@case("soap-ref-outside", "a (validly signed) reference to an element inside the SBD instead "
      "of eb:Messaging", "sdp.wssecurity.verify", wss.SignatureWrappingError)
def _soap_ref_outside(w: World) -> Callable[[], object]:
    root = w.envelope()
    inner = body_of(root)[0][0]  # the SBD header
    inner.set(WSU_ID, "id-inner")
    ref = reference(root, f"#{messaging_of(root).get(WSU_ID)}")
    ref.set("URI", "#id-inner")
    resign(root, w.sender)
    return lambda: w.verify_envelope(root)


@case("soap-ref-token", "a reference to the BinarySecurityToken", "sdp.wssecurity.verify",
      wss.SignatureWrappingError)
def _soap_ref_token(w: World) -> Callable[[], object]:
    root = w.envelope()
    token = root.find(".//wsse:BinarySecurityToken", NS)
    assert token is not None
    ref = reference(root, f"#{messaging_of(root).get(WSU_ID)}")
    ref.set("URI", f"#{token.get(WSU_ID)}")
    resign(root, w.sender)
    return lambda: w.verify_envelope(root)


@case("soap-ref-external", "a reference to an external URL", "sdp.wssecurity.verify",
      wss.SignatureWrappingError)
def _soap_ref_external(w: World) -> Generator[Callable[[], object], Any, None]:
    probe = listener()
    root = w.envelope()
    reference(root, f"#{messaging_of(root).get(WSU_ID)}").set("URI", probe.url)
    resign(root, w.sender)
    yield lambda: w.verify_envelope(root)
    assert not probe.contacted()
    probe.sock.close()


@case("soap-sha1-digest", "a reference digested with SHA-1 (re-signed)", "sdp.wssecurity.verify",
      AlgorithmNotAllowedError)
def _soap_sha1(w: World) -> Callable[[], object]:
    root = w.envelope()
    ref = reference(root, f"#{body_of(root).get(WSU_ID)}")
    method = ref.find("ds:DigestMethod", NS)
    assert method is not None
    method.set("Algorithm", ds.SHA1)
    resign(root, w.sender)
    return lambda: w.verify_envelope(root)


def _signature_method(uri: str) -> Scenario:
    def scenario(w: World) -> Callable[[], object]:
        root = w.envelope()
        method = signature_of(root).find("ds:SignedInfo/ds:SignatureMethod", NS)
        assert method is not None
        method.set("Algorithm", uri)
        return lambda: w.verify_envelope(root)
    return scenario


case("soap-hmac", "SignatureMethod HMAC-SHA1 (key confusion)", "sdp.wssecurity.verify",
     AlgorithmNotAllowedError)(_signature_method("http://www.w3.org/2000/09/xmldsig#hmac-sha1"))
case("soap-rsa-sha1", "SignatureMethod RSA-SHA1", "sdp.wssecurity.verify",
     AlgorithmNotAllowedError)(_signature_method("http://www.w3.org/2000/09/xmldsig#rsa-sha1"))


@case("soap-no-timestamp", "wsu:Timestamp removed", "sdp.wssecurity.verify", wss.TimestampError)
def _soap_no_timestamp(w: World) -> Callable[[], object]:
    root = w.envelope()
    stamp = root.find(".//wsse:Security/wsu:Timestamp", NS)
    assert stamp is not None
    stamp.getparent().remove(stamp)  # type: ignore[union-attr]
    return lambda: w.verify_envelope(root)


@case("soap-timestamp-future", "signed with a Timestamp one hour ahead",
      "sdp.server.verify_user_message", wss.TimestampError)
def _soap_future(w: World) -> Callable[[], object]:
    ct, body = w.request(w.envelope(now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    return lambda: w.verify_request(ct, body)


@case("soap-timestamp-expired", "signed with a Timestamp that expired an hour ago",
      "sdp.server.verify_user_message", wss.TimestampError)
def _soap_expired(w: World) -> Callable[[], object]:
    ct, body = w.request(w.envelope(now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    return lambda: w.verify_request(ct, body)


@case("soap-unsigned", "no wsse:Security header", "sdp.server.verify_user_message",
      wss.SecurityHeaderError)
def _soap_unsigned(w: World) -> Callable[[], object]:
    root = w.envelope()
    security = root.find(".//wsse:Security", NS)
    header_of(root).remove(security)  # type: ignore[arg-type]
    ct, body = w.request(root)
    return lambda: w.verify_request(ct, body)


@case("soap-attachment-swapped", "another package attached than the one signed",
      "sdp.server.verify_user_message", DigestMismatchError)
def _soap_attachment_swapped(w: World) -> Callable[[], object]:
    ct, body = w.request(package=w.package[:-16] + bytes(16))
    return lambda: w.verify_request(ct, body)


@case("soap-fingerprint-mismatch", "a package signed in WS-Security but not the one the SBD's "
      "fingerprint names", "sdp.server.verify_user_message", DigestMismatchError)
def _soap_fingerprint(w: World) -> Callable[[], object]:
    other = w.package[:-16] + bytes(16)
    ct, body = w.request(w.envelope(fingerprint=hashlib.sha256(other).digest()), package=other)
    return lambda: w.verify_request(ct, body)


@case("soap-untrusted-signer", "signed by a certificate from a rogue CA",
      "sdp.server.verify_user_message", CertificateChainError)
def _soap_untrusted(w: World) -> Callable[[], object]:
    rogue = devpki.make_enterprise_certificate(devpki.make_ca("Rogue CA"), SENDER_ORGNR, "Rogue")
    ct, body = w.request(w.envelope(signer=rogue))
    return lambda: w.verify_request(ct, body)


# --- MIME -------------------------------------------------------------------------------------


@case("mime-missing-start", "`start` names no part", "sdp.mime.parse_message", MimeError)
def _mime_start(w: World) -> Callable[[], object]:
    _, body = w.request()
    ct = multipart([], start="nothing@hostile.test")[0]
    return lambda: mime.parse_message(ct, body)


@case("mime-wrong-boundary", "the body uses another boundary than the header",
      "sdp.mime.parse_message", MimeError)
def _mime_boundary(w: World) -> Callable[[], object]:
    _, body = w.request()
    ct = multipart([], boundary="another_boundary")[0]
    return lambda: mime.parse_message(ct, body)


@case("mime-boundary-prefix", "the boundary is a prefix of the real delimiter",
      "sdp.mime.parse_message", MimeError)
def _mime_boundary_prefix(w: World) -> Callable[[], object]:
    _, body = w.request()
    ct = multipart([], boundary=BOUNDARY[:-3])[0]
    return lambda: mime.parse_message(ct, body)


@case("mime-missing-attachment", "the signed package part left out",
      "sdp.server.verify_user_message", MimeError)
def _mime_missing(w: World) -> Callable[[], object]:
    data = etree.tostring(w.envelope(), xml_declaration=True, encoding="UTF-8")
    ct, body = multipart([(mime.SOAP_CONTENT_TYPE, SOAP_CID, data)])
    return lambda: w.verify_request(ct, body)


@case("mime-extra-attachment", "an unreferenced, unsigned extra part",
      "sdp.server.verify_user_message", MimeError)
def _mime_extra(w: World) -> Callable[[], object]:
    ct, body = w.request(extra=(("application/octet-stream", "extra@hostile.test", b"evil"),))
    return lambda: w.verify_request(ct, body)


@case("mime-cid-matches-nothing", "PartInfo's cid: names no part (the package has another "
      "Content-ID)", "sdp.server.verify_user_message", MimeError)
def _mime_cid(w: World) -> Callable[[], object]:
    data = etree.tostring(w.envelope(), xml_declaration=True, encoding="UTF-8")
    ct, body = multipart([(mime.SOAP_CONTENT_TYPE, SOAP_CID, data),
                          (mime.CMS_CONTENT_TYPE, "other@hostile.test", w.package)])
    return lambda: w.verify_request(ct, body)


@case("mime-truncated", "the body cut off before the closing delimiter",
      "sdp.mime.parse_message", MimeError)
def _mime_truncated(w: World) -> Callable[[], object]:
    ct, body = w.request()
    return lambda: mime.parse_message(ct, body[:len(body) // 2])


@case("mime-too-many-parts", "10 000 tiny parts", "sdp.mime.parse_message", MimeError, bomb=True)
def _mime_parts(w: World) -> Callable[[], object]:
    ct, body = multipart([("text/plain", f"p{i}@h", b"x") for i in range(10_000)],
                         start="p0@h")
    return lambda: mime.parse_message(ct, body)


@case("mime-header-flood", "a part with 1 MiB of headers", "sdp.mime.parse_message", MimeError,
      bomb=True)
def _mime_headers(w: World) -> Callable[[], object]:
    flood = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000))
    body = (f"--{BOUNDARY}\r\n".encode() + flood + b"Content-Type: application/soap+xml\r\n\r\n"
            + b"<r/>\r\n" + f"--{BOUNDARY}--\r\n".encode())
    ct = multipart([], start=None)[0]
    return lambda: mime.parse_message(ct, body)


@case("mime-body-over-limit", "a stream longer than the 64 MiB body limit",
      "sdp.mime.parse_message", MimeError, bomb=True)
def _mime_body_limit(w: World) -> Callable[[], object]:
    ct = multipart([])[0]
    limits = mime.MimeLimits(max_body_bytes=1024 * 1024)
    return lambda: mime.parse_message(ct, io.BytesIO(b"x" * (2 * 1024 * 1024)), limits=limits)


# --- CMS --------------------------------------------------------------------------------------

_AES256_CBC = bytes.fromhex("060960864801650304012a")
_AES256_GCM = bytes.fromhex("060960864801650304012e")
_RSAES_OAEP = bytes.fromhex("06092a864886f70d010107")
_RSASSA_PSS = bytes.fromhex("06092a864886f70d01010a")


@case("cms-other-recipient", "encrypted to another recipient (the mailbox, opened by the "
      "sender)", "sdp.package.cms.decrypt", NotForRecipientError)
def _cms_other(w: World) -> Callable[[], object]:
    return lambda: cms.decrypt(w.package, w.sender.key, w.sender.certificate)


@case("cms-wrong-key", "decrypted with a key the package was not encrypted for",
      "sdp.package.cms.decrypt", DecryptionError)
def _cms_wrong_key(w: World) -> Callable[[], object]:
    return lambda: cms.decrypt(w.package, w.sender.key)


@case("cms-content-algorithm", "content encrypted with AES-GCM instead of AES-CBC",
      "sdp.package.cms.decrypt", UnsupportedAlgorithmError)
def _cms_content_alg(w: World) -> Callable[[], object]:
    assert w.package.count(_AES256_CBC) == 1
    data = w.package.replace(_AES256_CBC, _AES256_GCM)
    return lambda: cms.decrypt(data, w.mailbox.key, w.mailbox.certificate)


@case("cms-key-transport-algorithm", "key transport RSASSA-PSS instead of RSAES-OAEP",
      "sdp.package.dokumentpakke.open_package", UnsupportedAlgorithmError)
def _cms_kt_alg(w: World) -> Callable[[], object]:
    assert w.package.count(_RSAES_OAEP) == 1
    data = w.package.replace(_RSAES_OAEP, _RSASSA_PSS)
    return lambda: open_package(data, w.mailbox.key, w.mailbox.certificate, trust=w.trust)


@case("cms-truncated", "the package cut in half", "sdp.package.dokumentpakke.open_package",
      CmsError)
def _cms_truncated(w: World) -> Callable[[], object]:
    data = w.package[:len(w.package) // 2]
    return lambda: open_package(data, w.mailbox.key, w.mailbox.certificate)


@case("cms-garbage", "random bytes instead of DER", "sdp.package.cms.decrypt", CmsError)
def _cms_garbage(w: World) -> Callable[[], object]:
    data = hashlib.sha512(b"garbage").digest() * 64
    return lambda: cms.decrypt(data, w.mailbox.key, w.mailbox.certificate)


@case("cms-huge-length", "a SEQUENCE claiming 2^56 bytes", "sdp.package.cms.decrypt", CmsError,
      bomb=True)
def _cms_huge(w: World) -> Callable[[], object]:
    data = b"\x30\x88" + (1 << 56).to_bytes(8, "big") + b"\x06\x09" + bytes(32)
    return lambda: cms.decrypt(data, w.mailbox.key, w.mailbox.certificate)


@case("cms-deep-indefinite", "50 000 nested indefinite-length constructions",
      "sdp.package.cms.decrypt", CmsError, bomb=True)
def _cms_deep(w: World) -> Callable[[], object]:
    data = (b"\x30\x80\x06\x09" + _RSAES_OAEP[2:] + b"\xa0\x80" + b"\x24\x80" * 50_000
            + b"\x00\x00" * 50_000)
    return lambda: cms.decrypt(data, w.mailbox.key, w.mailbox.certificate)


@case("cms-malformed-recipient-infos", "RecipientInfos that are not ASN.1",
      "sdp.package.cms.decrypt", CmsError)
def _cms_malformed_ri(w: World) -> Callable[[], object]:
    data = bytearray(w.package)
    # The first RecipientInfo's SEQUENCE tag, just after the SET OF's header: corrupt it.
    set_at = data.index(b"\x31", 20)
    data[set_at + (4 if data[set_at + 1] == 0x82 else 3 if data[set_at + 1] == 0x81 else 2)] = 0x05
    return lambda: cms.decrypt(bytes(data), w.mailbox.key, w.mailbox.certificate)


# --- zip (ASiC-E) -----------------------------------------------------------------------------


def _container(name: str, what: str, error: type[SdpError],
               build: Callable[[World], bytes], **kw: Any) -> None:
    def scenario(w: World) -> Callable[[], object]:
        data = build(w)
        limits = kw.get("limits")
        return lambda: open_container(data, trust=w.trust, limits=limits)
    case(name, what, "sdp.package.dokumentpakke.open_container", error,
         bomb=kw.get("bomb", False))(scenario)


def _renamed(old_suffix: str, new: str) -> Callable[[World], bytes]:
    def build(w: World) -> bytes:
        return zip_of([(new if n.endswith(old_suffix) else n, d) for n, d in w.zip_entries()])
    return build


_container("zip-dotdot", "an entry named `../brev.pdf`", UnsafeEntryError,
           _renamed("brev.pdf", "../brev.pdf"))
_container("zip-absolute", "an entry named `/etc/cron.d/brev`", UnsafeEntryError,
           _renamed("brev.pdf", "/etc/cron.d/brev"))
_container("zip-drive-letter", r"an entry named `C:\brev.pdf`", UnsafeEntryError,
           _renamed("brev.pdf", "C:/brev.pdf"))
_container("zip-nested", "an entry in a folder other than META-INF", UnsafeEntryError,
           _renamed("brev.pdf", "docs/brev.pdf"))
_container("zip-duplicate", "the same entry name twice", DuplicateEntryError,
           lambda w: zip_of([*w.zip_entries(), ("brev.pdf", b"%PDF-1.7 second")]))
_container("zip-duplicate-case", "`brev.pdf` and `BREV.PDF`", DuplicateEntryError,
           lambda w: zip_of([*w.zip_entries(), ("BREV.PDF", b"%PDF-1.7 second")]))
_container("zip-bomb-ratio", "an entry of 50 MiB zeros compressed 1000:1", ExpansionLimitError,
           lambda w: zip_of([*w.zip_entries(), ("bomb.pdf", bytes(50 * 1024 * 1024))]),
           bomb=True)
_container("zip-entry-over-limit", "an entry larger than the per-entry limit",
           ExpansionLimitError,
           lambda w: zip_of([*w.zip_entries(), ("big.pdf", b"%PDF" + bytes(range(256)) * 64)]),
           limits=ReadLimits(max_entry_bytes=8 * 1024))
_container("zip-lying-size", "an entry declaring 1 kB that inflates to 8 MiB",
           ExpansionLimitError,
           lambda w: patch_declared_size(
               zip_of([*w.zip_entries(), ("liar.pdf", bytes(8 * 1024 * 1024))]), "liar.pdf", 1024),
           bomb=True)
_container("zip-too-many-entries", "20 000 empty entries", ExpansionLimitError,
           lambda w: zip_of([(f"e{i}.pdf", b"") for i in range(20_000)],
                            method=zipfile.ZIP_STORED), bomb=True)
_container("zip-not-a-zip", "a PDF where the container should be", PackageError,
           lambda w: b"%PDF-1.7\n" + bytes(4096))
_container("zip-truncated", "the container cut in half", PackageError,
           lambda w: w.zip[:len(w.zip) // 2])
_container("zip-missing-signed-file", "a signed file removed from the container",
           ReferenceMismatchError,
           lambda w: zip_of([(n, d) for n, d in w.zip_entries() if n != "brev.pdf"]))
_container("zip-extra-file", "an unsigned file added to the container", ReferenceMismatchError,
           lambda w: zip_of([*w.zip_entries(), ("extra.pdf", b"%PDF-1.7 extra")]))
_container("zip-file-swapped", "a signed file's content replaced", DigestMismatchError,
           lambda w: zip_of([(n, b"%PDF-1.7 forged" if n == "brev.pdf" else d)
                             for n, d in w.zip_entries()]))
_container("zip-signed-file-not-in-manifest", "a signed file manifest.xml does not list",
           ManifestMismatchError,
           lambda w: w.resign_zip([*w.zip_entries(), ("ghost.pdf", b"%PDF-1.7 ghost")]))


def _manifest_lists_missing(w: World) -> bytes:
    entries = w.zip_entries()
    out: list[tuple[str, bytes]] = []
    for name, data in entries:
        if name == "manifest.xml":
            root = etree.fromstring(data)
            main = next(el for el in root if etree.QName(el).localname == "hoveddokument")
            extra = copy.deepcopy(main)
            extra.tag = etree.QName(main).text.replace("hoveddokument", "vedlegg")
            extra.set("href", "ghost.pdf")
            main.addnext(extra)
            data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        out.append((name, data))
    return w.resign_zip(out)


_container("zip-manifest-lists-missing-file", "manifest.xml lists a file the container lacks "
           "(validly re-signed)", ManifestMismatchError, _manifest_lists_missing)


@case("zip-manifest-disagrees-with-sbd", "manifest avsender differs from the business "
      "message's (validly signed and encrypted)", "sdp.broker.core.Broker.handle", None,
      outcome="sdp:feil receipt `Feil i manifest`, no transport error")
def _manifest_vs_sbd(w: World) -> Generator[Callable[[], object], Any, None]:
    f = forsendelse(w.mailbox)
    out = io.BytesIO()
    built = build_package(out, hoveddokument=f.hoveddokument, avsender=avsender(PROCESSOR_ORGNR),
                          mottaker=f.mottaker, signer=w.sender,
                          recipient=w.mailbox.certificate)
    sbd = build_digital_post_sbd(f, built.fingerprint, w.sender)
    package = out.getvalue()
    envelope = w.envelope(sbd_xml=sbd.xml, fingerprint=built.fingerprint)
    ct, body = w.request(envelope, package=package)
    broker = Broker(identity=w.broker, mailbox=w.mailbox, trust=w.trust,
                    intermediates=w.intermediates, data_dir=w.tmp.mktemp("broker"))
    try:
        replies: list[Any] = []
        exc = yield lambda: replies.append(broker.handle(ct, body))
        assert exc is None
        assert replies[0].status == 200
        (row,) = broker.state.consignments()
        assert row["package_status"] == "Feil i manifest"
        assert [r.kind for r in broker.state.receipts()] == ["feil"]
    finally:
        broker.close()


# --- the client receiving hostile responses, and the store --------------------------------------


def _retreat(data: bytes, identity: devpki.Identity, *,
             edit: Callable[[etree._Element], None] | None = None) -> bytes:
    """The broker's transport receipt, optionally edited, signed again by `identity`."""
    root = etree.fromstring(data)
    for security in header_of(root).findall("wsse:Security", NS):
        header_of(root).remove(security)
    if edit:
        edit(root)
    wss.sign(root, identity)
    return etree.tostring(root)


def _local(root: etree._Element, name: str) -> etree._Element:
    return next(el for el in root.iter() if isinstance(el.tag, str)
                and etree.QName(el).localname == name)


@contextmanager
def _loopback(w: World, broker_class: type[LoopbackBroker] = LoopbackBroker
              ) -> Iterator[tuple[LoopbackBroker, SdpClient, SqliteStore, Path]]:
    """A loopback broker on 127.0.0.1, a client without retries and an empty store."""
    state = broker_class(broker=w.broker, mailbox=w.mailbox, trust=w.trust,
                         intermediates=w.intermediates, mf_orgnr=MF_ORGNR)
    folder = w.tmp.mktemp("loopback")
    with serve(state):
        env = Environment.custom(state.url, [w.ca.certificate, w.intermediate.certificate])
        store = SqliteStore(folder / "store.sqlite",
                            protection=RecipientProtection.hashed(b"k" * 32))
        try:
            with SdpClient(env, w.sender, timeouts=Timeouts(connect=2, read=5),
                           retry=RetryPolicy(max_attempts=1)) as client:
                yield state, client, store, folder
        finally:
            store.close()


def _snapshot(store: SqliteStore, conversation_id: str) -> tuple[object, ...]:
    record = store.get(conversation_id)
    return (record.state if record else None, len(store.timeline(conversation_id)),
            len(store.unconfirmed_receipts()), len(store.orphan_receipts()),
            tuple(sorted(store.counts().items(), key=lambda kv: kv[0].value)))


def _transport_receipt_case(id: str, what: str, error: type[SdpError],
                            tamper: Callable[[World, bytes], bytes]) -> None:
    """Outbox.send gets a hostile transport receipt: the send is marked failed, consistently."""
    def scenario(w: World) -> Generator[Callable[[], object], Any, None]:
        f = forsendelse(w.mailbox)
        with _loopback(w) as (state, client, store, folder):
            state.tamper_receipt = lambda data: tamper(w, data)
            yield lambda: Outbox(client, store, folder / "outbox").send(f)
            record = store.get(f.conversation_id)
            assert record is not None
            pending = [s.message_id for s in store.pending_sends()]
            if record.state is State.SENDING:  # no verifiable answer: resumable as it was
                assert pending == [record.message_id]
                assert (folder / "outbox" / record.message_id / "prepared.json").exists()
            else:  # a definite rejection: failed, nothing left to resume
                assert record.state is State.TRANSPORT_FAILED and not pending
            assert store.check() == []
            assert len(state.incoming) == 1  # sent once, not retried after a definite answer
    case(id, what, "sdp.outbox.Outbox.send (SdpClient.transmit)", error)(scenario)


def _other_ref(w: World, data: bytes) -> bytes:
    def edit(root: etree._Element) -> None:
        _local(root, "RefToMessageId").text = ebms.new_message_id()
    return _retreat(data, w.broker, edit=edit)


def _foreign_digest(w: World, data: bytes) -> bytes:
    def edit(root: etree._Element) -> None:
        value = _local(root, "DigestValue")
        value.text = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    return _retreat(data, w.broker, edit=edit)


def _wrapped(w: World, data: bytes) -> bytes:
    root = etree.fromstring(data)
    signed = messaging_of(root)
    forged = copy.deepcopy(signed)
    _local(forged, "RefToMessageId").text = "forged"
    header_of(root).replace(signed, forged)
    body_of(root).append(signed)
    return etree.tostring(root)


def _unsigned(w: World, data: bytes) -> bytes:
    root = etree.fromstring(data)
    for security in header_of(root).findall("wsse:Security", NS):
        header_of(root).remove(security)
    return etree.tostring(root)


_transport_receipt_case(
    "rcpt-transport-other-message", "a transport receipt whose RefToMessageId is another "
    "message (validly signed by the broker)", TransportReceiptError, _other_ref)
_transport_receipt_case(
    "rcpt-transport-foreign-reference", "a transport receipt acknowledging a digest we never "
    "signed (validly signed by the broker)", TransportReceiptError, _foreign_digest)
_transport_receipt_case(
    "rcpt-transport-wrapped", "a forged eb:Receipt in the header, the signed one moved into the "
    "Body", wss.SignatureWrappingError, _wrapped)
_transport_receipt_case(
    "rcpt-transport-unsigned", "a transport receipt without wsse:Security",
    wss.SecurityHeaderError, _unsigned)
_transport_receipt_case(
    "rcpt-transport-billion-laughs", "a billion-laughs document as the response",
    XmlSecurityError, lambda w, data: LAUGHS)


@case("rcpt-pull-tampered-sbd", "a pulled receipt whose SBD was altered after the mailbox "
      "signed it", "sdp.outbox.pull_receipts (SdpClient.pull)", DigestMismatchError)
def _pull_tampered(w: World) -> Generator[Callable[[], object], Any, None]:
    f = forsendelse(w.mailbox)
    with _loopback(w) as (state, client, store, folder):
        Outbox(client, store, folder / "outbox").send(f)
        before = _snapshot(store, f.conversation_id)
        state.tamper_sbd = lambda x: x.replace(b"<sdp:levering/>", b"<sdp:aapning/>")
        yield lambda: pull_receipts(client, store)
        assert _snapshot(store, f.conversation_id) == before  # nothing stored
        assert before[0] is State.SENT
        assert not state.confirmed and len(state.inflight) == 1  # never confirmed
        assert store.check() == []


class _MisansweringBroker(LoopbackBroker):
    """Answers a pull with a receipt that refers to some other PullRequest."""

    def _pull(self, parsed: mime.ParsedMessage) -> tuple[int, bytes]:
        incoming = server.verify_pull(parsed, trust=self.trust, intermediates=self.intermediates)
        assert incoming.pull is not None
        mpc = incoming.pull.mpc or "urn:normal"
        queue = self.queues.get(mpc)
        if not queue:
            return 200, server.empty_queue_response(incoming.pull.message_id, self.broker)
        return 200, server.pulled_message_response(
            queue.popleft(), pull_message_id=ebms.new_message_id(), mpc=mpc, broker=self.broker,
            broker_orgnr=self.mf_orgnr, sender_orgnr=incoming.sender_orgnr)


@case("rcpt-pull-other-pull", "a pulled receipt answering another PullRequest",
      "sdp.outbox.pull_receipts (SdpClient.pull)", ProtocolError)
def _pull_other(w: World) -> Generator[Callable[[], object], Any, None]:
    f = forsendelse(w.mailbox)
    with _loopback(w, _MisansweringBroker) as (_, client, store, folder):
        Outbox(client, store, folder / "outbox").send(f)
        before = _snapshot(store, f.conversation_id)
        yield lambda: pull_receipts(client, store)
        assert _snapshot(store, f.conversation_id) == before
        assert store.check() == []


@case("rcpt-pull-signed-by-other", "a receipt SBD naming the mailbox as Sender but signed by "
      "another organisation", "sdp.outbox.pull_receipts (SdpClient.pull)", SignerIdentityError)
def _pull_signed_by_other(w: World) -> Generator[Callable[[], object], Any, None]:
    with _loopback(w) as (state, client, store, _):
        sbd = receipt_sbd(kind="levering", conversation_id=str(uuid.uuid4()),
                          sender_orgnr=MAILBOX_ORGNR, receiver_orgnr=SENDER_ORGNR,
                          signer=w.broker)
        state.queues["urn:normal"] = deque([sbd.xml])
        exc = yield lambda: pull_receipts(client, store)
        assert "signed by" in str(exc)
        assert not store.orphan_receipts() and not store.unconfirmed_receipts()
        assert not state.confirmed
        assert store.check() == []


@case("rcpt-orphan", "a valid receipt whose conversation id matches no consignment",
      "sdp.outbox.pull_receipts + SqliteStore", None,
      outcome="stored as orphan, confirmed, counted in PullSummary.orphans")
def _orphan(w: World) -> Generator[Callable[[], object], Any, None]:
    conversation_id = str(uuid.uuid4())
    with _loopback(w) as (state, client, store, _):
        sbd = receipt_sbd(kind="levering", conversation_id=conversation_id,
                          sender_orgnr=MAILBOX_ORGNR, receiver_orgnr=SENDER_ORGNR,
                          signer=w.mailbox)
        state.queues["urn:normal"] = deque([sbd.xml])
        summaries: list[Any] = []
        exc = yield lambda: summaries.append(pull_receipts(client, store))
        assert exc is None
        assert summaries[0].orphans == 1 and summaries[0].total == 1
        (orphan,) = store.orphan_receipts()
        assert orphan.kvittering.conversation_id == conversation_id
        assert orphan.kvittering.sbd_xml == sbd.xml  # kept exactly as signed
        assert store.get(conversation_id) is None  # no consignment invented for it
        assert len(state.confirmed) == 1 and not store.unconfirmed_receipts()
        assert store.check() == []


# --- the harness ------------------------------------------------------------------------------


@dataclass
class _Run:
    error: BaseException | None = None
    elapsed: float = 0.0
    peak: int = 0
    done: bool = False


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _bounded(thunk: Callable[[], object], *, trace: bool) -> _Run:
    """Run `thunk` in a worker thread so that a hang is reported instead of blocking pytest."""
    run = _Run()

    def target() -> None:
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        try:
            thunk()
        except BaseException as exc:  # judged by the test
            run.error = exc
        finally:
            run.elapsed = time.perf_counter() - start
            if trace:
                run.peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            run.done = True

    worker = threading.Thread(target=target, name="hostile-case", daemon=True)
    worker.start()
    worker.join(HANG_LIMIT)
    return run


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES])
def test_hostile_input(hostile: Case, world: World) -> None:
    made = hostile.scenario(world)
    steps = made if isinstance(made, Generator) else None
    thunk: Callable[[], object] = next(steps) if steps is not None else made  # type: ignore[assignment]
    try:
        before = _peak_rss()
        run = _bounded(thunk, trace=False)
        assert run.done, f"still running after {HANG_LIMIT} s: a hang"
        if hostile.error is None:
            assert run.error is None, f"expected {hostile.outcome}, got {run.error!r}"
        else:
            assert isinstance(run.error, SdpError), f"untyped: {run.error!r}"
            assert isinstance(run.error, hostile.error), (
                f"expected {hostile.error.__name__}, got {type(run.error).__name__}: "
                f"{run.error}")
        assert run.elapsed < TIME_LIMIT, f"took {run.elapsed:.2f} s"
        grown = _peak_rss() - before
        assert grown < RSS_LIMIT, f"peak RSS grew by {grown >> 20} MiB"
        if hostile.bomb:  # again under tracemalloc (which slows it down too much to time it)
            traced = _bounded(thunk, trace=True)
            assert traced.done and type(traced.error) is type(run.error)
            assert traced.peak < TRACE_LIMIT, f"tracemalloc peak {traced.peak >> 20} MiB"
        if steps is not None:
            with pytest.raises(StopIteration):
                steps.send(run.error)  # the aftermath: nothing half-stored, nothing leaked
    finally:
        if steps is not None:
            steps.close()


def test_the_valid_originals_pass(world: World) -> None:
    """The controls: every case breaks one thing in inputs that are accepted as they are."""
    incoming = world.verify_request(*world.request())
    assert incoming.message_id == world.prepared.message_id
    assert world.verify_envelope(world.envelope()).orgnr == SENDER_ORGNR
    with open_package(world.package, world.mailbox.key, world.mailbox.certificate,
                      trust=world.trust) as opened:
        assert [d.href for d in opened.documents] == ["brev.pdf"]
    with open_container(world.resign_zip(world.zip_entries()), trust=world.trust) as opened:
        assert opened.signer == world.sender.certificate
    with open_container(zip_of(world.zip_entries()), trust=world.trust) as opened:
        assert opened.documents[0].open().read() == b"%PDF-1.7 hostile test letter"
    sbd = verify_sbd(world.prepared.sbd_xml, trust=world.trust,
                     intermediates=world.intermediates)
    assert sbd.sender_orgnr == SENDER_ORGNR
    n = xmlparse.MAX_DEPTH
    assert xmlparse.parse(b"<a>" * n + b"</a>" * n).tag == "a"
    assert len(xmlparse.parse(b"<r>" + b"<a/>" * (xmlparse.MAX_NODES - 1) + b"</r>")) == \
        xmlparse.MAX_NODES - 1


def test_the_table_is_complete() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for c in CASES:
        assert c.refused_by.startswith("sdp."), c.id
        assert (c.error is not None and issubclass(c.error, SdpError)) or c.outcome, c.id
    table = markdown_table().splitlines()
    assert len(table) == len(CASES) + 2 and table[0] == "| case | what | refused by | error |"
    groups = {c.id.split("-")[0] for c in CASES}
    assert groups == {"xml", "soap", "mime", "cms", "zip", "rcpt"}


if __name__ == "__main__":  # print the table for SECURITY.md
    print(markdown_table())
