"""`sdp send digital | physical`, `sdp receipts pull`, `sdp status`: the sender's daily work.

Every command reads the configuration (sdp.toml < SDP_* variables < flags), records in the
local store before anything goes out, and explains failures in one line with the field and
the rule. Exit codes: 0 done, 1 rejected or failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

from sdp.certificates import orgnr_of
from sdp.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_json,
    emit,
    existing_file,
    fail,
    iso_time,
)
from sdp.client import SdpClient
from sdp.config import Config, add_config_arguments, config_from_args
from sdp.consignment import (
    Forsendelse,
    digital_post_info,
    epost_varsel,
    fysisk_post_info,
    norsk_adresse,
    sms_varsel,
    utenlandsk_adresse,
)
from sdp.errors import (
    ConfigurationError,
    KeyMaterialError,
    OutcomeUnknownError,
    SdpError,
    SignatureError,
)
from sdp.keys import load_certificate
from sdp.outbox import Outbox, pull_receipts
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp.store import Event, RecipientProtection, SqliteStore, State
from sdp.store.protection import KEY_ENV
from sdp.transport import ConnectError
from sdp_bindings import sdp as s

EPILOG_DIGITAL = """examples:
  sdp send digital --to 01043100358 --postkasseadresse ola.nordmann#1ABC \\
      --recipient-cert postkasse.pem --mailbox-orgnr 984661185 --main vedtak.pdf \\
      --title "Vedtak" --non-sensitive-title "Brev fra kommunen" --opening-receipt
  sdp send digital ... --email ola@example.no --sms +4799999999 --notify-days 0,7 \\
      --effective-time 2026-12-01T08:00:00+01:00 --priority --mpc-id batch-7
"""
EPILOG_PHYSICAL = """examples:
  sdp send physical --name "Ola Nordmann" --address "Gata 1" --postcode 0473 --city Oslo \\
      --return-name "Kommunen" --return-address "Postboks 1" --return-postcode 0101 \\
      --return-city Oslo --print-cert print.pem --print-orgnr 889640782 --main brev.pdf
  sdp send physical --name "Kari" --address "Storgatan 1" --address "111 22 Stockholm" \\
      --country SE ... --posttype A --colour farge --return-handling makulering-med-melding
"""
EPILOG_PULL = """examples:
  sdp receipts pull                      # empty the normal queue once
  sdp receipts pull --priority --mpc-id batch-7
  sdp receipts pull --follow             # keep pulling, honouring the minimum waits
"""
EPILOG_STATUS = """examples:
  sdp status 6d0ec155-b4f7-43c3-908e-211d68c9cf09
  sdp status --list --state SENT --json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    send = sub.add_parser("send", help="send digital or physical post",
                          description="Build, sign, record and send one consignment.")
    kinds = send.add_subparsers(dest="kind", metavar="KIND", required=True)

    d = kinds.add_parser("digital", help="to a digital mailbox", epilog=EPILOG_DIGITAL,
                         formatter_class=raw)
    d.add_argument("--to", required=True, metavar="FNR", help="fødselsnummer or D-nummer")
    d.add_argument("--postkasseadresse", required=True, help="mailbox address from KRR")
    d.add_argument("--recipient-cert", required=True, type=existing_file,
                   help="encryption certificate from KRR (PEM or DER)")
    d.add_argument("--mailbox-orgnr", required=True, help="mailbox provider orgnr from KRR")
    d.add_argument("--non-sensitive-title",
                   help="title shown before login and in notices (default: --title)")
    d.add_argument("--security-level", type=int, choices=(3, 4), default=4)
    d.add_argument("--opening-receipt", action="store_true", help="ask for an Aapningskvittering")
    d.add_argument("--effective-time", type=iso_time, metavar="TIME",
                   help="virkningstidspunkt, ISO 8601")
    d.add_argument("--email", help="e-mail notice address")
    d.add_argument("--sms", help="SMS notice number")
    d.add_argument("--notice-text", default="Du har fått post.",
                   help="notice text (sent unencrypted: no personal data)")
    d.add_argument("--notify-days", default="0", metavar="0,7",
                   help="days after the effective date to notify (0-25)")
    d.add_argument("--allow-synthetic", action="store_true",
                   help="accept the test environments' synthetic identity numbers")
    _common_send(d)
    d.set_defaults(func=run_send)

    p = kinds.add_parser("physical", help="printed and posted", epilog=EPILOG_PHYSICAL,
                         formatter_class=raw)
    p.add_argument("--name", required=True)
    p.add_argument("--address", action="append", default=[], metavar="LINE")
    p.add_argument("--postcode")
    p.add_argument("--city")
    p.add_argument("--country", metavar="CODE", help="ISO 3166 alpha-2, for foreign addresses")
    p.add_argument("--return-name", required=True)
    p.add_argument("--return-address", action="append", default=[], metavar="LINE")
    p.add_argument("--return-postcode", required=True)
    p.add_argument("--return-city", required=True)
    p.add_argument("--return-handling", choices=("direkte-retur", "makulering-med-melding"),
                   default="direkte-retur")
    p.add_argument("--posttype", choices=("A", "B"), default="B")
    p.add_argument("--colour", choices=("sort-hvit", "farge"), default="sort-hvit")
    p.add_argument("--print-instruction", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--print-cert", required=True, type=existing_file,
                   help="print provider's encryption certificate")
    p.add_argument("--print-orgnr", required=True, help="print provider orgnr")
    _common_send(p)
    p.set_defaults(func=run_send)

    r = sub.add_parser("receipts", help="pull, verify, store and confirm receipts")
    verbs = r.add_subparsers(dest="verb", metavar="VERB", required=True)
    pull = verbs.add_parser("pull", help="pull receipts until the queue is empty",
                            epilog=EPILOG_PULL, formatter_class=raw)
    pull.add_argument("--priority", action="store_true", help="the prioritised queue")
    pull.add_argument("--mpc-id", help="the MPC id the consignments were sent with")
    pull.add_argument("--follow", action="store_true", help="keep pulling until interrupted")
    pull.add_argument("--max-rounds", type=int, help=argparse.SUPPRESS)  # tests: bound --follow
    add_config_arguments(pull)
    add_json(pull)
    pull.set_defaults(func=run_pull)

    st = sub.add_parser("status", help="a consignment's timeline, or the list",
                        epilog=EPILOG_STATUS, formatter_class=raw)
    st.add_argument("conversation_id", nargs="?", metavar="CONVERSATION_ID")
    st.add_argument("--list", action="store_true", help="list consignments")
    st.add_argument("--state", choices=[x.name for x in State], help="with --list")
    st.add_argument("--limit", type=int, default=50)
    add_config_arguments(st)
    add_json(st)
    st.set_defaults(func=run_status)


def _common_send(p: argparse.ArgumentParser) -> None:
    p.add_argument("--main", required=True, type=existing_file, help="the main document")
    p.add_argument("--title", help="title of the main document (may be sensitive)")
    p.add_argument("--attach", action="append", default=[], type=existing_file, metavar="FILE")
    p.add_argument("--attach-title", action="append", default=[], metavar="TITLE")
    p.add_argument("--lang", default="NO", help="language of titles and texts")
    p.add_argument("--priority", action="store_true", help="send on the prioritised queue")
    p.add_argument("--mpc-id", help="MPC id to separate this sender's receipts")
    p.add_argument("--on-behalf-of", metavar="ORGNR",
                   help="the avsender when you send as its databehandler")
    add_config_arguments(p)
    add_json(p)


# --- shared -------------------------------------------------------------------------------


def open_store(config: Config) -> SqliteStore:
    """The store with recipients hashed: the key from $SDP_STORE_KEY, else a key file kept
    apart from the database (created once, mode 0600)."""
    if os.environ.get(KEY_ENV) or os.environ.get("SDP_STORE_PROTECTION") == "plain":
        protection = RecipientProtection.from_env()
    else:
        key_file = _key_file()
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(RecipientProtection.new_key().hex())
        protection = RecipientProtection.hashed(bytes.fromhex(key_file.read_text().strip()))
    config.store.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(config.store, protection=protection)


def _key_file() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "sikker-digital-post" / "store.key"


def make_client(config: Config) -> SdpClient:
    return SdpClient(config.environment_object(), config.signing_identity(),
                     timeouts=config.timeouts(), log_bodies=config.log_bodies)


def _documents(args: argparse.Namespace) -> tuple[Document, list[Document]]:
    if len(args.attach_title) > len(args.attach):
        raise UsageError("more --attach-title than --attach")
    main = Document.from_path(args.main, title=args.title, language=args.lang)
    attachments = [Document.from_path(p, language=args.lang,
                                      title=args.attach_title[i] if i < len(args.attach_title)
                                      else None) for i, p in enumerate(args.attach)]
    return main, attachments


def _forsendelse(args: argparse.Namespace, config: Config, own_orgnr: str) -> Forsendelse:
    main, attachments = _documents(args)
    behalf = args.on_behalf_of
    common: dict[str, Any] = dict(
        avsender=avsender(behalf or config.orgnr or own_orgnr), hoveddokument=main,
        vedlegg=attachments, prioritert=args.priority, mpc_id=args.mpc_id or config.mpc_id,
        databehandler_orgnr=own_orgnr if behalf else None)
    if args.kind == "digital":
        days = [int(x) for x in args.notify_days.split(",") if x.strip()]
        title = args.non_sensitive_title or args.title
        if not title:
            raise UsageError("give --non-sensitive-title (or --title): it is required")
        info = digital_post_info(
            title, sikkerhetsnivaa=args.security_level, aapningskvittering=args.opening_receipt,
            virkningstidspunkt=args.effective_time, lang=args.lang,
            epost=epost_varsel(args.email, args.notice_text, days, lang=args.lang)
            if args.email else None,
            sms=sms_varsel(args.sms, args.notice_text, days, lang=args.lang)
            if args.sms else None)
        return Forsendelse(**common, mottaker=mottaker(args.to, args.postkasseadresse,
                                                       allow_synthetic=args.allow_synthetic),
                           digital_post_info=info,
                           recipient_certificate=load_certificate(args.recipient_cert),
                           receiver_orgnr=args.mailbox_orgnr)
    if args.country:
        to = utenlandsk_adresse(args.name, args.country, *args.address)
    else:
        if not (args.postcode and args.city):
            raise UsageError("a Norwegian address needs --postcode and --city (or --country)")
        to = norsk_adresse(args.name, args.postcode, args.city, *args.address)
    back = norsk_adresse(args.return_name, args.return_postcode, args.return_city,
                         *args.return_address)
    instructions = {}
    for item in args.print_instruction:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--print-instruction {item!r}: expected NAME=VALUE")
        instructions[name] = value
    info_p = fysisk_post_info(
        to, back,
        returhaandtering=s.FysiskPostReturhaandtering(
            args.return_handling.upper().replace("-", "_")),
        posttype=s.FysiskPostType(args.posttype),
        utskriftsfarge=s.Utskriftsfarge(args.colour.upper().replace("-", "_")),
        printinstruksjoner=instructions or None)
    return Forsendelse(**common, fysisk_post_info=info_p,
                       recipient_certificate=load_certificate(args.print_cert),
                       receiver_orgnr=args.print_orgnr)


def _outbox_dir(config: Config) -> Path:
    return config.store.parent / "outbox"


# --- commands -----------------------------------------------------------------------------


def run_send(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        client = make_client(config)
        own = orgnr_of(client.signer.certificate)
        if own is None:
            raise UsageError("the sender certificate carries no orgnr")
        forsendelse = _forsendelse(args, config, config.databehandler or own)
        store = open_store(config)
    except (UsageError, ConfigurationError, KeyMaterialError) as exc:
        return fail(args, exc, EXIT_USAGE)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    try:
        with client, store:
            outbox = Outbox(client, store, _outbox_dir(config))
            outbox.resume()  # anything an earlier run left without an answer
            result = outbox.send(forsendelse)
    except (OutcomeUnknownError, ConnectError, SignatureError) as exc:
        what = ("the broker's answer could not be verified" if isinstance(exc, SignatureError)
                else "the broker's answer never arrived")
        print(f"{what}; the consignment is recorded and will be resent with the same "
              "MessageId by the next `sdp send` or `sdp receipts pull`", file=sys.stderr)
        return fail(args, exc, EXIT_INVALID)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    emit(args, {
        "ok": True, "conversation_id": result.conversation_id, "message_id": result.message_id,
        "sbd_instance_identifier": result.sbd_instance_identifier,
        "fingerprint": result.fingerprint.hex(), "attempts": result.attempts,
        "transport_receipt": result.transport_receipt.message_id,
    }, [
        f"sent; conversation id {result.conversation_id}",
        f"  ebMS MessageId {result.message_id} (acknowledged by the broker, "
        f"receipt {result.transport_receipt.message_id})",
        f"  follow it with: sdp status {result.conversation_id}",
    ])
    return EXIT_OK


def run_pull(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        client = make_client(config)
        store = open_store(config)
    except (UsageError, ConfigurationError, KeyMaterialError) as exc:
        return fail(args, exc, EXIT_USAGE)
    priority = args.priority or config.priority
    mpc_id = args.mpc_id or config.mpc_id
    wait = client.environment.min_pull_interval(priority).total_seconds()
    totals: dict[str, int] = {}
    duplicates = orphans = rounds = 0
    live = sys.stderr.isatty() and not args.json
    try:
        with client, store:
            Outbox(client, store, _outbox_dir(config)).resume()
            while True:
                rounds += 1
                summary = pull_receipts(client, store, priority=priority, mpc_id=mpc_id)
                for kind, n in summary.by_kind.items():
                    totals[kind] = totals.get(kind, 0) + n
                duplicates += summary.duplicates
                orphans += summary.orphans
                line = ", ".join(f"{k} {n}" for k, n in sorted(totals.items())) or "none"
                if live:
                    print(f"\rreceipts: {line}; queue empty, next pull in {wait:.0f} s   ",
                          end="", file=sys.stderr, flush=True)
                if not args.follow or (args.max_rounds and rounds >= args.max_rounds):
                    break
                # DIGEST 8.2: wait at least 10 min (normal) / 1 min (prioritised) after an
                # empty pull against the real service; the simulator allows zero.
                time.sleep(max(wait, 0.2))
    except KeyboardInterrupt:
        pass
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    if live:
        print(file=sys.stderr)
    emit(args, {"ok": True, "receipts": totals, "duplicates": duplicates, "orphans": orphans},
         [f"receipts pulled, verified, stored and confirmed: {sum(totals.values())}"
          + (f" ({', '.join(f'{k} {n}' for k, n in sorted(totals.items()))})" if totals else ""),
          *([f"of which re-deliveries recognised and not applied again: {duplicates}"]
            if duplicates else []),
          *([f"receipts for unknown consignments (kept): {orphans}"] if orphans else [])])
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        store = open_store(config)
    except (UsageError, ConfigurationError, KeyMaterialError) as exc:
        return fail(args, exc, EXIT_USAGE)
    with store:
        if args.list or not args.conversation_id:
            records = store.list(State[args.state] if args.state else None, limit=args.limit)
            emit(args, {"consignments": [
                {"conversation_id": r.conversation_id, "state": r.state.name,
                 "kind": r.kind.value, "updated": r.updated_at.isoformat()} for r in records]},
                 [f"{r.conversation_id}  {r.state.name:<18} {r.kind.value:<9} "
                  f"{r.updated_at:%Y-%m-%d %H:%M:%S}" for r in records] or ["no consignments"])
            return EXIT_OK
        record = store.get(args.conversation_id)
        if record is None:
            return fail(args, UsageError(f"no consignment {args.conversation_id} in "
                                         f"{config.store}"), EXIT_INVALID)
        events = store.timeline(args.conversation_id)
        emit(args, {"conversation_id": record.conversation_id, "state": record.state.name,
                    "timeline": [{"at": e.at.isoformat(), "what": e.what,
                                  "state": e.state.name if e.state else None,
                                  "detail": e.detail} for e in events]},
             [f"{record.conversation_id}: {record.state.name} ({record.kind.value})",
              *timeline_lines(events)])
    return EXIT_OK


def timeline_lines(events: list[Event]) -> list[str]:
    return [f"  {e.at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}Z  "
            f"{(e.state.name if e.state else e.what):<18} {e.detail}" for e in events]
