"""`sdp validate FILE...`: check documents against the official schemas."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sdp.errors import SchemaValidationError, SdpError
from sdp.schemas import validate

EPILOG = """examples:
  sdp validate ../shared/sdp-spec/eksempler/sdpMelding-digital.xml
  sdp validate --json manifest.xml receipt.xml
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="validate XML documents against the official SDP schemas",
        description="Tell which official schema each file's root belongs to and list every "
        "violation with its element path. Exits 1 if any file is invalid.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object with a result per file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    for path in args.files:
        result: dict[str, Any] = {"file": str(path)}
        try:
            if not path.is_file():
                raise SdpError("no such file", subject=str(path))
            found = validate(path)
            result.update(valid=True, root=found.root, schema=found.schema)
        except SchemaValidationError as exc:
            result.update(valid=False, error=str(exc),
                          violations=[{"path": p, "message": m} for p, m in exc.violations])
        except SdpError as exc:
            result.update(valid=False, error=str(exc), violations=[])
        results.append(result)

    if args.json:
        json.dump({"valid": all(r["valid"] for r in results), "files": results},
                  sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        for r in results:
            if r["valid"]:
                print(f"{r['file']}: valid ({r['schema']}, root {r['root']})")
            else:
                print(f"{r['file']}: INVALID")
                for v in r["violations"] or [{"path": "", "message": r["error"]}]:
                    print(f"  {v['path']}: {v['message']}")
    return 0 if all(r["valid"] for r in results) else 1
