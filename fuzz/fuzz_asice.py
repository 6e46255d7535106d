"""Fuzz target: reading an ASiC-E container (`sdp.package.asice.read_container`), then
verifying and opening it like a mailbox does (`sdp.package.dokumentpakke.open_container`).

Limits are scaled down (1 MiB packages) so that a zip bomb is refused quickly; reading
every entry checks sizes and CRCs as it goes.

    python -m fuzz.fuzz_asice [libFuzzer options] [corpus folders]
"""

from __future__ import annotations

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    from sdp.package import asice, dokumentpakke

LIMITS = asice.ReadLimits.for_package(1 << 20)


@_common.typed_errors_only
def TestOneInput(data: bytes) -> None:
    with asice.read_container(data, limits=LIMITS) as container:
        for name, entry in container.entries.items():
            content = entry.read()
            assert len(content) <= LIMITS.max_entry_bytes, name
        assert container.manifest is not None and container.signatures is not None
    pki = _common.pki()
    with dokumentpakke.open_container(data, at=pki.at, trust=pki.trust,
                                      limits=LIMITS) as opened:
        for doc in opened.documents:
            with doc.open() as stream:
                stream.read()


if __name__ == "__main__":
    _common.run_fuzzer(TestOneInput)
