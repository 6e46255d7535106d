"""`sdp broker serve`: run the local meldingsformidler simulator (DIGEST 14)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sdp.broker import Broker, load_dev_certs, load_scenarios, serve
from sdp.broker.certs import DEFAULT_PASSWORD, PASSWORD_ENV
from sdp.cli.common import EXIT_INVALID, EXIT_OK, fail
from sdp.errors import SdpError
from sdp.identifiers import parse_orgnr

#: The port in the client configuration `sdp dev-certs` writes.
DEFAULT_PORT = 8040

EPILOG = f"""examples:
  sdp dev-certs dev-certs/
  sdp broker serve --certs dev-certs/ --data broker-data/
  sdp broker serve --certs dev-certs/ --port 0 --scenarios scenarios.toml
  sdp broker serve --certs dev-certs/ --sender 991825827 --window 30

--certs DIR is the folder `sdp dev-certs` writes: ca.pem (trust anchor, PEM), broker.p12,
mailbox.p12 and optionally print.p12 and ca.p12 (PKCS#12 with key, certificate and chain).
Keystore password: ${PASSWORD_ENV}, else "{DEFAULT_PASSWORD}".

A scenario file (TOML, or JSON by its .json suffix) chooses outcomes per recipient and
injects faults; without one, every consignment takes the happy path:

  [[rule]]
  personidentifikator = "01043100358"   # or postkasseadresse / conversation_id
  outcome = "notice-failed"              # delivered opened notice-failed rejected
  varslingskanal = "SMS"                 #   printed returned silent
  beskrivelse = "Ugyldig mobilnummer"
  delay = 5                              # seconds until the first receipt shows

  [[fault]]
  type = "http-500"   # drop-before-read drop-after-processing http-500 slow truncate
  on = "send"         # send | signal | any
  times = 1           # 0 = every request

State (messages, consignments, receipt queues) lives in DIR/broker.sqlite3 under --data;
restarting on the same folder loses nothing. Stop with Ctrl-C or SIGTERM.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="run a local meldingsformidler simulator",
        description="A local message broker (meldingsformidler) with simulated mailbox and "
        "print providers, for development and integration tests.",
    )
    verbs = p.add_subparsers(dest="broker_command", metavar="VERB", required=True)
    s = verbs.add_parser(
        "serve",
        help="serve the ebMS endpoint at http://HOST:PORT/api/ebms",
        description="Verify consignments, answer with signed transport receipts or ebMS "
        "errors, and queue signed business receipts for senders to pull.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}, the URL `sdp dev-certs` configures; "
                   "0 picks a free one)")
    s.add_argument("--data", type=Path, default=Path("sdp-broker-data"), metavar="DIR",
                   help="state folder (default ./sdp-broker-data)")
    s.add_argument("--scenarios", type=Path, metavar="FILE",
                   help="scenario file, TOML or JSON (default: the happy path)")
    s.add_argument("--certs", type=Path, default=Path("dev-certs"), metavar="DIR",
                   help="development PKI folder from `sdp dev-certs` (default ./dev-certs)")
    s.add_argument("--sender", action="append", metavar="ORGNR",
                   help="registered sender orgnr; repeat for several (default: any sender "
                   "whose certificate chains to the CA)")
    s.add_argument("--window", type=float, default=300.0, metavar="SECONDS",
                   help="how long a pulled, unconfirmed receipt stays hidden (default 300)")
    s.add_argument("-v", "--verbose", action="store_true", help="log every request")
    s.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        certs = load_dev_certs(args.certs)
        scenarios = load_scenarios(args.scenarios) if args.scenarios else None
        senders = ([parse_orgnr(o, field="--sender") for o in args.sender]
                   if args.sender else None)
        if args.window < 0:
            raise SdpError("must be >= 0", subject="--window")
        broker = Broker(
            identity=certs.broker, mailbox=certs.mailbox, print_provider=certs.print_provider,
            trust=certs.trust, intermediates=certs.intermediates, registered_senders=senders,
            data_dir=args.data, scenarios=scenarios,
            invisibility_window=dt.timedelta(seconds=args.window), fault_issuer=certs.ca)
    except SdpError as exc:
        return fail(args, exc, EXIT_INVALID)
    try:
        running = serve(broker, args.host, args.port)
    except OSError as exc:
        broker.close()
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    print(f"meldingsformidler simulator at {running.url}", flush=True)
    print(f"  broker orgnr {broker.orgnr}, mailbox {broker.mailbox_orgnr}, print "
          f"{broker.print_orgnr or '-'}; state in {args.data}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        running.stop()
        print("stopped", file=sys.stderr)
    return EXIT_OK
