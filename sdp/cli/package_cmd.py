"""`sdp package build | open | verify`: the document package from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdp.certificates import orgnr_of, subject_of
from sdp.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_json,
    add_password,
    emit,
    existing_file,
    fail,
    iso_time,
    load_identity,
    load_trust,
    password,
)
from sdp.errors import ConfigurationError, InputError, KeyMaterialError, SdpError
from sdp.keys import load_certificate, load_signing_identity
from sdp.package import cms
from sdp.package.documents import Document, ExtensionData
from sdp.package.dokumentpakke import (
    DEFAULT_MAX_PACKAGE_BYTES,
    OpenedPackage,
    build_package,
    open_container,
    open_package,
)
from sdp.package.manifest import EXTENSION_NAMESPACES
from sdp.parties import avsender, mottaker
from sdp.schemas import validate

EPILOG_BUILD = """examples:
  sdp package build --main vedtak.pdf --title "Vedtak" --attach info.html \\
      --sender-keystore avsender.p12 --recipient-cert postkasse.pem -o vedtak.cms
  SDP_KEYSTORE_PASSWORD=secret sdp package build --main brev.pdf --mottaker 01043100358 \\
      --postkasseadresse ola.nordmann#1ABC --sender-keystore avsender.p12 \\
      --recipient-cert postkasse.pem -o brev.cms --json
"""
EPILOG_OPEN = """examples:
  sdp package open brev.cms --key postkasse.p12 --out ./brev --trust ca.pem
  sdp package open old.cms --key postkasse.p12 --at 2015-01-01T00:00:00Z --json
"""
EPILOG_VERIFY = """examples:
  sdp package verify post.asice.zip
  sdp package verify post.asice.zip --trust root.cer --at 2015-01-01T00:00:00Z
"""

_KEY_TRANSPORTS = {"oaep-sha256": cms.KeyTransport.OAEP_SHA256,
                   "oaep-sha1": cms.KeyTransport.OAEP_SHA1}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pkg = sub.add_parser("package", help="build, open and verify document packages",
                         description="The document package (dokumentpakke): ASiC-E with a "
                         "XAdES signature, CMS-encrypted to the recipient.")
    verbs = pkg.add_subparsers(dest="verb", metavar="VERB", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    b = verbs.add_parser("build", help="build an encrypted package", epilog=EPILOG_BUILD,
                         formatter_class=raw)
    b.add_argument("--main", required=True, type=existing_file, help="the main document")
    b.add_argument("--title", help="title of the main document (may be sensitive)")
    b.add_argument("--mime", help="MIME type of the main document (default: from the suffix)")
    b.add_argument("--data", type=existing_file,
                   help="extension data (lenke/bevis/arrangement XML) for the main document")
    b.add_argument("--attach", action="append", default=[], type=existing_file,
                   metavar="FILE", help="an attachment (repeatable, at most 200)")
    b.add_argument("--attach-title", action="append", default=[], metavar="TITLE",
                   help="title of each --attach, in order")
    b.add_argument("--lang", default="NO", help="language of the titles (default NO)")
    b.add_argument("--avsender", metavar="ORGNR",
                   help="behandlingsansvarlig (default: the orgnr in the sender certificate)")
    b.add_argument("--mottaker", metavar="FNR", help="recipient's identity number (digital post)")
    b.add_argument("--postkasseadresse", help="recipient's mailbox address (with --mottaker)")
    b.add_argument("--sender-keystore", required=True, type=existing_file,
                   help="PKCS#12, PEM or JKS with the sender's key and certificate chain")
    add_password(b)
    b.add_argument("--alias", help="keystore alias (JKS)")
    b.add_argument("--recipient-cert", required=True, type=existing_file,
                   help="certificate the package is encrypted to (PEM or DER)")
    b.add_argument("--key-transport", choices=sorted(_KEY_TRANSPORTS), default="oaep-sha256")
    b.add_argument("--max-size", type=int, default=DEFAULT_MAX_PACKAGE_BYTES,
                   help="limit on the encrypted package in bytes (default 30 MiB)")
    b.add_argument("--allow-other-mime-types", action="store_true",
                   help="accept MIME types outside the SDP list")
    b.add_argument("-o", "--output", required=True, type=Path, help="where to write the CMS")
    add_json(b)
    b.set_defaults(func=run_build)

    o = verbs.add_parser("open", help="decrypt, verify and unpack a package",
                         epilog=EPILOG_OPEN, formatter_class=raw)
    o.add_argument("input", type=existing_file, metavar="IN.cms")
    o.add_argument("--key", required=True, type=existing_file,
                   help="the recipient's PKCS#12, PEM or JKS")
    add_password(o)
    o.add_argument("--alias", help="keystore alias (JKS)")
    o.add_argument("--out", type=Path, help="folder to write the documents into")
    _add_trust(o)
    add_json(o)
    o.set_defaults(func=run_open)

    v = verbs.add_parser("verify", help="verify an unencrypted ASiC-E container",
                         epilog=EPILOG_VERIFY, formatter_class=raw)
    v.add_argument("input", type=existing_file, metavar="IN.asice")
    _add_trust(v)
    add_json(v)
    v.set_defaults(func=run_verify)


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", action="append", type=existing_file, metavar="CA.pem",
                   help="trust anchor(s) for the signer's chain (repeatable)")
    p.add_argument("--at", type=iso_time, metavar="TIME",
                   help="validation time, ISO 8601 (default: now); for archived packages")


def run_build(args: argparse.Namespace) -> int:
    try:
        signer = load_identity(args.sender_keystore, args, alias=args.alias)
        recipient = load_certificate(args.recipient_cert)
        orgnr = args.avsender or orgnr_of(signer.certificate)
        if orgnr is None:
            raise UsageError("the sender certificate carries no orgnr; give --avsender")
        if bool(args.mottaker) != bool(args.postkasseadresse):
            raise UsageError("--mottaker and --postkasseadresse go together")
        if len(args.attach_title) > len(args.attach):
            raise UsageError("more --attach-title than --attach")
        main = Document.from_path(args.main, mime_type=args.mime, title=args.title,
                                  language=args.lang, data=_data(args.data))
        attachments = [
            Document.from_path(p, title=(args.attach_title[i] if i < len(args.attach_title)
                                         else None), language=args.lang)
            for i, p in enumerate(args.attach)
        ]
        recipient_party = (mottaker(args.mottaker, args.postkasseadresse)
                           if args.mottaker else None)
        if args.output.exists():
            raise UsageError(f"{args.output} exists; refusing to overwrite")
        partial = args.output.with_name(args.output.name + ".part")
        try:
            with partial.open("wb") as out:
                built = build_package(
                    out, hoveddokument=main, vedlegg=attachments, avsender=avsender(orgnr),
                    mottaker=recipient_party, signer=signer, recipient=recipient,
                    key_transport=_KEY_TRANSPORTS[args.key_transport],
                    max_package_bytes=args.max_size,
                    allow_other_mime_types=args.allow_other_mime_types)
            partial.replace(args.output)  # nothing half-written under the real name
        finally:
            partial.unlink(missing_ok=True)
    except (UsageError, KeyMaterialError, ConfigurationError) as exc:
        return fail(args, exc, EXIT_USAGE)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    data = {
        "ok": True, "output": str(args.output), "size": built.size,
        "fingerprint_sha256_base64": built.fingerprint_base64,
        "fingerprint_sha256_hex": built.fingerprint.hex(),
        "files": [{"name": e.name, "mime": e.mime_type, "sha256": e.sha256.hex()}
                  for e in built.entries],
    }
    emit(args, data, [
        f"wrote {args.output} ({built.size} bytes)",
        f"dokumentpakkefingeravtrykk (SHA-256): {built.fingerprint_base64}",
        *(f"  {e.name}  {e.mime_type}" for e in built.entries),
    ])
    return EXIT_OK


def _data(path: Path | None) -> ExtensionData | None:
    if path is None:
        return None
    content = path.read_bytes()
    kind = EXTENSION_NAMESPACES.get(validate(content, what=str(path)).namespace)
    if kind is None:
        raise InputError("not a lenke, bevis or arrangement document", subject=str(path))
    return ExtensionData(content, path.name, f"application/vnd.difi.dpi.{kind}+xml")


def run_open(args: argparse.Namespace) -> int:
    try:
        identity = load_signing_identity(args.key, password(args), alias=args.alias)
        trust = load_trust(args.trust)
        if args.out and args.out.exists() and any(args.out.iterdir()):
            raise UsageError(f"{args.out} is not empty; refusing to overwrite")
    except (UsageError, KeyMaterialError, ConfigurationError) as exc:
        return fail(args, exc, EXIT_USAGE)
    try:
        with open_package(args.input, identity.key, identity.certificate, at=args.at,
                          trust=trust) as pkg:
            written = _write_out(pkg, args.out) if args.out else []
            return _report(args, pkg, written, trusted=trust is not None)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)


def run_verify(args: argparse.Namespace) -> int:
    try:
        trust = load_trust(args.trust)
    except (KeyMaterialError, ConfigurationError) as exc:
        return fail(args, exc, EXIT_USAGE)
    try:
        with open_container(args.input, at=args.at, trust=trust) as pkg:
            return _report(args, pkg, [], trusted=trust is not None)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)


def _write_out(pkg: OpenedPackage, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    names = [d.href for d in pkg.documents] + [d.data_href for d in pkg.documents if d.data_href]
    for name in [*names, "manifest.xml"]:
        # Names were checked by the container reader: plain files at the zip root.
        target = folder / name
        with target.open("xb") as out:
            for chunk in pkg.container.entries[name].iter_chunks():
                out.write(chunk)
        written.append(str(target))
    return written


def _report(args: argparse.Namespace, pkg: OpenedPackage, written: list[str],
            *, trusted: bool) -> int:
    sig = pkg.signature
    m = pkg.manifest
    data: dict[str, Any] = {
        "ok": True,
        "signer": {"subject": subject_of(sig.signer), "orgnr": orgnr_of(sig.signer),
                   "chain_verified": trusted},
        "signing_time": sig.signing_time.isoformat(),
        "avsender": m.avsender.organisasjon.value,
        "mottaker": (m.mottaker.person.personidentifikator if m.mottaker else None),
        "documents": [{"href": d.href, "mime": d.mime_type, "title": d.title,
                       "main": d.is_main, "size": d.entry.size, "data": d.data_href}
                      for d in pkg.documents],
        "written": written,
    }
    lines = [
        f"signature valid; signer {data['signer']['subject']} (orgnr {data['signer']['orgnr']})"
        + ("" if trusted else "; chain NOT checked (no --trust)"),
        f"signed at {data['signing_time']}; avsender {data['avsender']}",
    ]
    for d in data["documents"]:
        lines.append(f"  {'main' if d['main'] else 'vedlegg'}: {d['href']} ({d['mime']}, "
                     f"{d['size']} bytes){' - ' + d['title'] if d['title'] else ''}")
    lines += [f"wrote {w}" for w in written]
    emit(args, data, lines)
    return EXIT_OK
