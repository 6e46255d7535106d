"""Fuzz target: CMS EnvelopedData decryption (`sdp.package.cms.decrypt`).

Decrypted with the fuzz PKI's mailbox key (our seeds are encrypted to it) and, when the
specification is present, with the key of the official examples (`eksempel.jks`), so that
mutants of either kind of seed get past key transport into the content. Bytes in and a
stream in must give the same plaintext.

    python -m fuzz.fuzz_cms [libFuzzer options] [corpus folders]
"""

from __future__ import annotations

import io
import warnings

from cryptography.hazmat.primitives.asymmetric import rsa

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    from sdp.errors import SdpError
    from sdp.keys import load_signing_identity
    from sdp.package import cms

_keys: list[rsa.RSAPrivateKey] = []


def keys() -> list[rsa.RSAPrivateKey]:
    if not _keys:
        _keys.append(_common.pki().mailbox.key)
        jks = _common.SPEC / "nyinf" / "eksempler" / "komplette" / "eksempel.jks"
        if jks.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    _keys.append(load_signing_identity(jks, "changeit", alias="eksempel").key)
                except SdpError:
                    pass  # pyjks missing: our own seeds still cover everything
    return _keys


@_common.typed_errors_only
def TestOneInput(data: bytes) -> None:
    for key in keys():
        try:
            plain = cms.decrypt(data, key)
        except SdpError:
            continue
        out = io.BytesIO()
        written = cms.decrypt(io.BytesIO(data), key, None, out)
        assert written == len(plain) and out.getvalue() == plain, "stream and bytes disagree"


if __name__ == "__main__":
    _common.run_fuzzer(TestOneInput)
