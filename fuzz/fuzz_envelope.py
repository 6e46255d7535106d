"""Fuzz target: SOAP/ebMS envelope parsing and classification (`sdp.ebms`).

Every response from the broker and every request to the simulator goes through
`parse_envelope` and `classify` (the client reads unsigned faults and errors too, DIGEST 9.2).

    python -m fuzz.fuzz_envelope [libFuzzer options] [corpus folders]
"""

from __future__ import annotations

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    from sdp import ebms
    from sdp.errors import SdpError


@_common.typed_errors_only
def TestOneInput(data: bytes) -> None:
    env = ebms.parse_envelope(data)
    _ = (env.body_id, env.messaging_id, env.body_children)
    found = ebms.messages(env)
    for message in found:
        try:
            ebms.raise_for_error(message)
        except SdpError as exc:
            # An error signal or fault becomes an EbmsError with its fields filled in.
            assert str(exc)
        if isinstance(message, ebms.PulledUserMessage):
            _ = [(p.content_id, p.is_attachment) for p in message.attachments]
            _ = message.from_party.orgnr if message.from_party else None
    ebms.classify(env)
    # The simulator validates incoming envelopes against the XSDs first (DIGEST 14).
    ebms.parse_envelope(data, validate=True)


if __name__ == "__main__":
    _common.run_fuzzer(TestOneInput)
