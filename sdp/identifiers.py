"""Norwegian identifiers: fødselsnummer, D-nummer and organisasjonsnummer.

The schemas only check shapes (`[0-9]{11}`, `[0-9]{4}:\\w{1,35}`). The check digits are the
general Norwegian rules, not stated in the SDP spec (DIGEST 13: [EXT]); we enforce them so that a
typo is caught before anything is signed or sent, with an explicit opt-in for the synthetic
numbers of the test environments.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from enum import Enum

from sdp.errors import InputError

_FNR_WEIGHTS_1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_FNR_WEIGHTS_2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORGNR_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)

#: The meldingsformidler's organisation number (Posten Norge AS; DIGEST 1.8, 7.9).
MELDINGSFORMIDLER_ORGNR = "984661185"

#: ISO 6523 ICD for Norwegian organisation numbers as SDP writes them (DIGEST 1.8, 7.4).
ICD_SDP = "9908"
#: The ICD the newer infrastructure uses; read, never written.
ICD_NEW = "0192"


class PersonNumberKind(Enum):
    FOEDSELSNUMMER = "fødselsnummer"
    D_NUMMER = "D-nummer"


@dataclass(frozen=True)
class PersonNumber:
    """A validated personidentifikator: fødselsnummer or D-nummer."""

    value: str
    kind: PersonNumberKind
    birth_date: dt.date
    synthetic: bool

    def __str__(self) -> str:
        return self.value

    def redacted(self) -> str:
        """For logs: the birth date part hidden, the last two digits kept for correlation."""
        return "*********" + self.value[-2:]


@functools.lru_cache(maxsize=1024)
def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 control digit, or None when the remainder makes the number impossible."""
    rest = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11
    if rest == 11:
        return 0
    if rest == 10:
        return None
    return rest


def parse_person_number(value: str, *, allow_synthetic: bool = False,
                        field: str = "personidentifikator") -> PersonNumber:
    """Validate a fødselsnummer or D-nummer; raise `InputError` naming the rule that failed.

    D-nummer: day + 40. Synthetic test numbers (Tenor/test environments): month + 40 or + 80,
    accepted only with `allow_synthetic=True`.
    """
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{11}", value):
        raise InputError("must be exactly 11 digits", subject=field)
    for position, weights in ((9, _FNR_WEIGHTS_1), (10, _FNR_WEIGHTS_2)):
        expected = _mod11(value[:position], weights)
        if expected is None or expected != int(value[position]):
            raise InputError(
                f"check digit {position - 8} is wrong (mod-11); the number has a typo",
                subject=field,
            )
    day, month, yy, individual = (int(value[0:2]), int(value[2:4]), int(value[4:6]),
                                  int(value[6:9]))
    kind = PersonNumberKind.FOEDSELSNUMMER
    if day > 40:
        kind = PersonNumberKind.D_NUMMER
        day -= 40
    synthetic = False
    if month > 80:
        month, synthetic = month - 80, True
    elif month > 40:
        month, synthetic = month - 40, True
    if synthetic and not allow_synthetic:
        raise InputError(
            "is a synthetic test number (month + 40 or + 80); pass allow_synthetic=True "
            "to use test-environment numbers",
            subject=field,
        )
    year = _century(yy, individual) + yy
    try:
        born = dt.date(year, month, day)
    except ValueError:
        raise InputError(
            f"does not encode a valid date of birth ({value[0:2]}.{value[2:4]}.{value[4:6]})",
            subject=field,
        ) from None
    return PersonNumber(value, kind, born, synthetic)


def _century(yy: int, individual: int) -> int:
    # The individual number range tells the century (Skatteetaten's allocation rules).
    if individual <= 499:
        return 1900
    if individual <= 749 and yy >= 54:
        return 1800
    if individual >= 900 and yy >= 40:
        return 1900
    return 2000


def parse_orgnr(value: str, *, field: str = "organisasjonsnummer") -> str:
    """Validate a 9-digit organisasjonsnummer (mod-11, weights 3 2 7 6 5 4 3 2).

    Also accepts the ISO 6523 forms `9908:<orgnr>` and `0192:<orgnr>`; returns the 9 digits.
    """
    if not isinstance(value, str):
        raise InputError("must be a string of 9 digits", subject=field)
    digits = value
    if ":" in value:
        icd, _, digits = value.partition(":")
        if icd not in (ICD_SDP, ICD_NEW):
            raise InputError(
                f"unknown ISO 6523 prefix {icd!r}; expected {ICD_SDP}: or {ICD_NEW}:",
                subject=field,
            )
    if not re.fullmatch(r"[0-9]{9}", digits):
        raise InputError("must be exactly 9 digits", subject=field)
    expected = _mod11(digits[:8], _ORGNR_WEIGHTS)
    if expected is None or expected != int(digits[8]):
        raise InputError("check digit is wrong (mod-11); the number has a typo", subject=field)
    return digits


def party_id(orgnr: str) -> str:
    """The SDP form `9908:<orgnr>` used in avsender/organisasjon and eb:PartyId (DIGEST 1.8)."""
    return f"{ICD_SDP}:{parse_orgnr(orgnr)}"
