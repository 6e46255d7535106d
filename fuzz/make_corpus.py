"""Seed corpora for the fuzz targets, from our own valid messages and the official examples.

    python fuzz/make_corpus.py [--out FOLDER]

Our seeds are built with `sdp.devpki` keys (kept beside them, so a target can decrypt and
verify what was built), signed at the PKI's time `at`. The official examples are read from
the specification at run time (`SDP_SPEC_DIR`, default ../shared/sdp-spec) and never copied
into the repository; the output folder is git-ignored. Also writes `xml.dict`, a libFuzzer
dictionary of the tokens our XML, MIME and zip formats are made of.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _common
from fuzz._common import (
    DEFAULT_CONTENT_TYPE,
    MAILBOX_ORGNR,
    SEED_BOUNDARY,
    SEED_CID,
    SEED_SOAP_CID,
    SENDER_ORGNR,
    SPEC,
    Pki,
)

Seeds = dict[str, list[tuple[str, bytes]]]

#: Official files larger than this are left out: libFuzzer would only truncate them.
MAX_SEED_BYTES = 200_000
MPC = "urn:normal"


def mime_input(content_type: str | None, body: bytes) -> bytes:
    """The `mime` target's input format: 0x00 + body (default Content-Type), or
    0x01 + Content-Type + LF + body."""
    if content_type is None:
        return b"\x00" + body
    return b"\x01" + content_type.encode("latin-1") + b"\n" + body


def own_seeds(pki: Pki) -> Seeds:
    """Valid messages of every kind a parser meets, built with the library itself."""
    from lxml import etree

    from sdp import ebms, mime, server
    from sdp import wssecurity as wss
    from sdp.consignment import Forsendelse, digital_post_info, epost_varsel
    from sdp.devpki import MELDINGSFORMIDLER_ORGNR
    from sdp.message import RECEIPT_KINDS, build_digital_post_sbd, receipt_sbd
    from sdp.package import cms
    from sdp.package.documents import Document
    from sdp.package.dokumentpakke import build_package
    from sdp.parties import avsender, mottaker

    at = pki.at
    seeds: Seeds = {name: [] for name in _common.TARGETS}

    def envelope_bytes(envelope: etree._Element) -> bytes:
        return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")

    # The document package: CMS around an ASiC-E zip.
    main = Document(b"%PDF-1.4\n% fuzz seed\n", "brev.pdf", "application/pdf", title="Brev")
    extra = Document(b"%PDF-1.4\n% vedlegg\n", "vedlegg.pdf", "application/pdf",
                     title="Vedlegg")
    package = io.BytesIO()
    built = build_package(package, hoveddokument=main, vedlegg=[extra],
                          avsender=avsender(SENDER_ORGNR),
                          mottaker=mottaker("01043100358", "ola.nordmann#1ABC"),
                          signer=pki.sender, recipient=pki.mailbox.certificate,
                          signing_time=at)
    cms_bytes = package.getvalue()
    zip_bytes = cms.decrypt(cms_bytes, pki.mailbox.key)
    seeds["cms"].append(("own-package.cms", cms_bytes))
    for transport in cms.KeyTransport:
        seeds["cms"].append((f"own-small-{transport.value}.cms",
                             cms.encrypt(b"hello, fuzz", pki.mailbox.certificate,
                                         key_transport=transport)))
    seeds["cms"].append(("own-empty.cms", cms.encrypt(b"", pki.mailbox.certificate)))
    seeds["asice"].append(("own-package.zip", zip_bytes))

    # The business message and the receipts that come back.
    forsendelse = Forsendelse(
        avsender=avsender(SENDER_ORGNR), hoveddokument=main,
        recipient_certificate=pki.mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
        mottaker=mottaker("01043100358", "ola.nordmann#1ABC"),
        digital_post_info=digital_post_info(
            "Brev fra kommunen", aapningskvittering=True,
            epost=epost_varsel("ola@example.no", "Du har post", (0, 7))))
    sbd = build_digital_post_sbd(forsendelse, built.fingerprint, pki.sender, created=at)
    seeds["sbd"].append(("own-digitalPost.xml", sbd.xml))
    receipts = {}
    for kind in RECEIPT_KINDS:
        receipt = receipt_sbd(kind=kind, conversation_id=forsendelse.conversation_id,
                              sender_orgnr=MAILBOX_ORGNR, receiver_orgnr=SENDER_ORGNR,
                              signer=pki.mailbox, tidspunkt=at, beskrivelse="feilet",
                              detaljer="detaljer")
        receipts[kind] = receipt.xml
        seeds["sbd"].append((f"own-{kind}.xml", receipt.xml))

    # SOAP envelopes, both directions.
    message_id = ebms.new_message_id()
    messaging = ebms.user_message(
        message_id=message_id, timestamp=at, from_orgnr=SENDER_ORGNR,
        to_orgnr=MELDINGSFORMIDLER_ORGNR,
        action=ebms.ACTION_FORMIDLE_DIGITAL_POST, conversation_id=sbd.instance_identifier,
        mpc=MPC, attachment_cid=SEED_CID)
    request = ebms.build_envelope(messaging, sbd.xml)
    signed = wss.sign(request, pki.sender, attachments={SEED_CID: built.fingerprint}, now=at)
    request_bytes = envelope_bytes(request)
    envelopes: list[tuple[str, bytes]] = [("own-request.xml", request_bytes)]

    # The transport receipt acknowledges the attachment and the Body (DIGEST 7.5).
    acknowledged = {f"cid:{SEED_CID}", f"#{ebms.envelope_ids(request).body}"}
    refs = [ebms.NonRepudiationReference.from_element(r.element)  # type: ignore[arg-type]
            for r in signed.references if r.uri in acknowledged]
    receipt_env = ebms.build_envelope(
        ebms.receipt_signal(message_id=ebms.new_message_id(), timestamp=at,
                            ref_to_message_id=message_id, references=refs), None)
    wss.sign(receipt_env, pki.broker, now=at)
    envelopes.append(("own-transport-receipt.xml", envelope_bytes(receipt_env)))

    pull = ebms.pull_request(message_id=ebms.new_message_id(), timestamp=at, mpc=MPC)
    pull_env = ebms.build_envelope(pull, None)
    wss.sign(pull_env, pki.sender, now=at)
    envelopes.append(("own-pull-request.xml", envelope_bytes(pull_env)))

    for kind in ("levering", "feil"):
        envelopes.append((f"own-pulled-{kind}.xml", server.pulled_message_response(
            receipts[kind], pull_message_id=ebms.new_message_id(), mpc=MPC,
            broker=pki.broker, broker_orgnr=MELDINGSFORMIDLER_ORGNR, sender_orgnr=SENDER_ORGNR,
            now=at)))
    envelopes.append(("own-empty-queue.xml",
                      server.empty_queue_response(ebms.new_message_id(), pki.broker, now=at)))
    envelopes.append(("own-error.xml", server.error_response(
        "EBMS:0004", message_id, pki.broker, description="ikke støttet", now=at)))
    fault = ebms.soap_fault("Receiver", "Noe gikk galt")
    envelopes.append(("own-fault.xml", b"".join((
        b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>',
        etree.tostring(fault), b"</env:Body></env:Envelope>"))))
    seeds["envelope"].extend(envelopes)
    seeds["wssecurity"].extend(e for e in envelopes if b"Security" in e[1])

    # HTTP bodies: multipart/related with the package, and plain SOAP.
    body = mime.MultipartBody(request_bytes, mime.Attachment(SEED_CID, cms_bytes),
                              soap_content_id=SEED_SOAP_CID, boundary=SEED_BOUNDARY)
    multipart = body.to_bytes()
    assert body.content_type == DEFAULT_CONTENT_TYPE
    small = mime.MultipartBody(request_bytes, mime.Attachment(SEED_CID, b"\x30\x80cms"),
                               soap_content_id=SEED_SOAP_CID, boundary=SEED_BOUNDARY).to_bytes()
    seeds["mime"] += [
        ("own-multipart", mime_input(None, multipart)),
        ("own-multipart-small", mime_input(None, small)),
        ("own-multipart-ct", mime_input(body.content_type, small)),
        ("own-soap", mime_input(mime.SOAP_CONTENT_TYPE, envelopes[1][1])),
    ]
    return seeds


def _compact(xml: bytes) -> bytes:
    """Whitespace-only text between elements removed (as tests/test_wssecurity.py does)."""
    from lxml import etree

    from sdp import xmlparse

    root = xmlparse.parse(xml)
    for el in root.iter():
        if len(el) and el.text is not None and not el.text.strip():
            el.text = None
        if el.getparent() is not None and el.tail is not None and not el.tail.strip():
            el.tail = None
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def official_seeds(spec: Path = SPEC) -> Seeds:
    """The official examples, read in place; empty lists when the specification is absent."""
    seeds: Seeds = {name: [] for name in _common.TARGETS}
    examples = spec / "eksempler"
    komplette = spec / "nyinf" / "eksempler" / "komplette"

    def files(folder: Path, pattern: str) -> list[tuple[str, bytes]]:
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        return [(f"official-{p.name}", p.read_bytes()) for p in found
                if p.stat().st_size <= MAX_SEED_BYTES]

    soap = files(examples / "soap", "*.xml")
    seeds["envelope"] += soap
    # The examples were indented after signing; without that whitespace they verify up to
    # their (expired, untrusted) certificates, so mutants start from a valid signature.
    seeds["wssecurity"] += [(f"{name}-compact", _compact(data)) for name, data in soap
                            if b"Security" in data]
    seeds["sbd"] += files(examples, "*.xml") + files(spec / "nyinf" / "eksempler", "*.xml")
    seeds["cms"] += files(komplette, "*.cms")
    seeds["asice"] += files(komplette, "*.zip") + files(examples, "*.zip")
    seeds["mime"] += [(f"{name}.mime", mime_input("application/soap+xml; charset=UTF-8", data))
                      for name, data in soap[:4]]
    return seeds


def all_seeds(pki: Pki, spec: Path = SPEC) -> Seeds:
    seeds = own_seeds(pki)
    for name, found in official_seeds(spec).items():
        seeds[name].extend(found)
    return seeds


#: Tokens for libFuzzer's dictionary mutations (-dict=xml.dict).
DICTIONARY = [
    "<", ">", "</", "/>", "=\"", "xmlns:", "xmlns=", "<?xml version=\"1.0\"?>", "<!DOCTYPE",
    "<![CDATA[", "]]>", "<!--", "-->", "&amp;", "&#0;", "&#x10FFFF;", "<!ENTITY",
    "wsu:Id=", "Id=", "URI=\"#", "URI=\"\"", "URI=\"cid:", "cid:", "mustUnderstand=\"true\"",
    "env:Envelope", "env:Header", "env:Body", "env:Fault", "eb:Messaging", "eb:UserMessage",
    "eb:SignalMessage", "eb:Receipt", "eb:Error", "eb:PullRequest", "eb:PartInfo",
    "wsse:Security", "wsse:BinarySecurityToken", "wsu:Timestamp", "ds:Signature",
    "ds:SignedInfo", "ds:Reference", "ds:Transform", "ds:DigestValue", "ds:SignatureValue",
    "ds:X509Certificate", "ds:KeyInfo", "sbdh:StandardBusinessDocument", "sdp:kvittering",
    "sdp:feil", "sdp:digitalPost", "sdp:levering", "sdp:aapning", "sdp:varslingfeilet",
    "EBMS:0006", "http://www.w3.org/2003/05/soap-envelope",
    "http://www.w3.org/2000/09/xmldsig#", "http://begrep.difi.no/sdp/schema_v10",
    "2024-02-29T23:59:60Z", "9908:", "0192:", "\r\n", "\r\n\r\n", "--", "boundary=",
    "Content-Type: ", "Content-ID: <", "Content-Transfer-Encoding: base64",
    "Content-Transfer-Encoding: quoted-printable", "multipart/related", "start=\"<",
    "type=\"application/soap+xml\"", "charset=", "PK\x03\x04", "PK\x01\x02", "PK\x05\x06",
    "PK\x06\x06", "PK\x07\x08", "mimetype", "META-INF/", "META-INF/signatures.xml",
    "manifest.xml", "../", "\x30\x80", "\x00\x00", "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03",
    "\xa0\x80", "\x24\x80", "\x04\x82", "\x83\xff\xff\xff",
]


def _dict_line(token: str) -> str:
    escaped = "".join(c if 0x20 <= ord(c) < 0x7F and c not in "\\\"" else f"\\x{ord(c):02x}"
                      for c in token)
    return f'"{escaped}"'


def write(out: Path, pki: Pki) -> dict[str, int]:
    """Write every target's seeds to `out/seeds/<target>/` and the dictionary; counts."""
    counts: dict[str, int] = {}
    for name, found in all_seeds(pki).items():
        folder = out / "seeds" / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for seed_name, data in found:
            digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:8]
            (folder / f"{seed_name}-{digest}").write_bytes(data)
        counts[name] = len(found)
    (out / "xml.dict").write_text("\n".join(_dict_line(t) for t in DICTIONARY) + "\n",
                                  encoding="ascii")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=_common.WORK,
                        help="work folder (default: fuzz/.work, git-ignored)")
    parser.add_argument("--new-keys", action="store_true",
                        help="generate a fresh PKI (the seeds are signed at its creation time)")
    args = parser.parse_args(argv)
    keys = args.out / "keys"
    if args.new_keys or not (keys / "pki.json").is_file():
        _common.save_pki(_common.new_pki(), keys)
    pki = _common.load_pki(keys)
    _common.use_pki(pki)
    started = dt.datetime.now(dt.UTC)
    counts = write(args.out, pki)
    took = (dt.datetime.now(dt.UTC) - started).total_seconds()
    for name, n in counts.items():
        print(f"{name:12} {n:3} seeds")
    print(f"written to {args.out} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
