"""Run the fuzz targets under libFuzzer (atheris): the long-running command.

    python fuzz/run.py [--seconds N] [--target NAME ...] [--fresh-seeds] [-- libFuzzer options]

Each target runs for N seconds (default 60) in its own process, over the generated seeds
(fuzz/.work/seeds/<target>, made by make_corpus.py when missing), the corpus it grew in
earlier runs (fuzz/.work/corpus/<target>) and the regression inputs
(tests/fuzz_regressions/<target>). A crash, an exception that is not an `sdp.errors.SdpError`,
a hang over 10 s or memory over 2 GiB stops that target; libFuzzer writes the input to
fuzz/.work/artifacts/<target>/. Turn it into a regression test by copying it to
tests/fuzz_regressions/<target>/ with a descriptive name, and fix the bug.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from fuzz._common import REGRESSIONS, TARGETS, WORK  # noqa: E402

#: libFuzzer options every run gets (the runner's command line may add or override).
DEFAULT_OPTIONS = ("-timeout=10", "-rss_limit_mb=2048", "-max_len=262144",
                   "-print_final_stats=1")


def command(target: str, seconds: int | None, runs: int | None,
            extra: list[str]) -> list[str]:
    corpus = WORK / "corpus" / target
    artifacts = WORK / "artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    folders = [corpus, WORK / "seeds" / target, REGRESSIONS / target]
    options = [*DEFAULT_OPTIONS, f"-artifact_prefix={artifacts}/", f"-dict={WORK / 'xml.dict'}"]
    if seconds is not None:
        options.append(f"-max_total_time={seconds}")
    if runs is not None:
        options.append(f"-atheris_runs={runs}")
    return [sys.executable, "-m", f"fuzz.fuzz_{target}", *options, *extra,
            *(str(f) for f in folders if f.is_dir())]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "generated"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, extra = args_in[:cut], args_in[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--runs", type=int, default=None,
                        help="stop after this many inputs instead (atheris -atheris_runs)")
    parser.add_argument("--target", action="append", choices=TARGETS,
                        help="run only this target (repeatable); default all")
    parser.add_argument("--fresh-seeds", action="store_true",
                        help="regenerate the seeds (and keep the keys) first")
    args = parser.parse_args(args_in)
    if args.fresh_seeds or not (WORK / "xml.dict").is_file():
        subprocess.run([sys.executable, str(ROOT / "fuzz" / "make_corpus.py"), "--out",
                        str(WORK)], check=True, cwd=ROOT, env=environment())
    seconds = None if args.runs is not None else args.seconds
    failed: list[str] = []
    for target in args.target or TARGETS:
        cmd = command(target, seconds, args.runs, extra)
        print(f"=== {target}: {' '.join(cmd[1:4])} ...", flush=True)
        started = time.monotonic()
        code = subprocess.call(cmd, cwd=ROOT, env=environment())
        took = time.monotonic() - started
        print(f"=== {target}: exit {code} after {took:.0f} s", flush=True)
        if code != 0:
            failed.append(target)
    if failed:
        print(f"findings in: {', '.join(failed)} (inputs under {WORK / 'artifacts'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
