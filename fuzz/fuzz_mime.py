"""Fuzz target: multipart/related parsing of HTTP bodies (`sdp.mime.parse_message`).

Input format (see `make_corpus.mime_input`): first byte even -> the rest is the body under a
fixed multipart Content-Type (the one our seeds use); odd -> the rest is a Content-Type line,
LF, then the body, so the header parser is fuzzed too. The bytes and the streaming read of
the same body must agree.

    python -m fuzz.fuzz_mime [libFuzzer options] [corpus folders]
"""

from __future__ import annotations

import io
import re

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    from sdp import mime
    from sdp.errors import SdpError


_HREF = re.compile(rb'href="(cid:[^"]*)"')


def split(data: bytes) -> tuple[str, bytes]:
    """(Content-Type, body) from a fuzz input."""
    if not data or data[0] % 2 == 0:
        return _common.DEFAULT_CONTENT_TYPE, data[1:]
    header, _, body = data[1:].partition(b"\n")
    return header.decode("latin-1"), body


@_common.typed_errors_only
def TestOneInput(data: bytes) -> None:
    content_type, body = split(data)
    try:
        media = mime.parse_content_type(content_type)
        assert media.mime_type == media.mime_type.lower(), "media types compare lower-cased"
    except SdpError:
        pass
    parsed = mime.parse_message(content_type, body)
    streamed = mime.parse_message(content_type, io.BytesIO(body), length=len(body))
    assert streamed == parsed, "bytes and stream parsing disagree"
    for cid, part in parsed.attachments.items():
        assert parsed.attachment(mime.cid_uri(cid)) is part
        assert parsed.attachment(f"<{cid}>") is part
    parsed.check_attachments(mime.cid_uri(cid) for cid in parsed.attachments)
    # What the simulator does next (sdp.server.verify_user_message): look the envelope's
    # eb:PartInfo hrefs up among the parts, however they are spelled.
    hrefs = [h.decode("utf-8", "replace") for h in _HREF.findall(parsed.envelope)]
    for href in hrefs:
        try:
            parsed.attachment(href)
        except SdpError:
            pass
    parsed.check_attachments(hrefs)


if __name__ == "__main__":
    _common.run_fuzzer(TestOneInput)
