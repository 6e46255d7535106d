"""The fuzz targets in CI: a short, bounded, deterministic run of each, and every regression.

The long coverage-guided runs are `python fuzz/run.py --seconds N` (atheris/libFuzzer). Here
each target's `TestOneInput` is called directly over its seeds and a fixed-RNG stream of
mutants of them: an exception that is not an `sdp.errors.SdpError` fails the test, and the
input is written next to the test's tmp folder for a regression file. One libFuzzer run
through atheris checks that the harness itself still starts, when atheris is installed.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fuzz import _common, make_corpus
from sdp import devpki
from sdp.errors import SdpError
from tests.conftest import ROOT

#: Mutants per target, and the wall-clock cap per target (whichever comes first).
ITERATIONS = 1000
SECONDS = 3.0


def target_module(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.fuzz_{name}")


@pytest.fixture(scope="module")
def fuzz_pki(ca: devpki.Identity, intermediate: devpki.Identity, sender: devpki.Identity,
             mailbox: devpki.Identity, broker: devpki.Identity) -> Iterator[_common.Pki]:
    pki = _common.Pki(ca, intermediate, sender, mailbox, broker,
                      at=dt.datetime.now(dt.UTC).replace(microsecond=0))
    _common.use_pki(pki)
    yield pki
    _common.use_pki(None)


@pytest.fixture(scope="module")
def seeds(fuzz_pki: _common.Pki) -> make_corpus.Seeds:
    return make_corpus.all_seeds(fuzz_pki)


# --- a small mutator, in the spirit of libFuzzer's ----------------------------------------------

TOKENS = [t.encode("latin-1") for t in make_corpus.DICTIONARY]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(out))
        if op == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # random byte
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and out:  # erase a range
            out[pos:pos + rng.randint(1, 64)] = b""
        elif op == 4 and out:  # duplicate a range
            start = rng.randrange(len(out))
            chunk = out[start:start + rng.randint(1, 256)]
            out[pos:pos] = chunk
        elif op == 5:  # dictionary token
            out[pos:pos] = rng.choice(TOKENS)
        elif op == 6:  # truncate
            del out[pos:]
        elif op == 7 and pool:  # splice with another seed
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            out = out[:pos] + bytearray(other[cut:])
        elif op == 8 and out:  # change a digit (numbers, lengths, dates, ids)
            digits = [i for i, b in enumerate(out) if 0x30 <= b <= 0x39]
            if digits:
                out[rng.choice(digits)] = rng.randint(0x30, 0x39)
    return bytes(out)


def run_target(name: str, test: Callable[[bytes], None], data: bytes, tmp_path: Path,
               label: str) -> None:
    try:
        test(data)
    except Exception as exc:  # the finding: not an SdpError (those the target swallows)
        saved = tmp_path / f"{name}-{label}"
        saved.write_bytes(data)
        pytest.fail(f"{name}: {type(exc).__name__}: {exc} (input saved to {saved}; add it to "
                    f"tests/fuzz_regressions/{name}/ and fix the bug)")


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _common.TARGETS)
def test_seeds_reach_the_end_of_the_target(name: str, seeds: make_corpus.Seeds) -> None:
    """Our own valid messages pass every check of their target without any error: the
    harness is wired right and mutants start from deep inside the parser."""
    module = target_module(name)
    own = [(seed, data) for seed, data in seeds[name] if seed.startswith("own-")]
    assert own, f"no own seeds for {name}"
    refused: list[str] = []
    for seed, data in own:
        try:
            module.TestOneInput.__wrapped__(data)
        except SdpError as exc:
            refused.append(f"{seed}: {type(exc).__name__}: {exc}")
    assert not refused


@pytest.mark.parametrize("name", _common.TARGETS)
def test_mutated_seeds_raise_only_typed_errors(name: str, seeds: make_corpus.Seeds,
                                               tmp_path: Path) -> None:
    module = target_module(name)
    pool = [data for _, data in seeds[name]]
    assert pool
    for seed, data in seeds[name]:
        run_target(name, module.TestOneInput, data, tmp_path, f"seed-{seed}")
    rng = random.Random(f"sdp-fuzz-{name}")  # fixed: the same mutants on every CI run
    deadline = time.monotonic() + SECONDS
    done = 0
    while done < ITERATIONS and time.monotonic() < deadline:
        data = mutate(rng.choice(pool), rng, pool)
        run_target(name, module.TestOneInput, data, tmp_path, f"mutant-{done}")
        done += 1
    assert done >= min(ITERATIONS, 20), f"only {done} inputs in {SECONDS} s"


def regression_files() -> list[Path]:
    return sorted(p for p in _common.REGRESSIONS.glob("*/*") if p.is_file())


def test_every_regression_file_belongs_to_a_target() -> None:
    files = regression_files()
    assert files, "tests/fuzz_regressions/ holds the crash inputs found so far"
    for path in files:
        assert path.parent.name in _common.TARGETS, path


@pytest.mark.parametrize("path", regression_files(),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_inputs_raise_only_typed_errors(path: Path, fuzz_pki: _common.Pki) -> None:
    module = target_module(path.parent.name)
    try:
        module.TestOneInput.__wrapped__(path.read_bytes())
    except SdpError as exc:
        assert str(exc)  # a typed refusal that says what it is about
    # Returning normally is fine too: the input was a valid message after all.


def test_libfuzzer_harness_runs(tmp_path: Path) -> None:
    """A few hundred libFuzzer iterations through atheris, with instrumentation: the long-run
    command (`fuzz/run.py`) still starts and its target survives the seeds."""
    env = dict(os.environ, SDP_FUZZ_WORK=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "generated")]))
    run = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), "--target", "mime", "--runs", "300",
         "--fresh-seeds"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "Done 300 in" in run.stderr, run.stderr[-2000:]
