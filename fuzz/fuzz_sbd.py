"""Fuzz target: receipt parsing, the SBD a mailbox or print provider signs
(`sdp.message.verify_sbd`, `sdp.bindings.from_xml`, `sdp.receipts.from_verified`).

Three passes over each input: typed binding of any XML; verification of the SBD as it
arrived (mutants of our signed seeds reach every signature check); and the same SBD signed
again by the fuzz mailbox, so that hostile content behind a valid signature (a provider
with a real certificate) reaches schema validation, binding and receipt construction.

    python -m fuzz.fuzz_sbd [libFuzzer options] [corpus folders]
"""

from __future__ import annotations

from lxml import etree

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    from sdp import bindings, receipts, xmlparse
    from sdp.errors import SdpError
    from sdp.message import sign_sbd, verify_sbd


def _to_receipt(verified: object) -> None:
    try:
        receipt = receipts.from_verified(
            verified, message_id="fuzz", ref_to_message_id=None,  # type: ignore[arg-type]
            mpc="urn:normal", envelope_xml=b"", signed_references=())
    except SdpError:
        return
    assert receipt.conversation_id and receipt.kind


@_common.typed_errors_only
def TestOneInput(data: bytes) -> None:
    pki = _common.pki()
    try:
        bindings.from_xml(data, what="fuzz")
    except SdpError:
        pass
    try:
        _to_receipt(verify_sbd(data, trust=pki.trust, at=pki.at,
                               intermediates=pki.intermediates))
    except SdpError:
        pass
    root = xmlparse.parse(data, what="StandardBusinessDocument")
    try:
        sign_sbd(root, pki.mailbox)  # the signer's side: not what this target judges
        resigned = etree.tostring(root)
    except Exception:
        return
    verified = verify_sbd(resigned, trust=pki.trust, at=pki.at,
                          intermediates=pki.intermediates, check_sender=False)
    _to_receipt(verified)


if __name__ == "__main__":
    _common.run_fuzzer(TestOneInput)
