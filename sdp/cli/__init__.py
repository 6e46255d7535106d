"""The `sdp` command line: one sub-command module per area, all sharing these conventions.

Exit codes: 0 success/valid, 1 invalid/tampered/failed, 2 usage error. Every verb that
prints data takes `--json`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sdp import __version__
from sdp.cli import (
    broker_cmd,
    demo_cmd,
    devcerts_cmd,
    package_cmd,
    receipt_cmd,
    send_cmd,
    soap_cmd,
    validate_cmd,
)

#: Each command module exposes `register(subparsers)` which sets `func` on its parser.
_COMMANDS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    validate_cmd.register,
    package_cmd.register,
    soap_cmd.register,
    receipt_cmd.register,
    send_cmd.register,
    devcerts_cmd.register,
    broker_cmd.register,
    demo_cmd.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdp",
        description="Sikker Digital Post: validate, package, send and follow secure letters.",
    )
    parser.add_argument("--version", action="version", version=f"sdp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sdp ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
