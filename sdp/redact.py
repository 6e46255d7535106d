"""Personal data out of logs: what a support engineer may see of a message at 3 a.m.

Business messages name citizens (fødselsnummer, mailbox address, postal address, notice
addresses) and titles may be sensitive (DIGEST 4.2). `redact_xml` keeps the structure and the
ids that tie messages together and replaces those values, so request and response bodies can
be logged (`SdpClient(log_bodies=True)`) without leaking them.
"""

from __future__ import annotations

import re

#: Elements whose text is personal or possibly sensitive (DIGEST 3.3-3.6, 4.2).
SENSITIVE_ELEMENTS = (
    "personidentifikator", "postkasseadresse", "tittel", "ikkeSensitivTittel", "navn",
    "adresselinje1", "adresselinje2", "adresselinje3", "adresselinje4", "postnummer",
    "poststed", "epostadresse", "mobiltelefonnummer", "varslingsTekst", "beskrivelse",
    "detaljer",
)
_ELEMENT = re.compile(
    r"(<(?:[\w.-]+:)?(" + "|".join(SENSITIVE_ELEMENTS) + r")\b[^>]*>)([^<]*)(</)", re.S)
#: Any free-standing 11-digit number could be a fødselsnummer.
_ELEVEN_DIGITS = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")
_MAX_LOGGED = 64 * 1024


def redact_xml(kind: str, data: bytes) -> str:
    """`kind` is "request" or "response" (the transport's hook signature); long bodies are
    cut, binary attachments never reach here."""
    text = data[:_MAX_LOGGED].decode("utf-8", errors="replace")
    text = _ELEMENT.sub(lambda m: f"{m.group(1)}***{m.group(4)}", text)
    text = _ELEVEN_DIGITS.sub("***********", text)
    if len(data) > _MAX_LOGGED:
        text += f"... [{len(data) - _MAX_LOGGED} more bytes]"
    return text
