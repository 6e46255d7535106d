"""Consignment builders: schema types from the bindings, business rules checked early."""

from __future__ import annotations

import datetime as dt

import pytest

from sdp import consignment as c
from sdp.errors import InputError
from sdp.package.documents import Document
from sdp.parties import avsender, mottaker
from sdp_bindings import sdp as s
from tests.conftest import MAILBOX_ORGNR, SENDER_ORGNR


def _doc() -> Document:
    return Document(b"%PDF-1.4 test", "brev.pdf", "application/pdf", title="Brev")


def test_digital_post_info_defaults_and_notices() -> None:
    info = c.digital_post_info(
        "Brev fra kommunen", sikkerhetsnivaa=3, aapningskvittering=True,
        virkningstidspunkt=dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC),
        epost=c.epost_varsel("ola@example.no", "Du har post", [0, 7]),
        sms=c.sms_varsel("+4799999999", "Du har post", [1]),
    )
    assert info.sikkerhetsnivaa is s.Sikkerhetsnivaa.VALUE_3
    assert info.varsler is not None and info.varsler.epost_varsel is not None
    assert info.varsler.epost_varsel.repetisjoner.dager_etter == [0, 7]
    assert str(info.virkningstidspunkt) == "2026-12-01T08:00:00Z"


@pytest.mark.parametrize(
    ("call", "subject", "rule"),
    [
        (lambda: c.digital_post_info("t", sikkerhetsnivaa=2), "sikkerhetsnivaa", "3 or 4"),
        (lambda: c.digital_post_info(""), "ikkeSensitivTittel", "empty"),
        (lambda: c.digital_post_info("x" * 256), "ikkeSensitivTittel", "255"),
        (lambda: c.digital_post_info("t", lang="nor"), "ikkeSensitivTittel/@lang", "two-letter"),
        (lambda: c.digital_post_info(
            "t", virkningstidspunkt=dt.datetime(2026, 1, 1)), "virkningstidspunkt", "time zone"),
        (lambda: c.epost_varsel("ola@example.no", "t", [0, 0]), "epostVarsel/repetisjoner",
         "unique"),
        (lambda: c.epost_varsel("ola@example.no", "t", [26]), "epostVarsel/repetisjoner",
         "0-25"),
        (lambda: c.epost_varsel("ola@example.no", "t", list(range(11))),
         "epostVarsel/repetisjoner", "1-10"),
        (lambda: c.epost_varsel("ola", "t"), "epostVarsel/epostadresse", "e-mail"),
        (lambda: c.sms_varsel("+4799999999", "x" * 161), "smsVarsel/varslingsTekst", "160"),
        (lambda: c.sms_varsel("12", "t"), "smsVarsel", "8-20"),
        (lambda: c.norsk_adresse("Ola", "473", "Oslo"), "norskAdresse/postnummer", "4 digits"),
        (lambda: c.utenlandsk_adresse("Ola", "SWE", "Gata 1"), "utenlandskAdresse/landkode",
         "alpha-2"),
        (lambda: c.utenlandsk_adresse("Ola", "SE"), "utenlandskAdresse", "1-4"),
        (lambda: avsender("123456789"), "organisasjonsnummer", "check digit"),
        (lambda: avsender(SENDER_ORGNR, fakturareferanse="x" * 41), "fakturaReferanse", "40"),
        (lambda: mottaker("01043100359", "ola#1"), "personidentifikator", "check digit"),
        (lambda: mottaker("01043100358", " "), "postkasseadresse", "empty"),
    ],
)
def test_builders_reject_bad_input_naming_field_and_rule(call, subject: str, rule: str) -> None:
    with pytest.raises(InputError, match=rule) as err:
        call()
    assert err.value.subject == subject


def test_forsendelse_requires_exactly_one_kind(sender) -> None:
    base = dict(avsender=avsender(SENDER_ORGNR), hoveddokument=_doc(),
                recipient_certificate=sender.certificate, receiver_orgnr=MAILBOX_ORGNR)
    digital = c.Forsendelse(**base, mottaker=mottaker("01043100358", "ola#1"),
                            digital_post_info=c.digital_post_info("Brev"))
    assert digital.is_digital and digital.technical_sender_orgnr == SENDER_ORGNR
    assert len(digital.conversation_id) == 36
    adr = c.norsk_adresse("Ola Nordmann", "0473", "Oslo", "Gata 1")
    physical = c.Forsendelse(**base, fysisk_post_info=c.fysisk_post_info(adr, adr),
                             databehandler_orgnr="9908:889640782")
    assert not physical.is_digital and physical.technical_sender_orgnr == "889640782"
    with pytest.raises(InputError, match="not both"):
        c.Forsendelse(**base, mottaker=mottaker("01043100358", "ola#1"),
                      digital_post_info=c.digital_post_info("Brev"),
                      fysisk_post_info=c.fysisk_post_info(adr, adr))
    with pytest.raises(InputError, match="both mottaker and digital_post_info"):
        c.Forsendelse(**base, mottaker=mottaker("01043100358", "ola#1"))
    with pytest.raises(InputError, match="UUID"):
        c.Forsendelse(**base, fysisk_post_info=c.fysisk_post_info(adr, adr),
                      conversation_id="not-a-uuid")
