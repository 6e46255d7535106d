"""Avsender and Mottaker as the schema defines them, built from validated identifiers.

The business message and the manifest both carry these (DIGEST 1.8: the two avsender
elements must be equal), so they are built once here, from the generated bindings.
"""

from __future__ import annotations

from sdp.errors import InputError
from sdp.identifiers import parse_person_number, party_id
from sdp.xmlparse import has_non_xml_char
from sdp_bindings import sdp as s

#: Length limits the schema does not state but the spec does (DIGEST 1.8).
MAX_AVSENDERIDENTIFIKATOR = 100
MAX_FAKTURAREFERANSE = 40


def avsender(orgnr: str, *, avsenderidentifikator: str | None = None,
             fakturareferanse: str | None = None) -> s.Avsender:
    """The behandlingsansvarlig: `9908:<orgnr>` plus optional sub-unit and invoice reference."""
    if avsenderidentifikator is not None and not (
        0 < len(avsenderidentifikator) <= MAX_AVSENDERIDENTIFIKATOR
    ):
        raise InputError(f"must be 1-{MAX_AVSENDERIDENTIFIKATOR} characters",
                         subject="avsenderidentifikator")
    if fakturareferanse is not None and not 0 < len(fakturareferanse) <= MAX_FAKTURAREFERANSE:
        raise InputError(f"must be 1-{MAX_FAKTURAREFERANSE} characters",
                         subject="fakturaReferanse")
    for name, value in (("avsenderidentifikator", avsenderidentifikator),
                        ("fakturaReferanse", fakturareferanse)):
        if value and has_non_xml_char(value):
            raise InputError("contains a character XML cannot carry", subject=name)
    return s.Avsender(
        organisasjon=s.Organisasjon(value=party_id(orgnr)),
        avsenderidentifikator=avsenderidentifikator,
        faktura_referanse=fakturareferanse,
    )


def mottaker(personidentifikator: str, postkasseadresse: str, *,
             allow_synthetic: bool = False) -> s.Mottaker:
    """The citizen: identity number (validated) and mailbox address from KRR (DIGEST 3.3)."""
    pn = parse_person_number(personidentifikator, allow_synthetic=allow_synthetic)
    if not postkasseadresse or not postkasseadresse.strip():
        raise InputError("must not be empty (take it from the KRR lookup)",
                         subject="postkasseadresse")
    if has_non_xml_char(postkasseadresse):
        raise InputError("contains a character XML cannot carry", subject="postkasseadresse")
    return s.Mottaker(person=s.Person(personidentifikator=pn.value,
                                      postkasseadresse=postkasseadresse))
