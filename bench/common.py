"""What the end-to-end and soak benchmarks share: the development PKI they run on and the
wait for a broker child process to listen."""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
from pathlib import Path


def make_pki(directory: Path, *, password: str, sender_orgnr: str, mailbox_orgnr: str) -> None:
    """The development PKI, made by `sdp dev-certs` so the broker reads what users' brokers
    read."""
    from sdp.cli import main as cli_main

    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["dev-certs", str(directory), "--password", password,
                         "--sender", sender_orgnr, "--mailbox-orgnr", mailbox_orgnr])
    if code != 0:
        raise RuntimeError(f"sdp dev-certs exited with {code}")


def wait_for_url(proc: subprocess.Popen[bytes], url_file: Path, timeout: float) -> str:
    """The URL a broker child writes once it listens; the child is killed if it dies or
    takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not url_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("the broker child did not start")
        time.sleep(0.05)
    return url_file.read_text(encoding="utf-8")
