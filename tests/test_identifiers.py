"""Identifiers: shapes, check digits, dates, D-nummer, synthetic test numbers, orgnr forms."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdp.errors import InputError
from sdp.identifiers import (
    PersonNumberKind,
    _mod11,
    parse_orgnr,
    parse_person_number,
    party_id,
)


def _with_check_digits(first9: str) -> str | None:
    k1 = _mod11(first9, (3, 7, 6, 1, 8, 9, 4, 5, 2))
    if k1 is None:
        return None
    k2 = _mod11(first9 + str(k1), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
    if k2 is None:
        return None
    return f"{first9}{k1}{k2}"


def test_example_numbers_from_the_spec() -> None:
    # DIGEST 12.2: 01043100358 passes; 17051400000 and 01013300001 fail the check digits.
    pn = parse_person_number("01043100358")
    assert pn.kind is PersonNumberKind.FOEDSELSNUMMER
    assert pn.birth_date == dt.date(1931, 4, 1)
    for bad in ("17051400000", "01013300001"):
        with pytest.raises(InputError, match="check digit"):
            parse_person_number(bad)


def test_d_nummer_day_plus_40() -> None:
    number = _with_check_digits("410190123")
    assert number is not None
    pn = parse_person_number(number)
    assert pn.kind is PersonNumberKind.D_NUMMER
    assert pn.birth_date == dt.date(1990, 1, 1)


@pytest.mark.parametrize("month_offset", [40, 80])
def test_synthetic_numbers_need_opt_in(month_offset: int) -> None:
    number = _with_check_digits(f"15{5 + month_offset:02d}85123")
    assert number is not None
    with pytest.raises(InputError, match="synthetic"):
        parse_person_number(number)
    pn = parse_person_number(number, allow_synthetic=True)
    assert pn.synthetic and pn.birth_date == dt.date(1985, 5, 15)


@pytest.mark.parametrize(
    ("value", "rule"),
    [("0104310035", "11 digits"), ("0104310035a", "11 digits"), ("01043100359", "check digit"),
     ("", "11 digits")],
)
def test_person_number_rules(value: str, rule: str) -> None:
    with pytest.raises(InputError, match=rule) as err:
        parse_person_number(value)
    assert err.value.subject == "personidentifikator"


def test_impossible_date_is_rejected() -> None:
    number = _with_check_digits("310290123")  # 31 February
    assert number is not None
    with pytest.raises(InputError, match="valid date"):
        parse_person_number(number)


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2039, 12, 31)),
       st.integers(min_value=0, max_value=999))
def test_any_valid_fnr_is_accepted_and_any_single_digit_change_is_refused(
    born: dt.date, individual: int
) -> None:
    yy = born.year % 100
    # Pick an individual number in the range that gives the right century.
    if born.year < 2000:
        individual = individual % 500
    else:
        individual = 500 + individual % 400 if yy < 40 else 900 + individual % 100
        if yy >= 40:
            return  # 2040+ is not representable yet
    number = _with_check_digits(f"{born:%d%m}{yy:02d}{individual:03d}")
    if number is None:
        return  # this individual number has no valid check digit; skipped by the registry
    assert parse_person_number(number).birth_date == born
    for pos in range(11):
        for d in "0123456789":
            if d == number[pos]:
                continue
            changed = number[:pos] + d + number[pos + 1:]
            # Both check digits together catch every single-digit error.
            with pytest.raises(InputError, match="check digit"):
                parse_person_number(changed, allow_synthetic=True)


def test_orgnr() -> None:
    for good in ("984661185", "991825827", "996460320", "889640782"):
        assert parse_orgnr(good) == good
        assert parse_orgnr(f"9908:{good}") == good
        assert parse_orgnr(f"0192:{good}") == good
        assert party_id(good) == f"9908:{good}"
    for bad, rule in [("123456789", "check digit"), ("98466118", "9 digits"),
                      ("1234:984661185", "prefix"), ("9908:98466118x", "9 digits")]:
        with pytest.raises(InputError, match=rule):
            parse_orgnr(bad)


def test_redacted_person_number_hides_the_birth_date() -> None:
    assert parse_person_number("01043100358").redacted() == "*********58"
