"""Fuzz target: WS-Security verification of a SOAP envelope (`sdp.wssecurity.verify`).

Seeds are envelopes we signed with the fuzz PKI, so mutants reach every check: shape, the
security header, ids, algorithms, references, the SignatureValue, digests, the timestamp,
the chain and the orgnr. After a successful verification the envelope is parsed and
classified, as the client does (`SdpClient._open`).

    python -m fuzz.fuzz_wssecurity [libFuzzer options] [corpus folders]
"""

from __future__ import annotations

import base64

from lxml import etree

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    from sdp import ebms, mime, xmlparse
    from sdp import wssecurity as wss
    from sdp.errors import SdpError

_DS = "{http://www.w3.org/2000/09/xmldsig#}"


def _attachments(root: etree._Element) -> dict[str, bytes | wss.AttachmentDigest]:
    """The attachments that "arrived" with the envelope: one per signed `cid:` reference,
    whose octets hash to the signed digest (the harness plays an honest MIME layer, so the
    mutations exercise the XML, not a digest comparison that cannot be reached otherwise)."""
    found: dict[str, bytes | wss.AttachmentDigest] = {}
    signed = [ref for info in root.iter(f"{_DS}SignedInfo") for ref in info
              if ref.tag == f"{_DS}Reference"]
    for ref in signed:
        uri = ref.get("URI") or ""
        if not uri.startswith("cid:"):
            continue
        try:
            digest = base64.b64decode(ref.findtext(f"{_DS}DigestValue") or "", validate=True)
            found.setdefault(mime.content_id_from_uri(uri), wss.AttachmentDigest(digest))
        except (ValueError, SdpError):
            continue
    return found


@_common.typed_errors_only
def TestOneInput(data: bytes) -> None:
    pki = _common.pki()
    root = xmlparse.parse(data, what="SOAP envelope")
    result = wss.verify(root, attachments=_attachments(root), trust=pki.trust, at=pki.at,
                        intermediates=pki.intermediates)
    assert result.references, "a verified signature covers something"
    result.reference_for("body")
    _ = result.attachment_references
    ebms.classify(ebms.parse_envelope(data))


if __name__ == "__main__":
    _common.run_fuzzer(TestOneInput)
