"""`sdp demo`: the whole flow on one machine in under 30 seconds, with nothing to set up.

A development PKI, a local meldingsformidler with mailbox and print provider behind it, a
digital letter (PDF, an attachment and a lenke extension, opening receipt and an e-mail
notice) and a physical letter, sent with the real client, receipts pulled, verified, stored
and confirmed, and each consignment's timeline printed. Exit 0 only if all of it happened.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from sdp.bindings import to_xml
from sdp.broker import Broker, load_dev_certs, serve
from sdp.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from sdp.cli.send_cmd import timeline_lines
from sdp.client import SdpClient
from sdp.config import load_config
from sdp.consignment import (
    Forsendelse,
    digital_post_info,
    epost_varsel,
    fysisk_post_info,
    norsk_adresse,
)
from sdp.errors import SdpError
from sdp.outbox import Outbox, pull_receipts
from sdp.package.documents import Document, ExtensionData
from sdp.parties import avsender, mottaker
from sdp.store import RecipientProtection, SqliteStore, State
from sdp_bindings import lenke as lk

DEADLINE_SECONDS = 30.0
#: What each consignment must reach (DIGEST 11.1).
EXPECTED = {"digital": State.OPENED, "physical": State.DELIVERED}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="run the whole flow locally against the built-in simulator",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  sdp demo\n  sdp demo --dir ./demo   # keep the PKI, store and "
        "broker data\n")
    p.add_argument("--dir", type=Path, help="folder for the PKI, store and broker data "
                   "(default: a temporary folder, removed afterwards)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dir is not None:
        if args.dir.exists() and any(args.dir.iterdir()):
            print(f"error: {args.dir} is not empty", flush=True)
            return EXIT_USAGE
        args.dir.mkdir(parents=True, exist_ok=True)
        return _demo(args.dir)
    with tempfile.TemporaryDirectory(prefix="sdp-demo-") as tmp:
        return _demo(Path(tmp))


def _step(text: str) -> None:
    print(f"* {text}", flush=True)


def _demo(base: Path) -> int:
    started = time.monotonic()
    from sdp.cli import main  # the dev-certs command itself, so the demo uses what users use

    _step("creating a development PKI (CA, meldingsformidler, sender, mailbox, print provider)")
    with contextlib.redirect_stdout(io.StringIO()):
        if main(["dev-certs", str(base / "pki"), "--password", "changeit"]) != 0:
            return EXIT_INVALID
    certs = load_dev_certs(base / "pki", "changeit")
    broker = Broker(identity=certs.broker, mailbox=certs.mailbox,
                    print_provider=certs.print_provider, trust=certs.trust,
                    intermediates=certs.intermediates, data_dir=base / "broker")
    with serve(broker) as running:
        _step(f"meldingsformidler simulator listening on {running.url}")
        config = load_config(base / "pki" / "sdp.toml", env={},
                             overrides={"environment": running.url, "password": "changeit",
                                        "store": base / "store.sqlite"})
        store = SqliteStore(config.store,
                            protection=RecipientProtection.hashed(RecipientProtection.new_key()))
        client = SdpClient(config.environment_object(), config.signing_identity(),
                           timeouts=config.timeouts())
        try:
            with client, store:
                return _exchange(client, store, base, certs.mailbox.certificate,
                                 certs.print_provider.certificate if certs.print_provider
                                 else None, started)
        except SdpError as exc:
            print(f"error ({type(exc).__name__}): {exc}", flush=True)
            return EXIT_INVALID


def _exchange(client: SdpClient, store: SqliteStore, base: Path, mailbox_cert: object,
              print_cert: object, started: float) -> int:
    from sdp.certificates import orgnr_of

    sender_orgnr = orgnr_of(client.signer.certificate) or ""
    mailbox_orgnr = orgnr_of(mailbox_cert) or ""  # type: ignore[arg-type]
    print_orgnr = orgnr_of(print_cert) or ""  # type: ignore[arg-type]
    outbox = Outbox(client, store, base / "outbox")

    digital = Forsendelse(
        avsender=avsender(sender_orgnr),
        mottaker=mottaker("01043100358", "ola.nordmann#1ABC"),
        digital_post_info=digital_post_info(
            "Brev fra Demo kommune", aapningskvittering=True,
            epost=epost_varsel("ola.nordmann@example.no", "Du har fått post.", [0, 7])),
        hoveddokument=Document(_pdf("Vedtak om barnehageplass"), "vedtak.pdf",
                               "application/pdf", title="Vedtak om barnehageplass"),
        vedlegg=[Document(b"<html><body><h1>Informasjon</h1><p>Svar innen fristen.</p>"
                          b"</body></html>", "informasjon.html", "text/html",
                          title="Informasjon", data=_lenke())],
        recipient_certificate=mailbox_cert, receiver_orgnr=mailbox_orgnr)  # type: ignore[arg-type]
    adr = norsk_adresse("Ola Nordmann", "0473", "Oslo", "Storgata 1")
    retur = norsk_adresse("Demo kommune", "0101", "Oslo", "Postboks 1")
    physical = Forsendelse(
        avsender=avsender(sender_orgnr), fysisk_post_info=fysisk_post_info(adr, retur),
        hoveddokument=Document(_pdf("Faktura"), "faktura.pdf", "application/pdf",
                               title="Faktura"),
        recipient_certificate=print_cert, receiver_orgnr=print_orgnr)  # type: ignore[arg-type]

    sent = {}
    for name, f in (("digital", digital), ("physical", physical)):
        result = outbox.send(f)
        sent[name] = result.conversation_id
        _step(f"sent {name} post: conversation {result.conversation_id}, transport receipt "
              f"verified")

    _step("pulling receipts (verify, store, confirm) until every consignment is final")
    while True:
        summary = pull_receipts(client, store)
        for kind, n in sorted(summary.by_kind.items()):
            _step(f"  {n} x {kind}")
        states = {name: store.get(cid).state for name, cid in sent.items()}  # type: ignore[union-attr]
        if all(states[n] is EXPECTED[n] for n in sent):
            break
        if time.monotonic() - started > DEADLINE_SECONDS:
            print(f"error: not every receipt arrived within {DEADLINE_SECONDS:.0f} s: "
                  f"{ {n: s.name for n, s in states.items()} }", flush=True)
            return EXIT_INVALID
        time.sleep(0.2)

    for name, cid in sent.items():
        record = store.get(cid)
        assert record is not None
        print(f"\n{name} post {cid}: {record.state.name}")
        for line in timeline_lines(store.timeline(cid)):
            print(line)
    print(f"\ndone in {time.monotonic() - started:.1f} s", flush=True)
    return EXIT_OK


def _lenke() -> ExtensionData:
    xml = to_xml(lk.Lenke(url="https://www.example.no/svar",
                          beskrivelse=lk.LenkeBeskrivelseTekst(value="Svar på vedtaket",
                                                                lang="nb"),
                          knapp_tekst=lk.LenkeKnappTekst(value="Svar", lang="nb")),
                 ns_map={None: "http://begrep.difi.no/sdp/utvidelser/lenke"})  # type: ignore[dict-item]
    return ExtensionData(xml, "lenke.xml", "application/vnd.difi.dpi.lenke+xml")


def _pdf(text: str) -> bytes:
    """A small, valid one-page PDF with `text`, made here so the demo needs no files."""
    safe = text.encode("latin-1", "replace").replace(b"(", b"[").replace(b")", b"]")
    stream = b"BT /F1 18 Tf 72 720 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n"
            "%%EOF\n").encode()
    return bytes(out)

