"""Consignments (forsendelser): what a sender hands to the client.

Everything the schema can express is a generated binding (`s.Avsender`, `s.DigitalPostInfo`,
`s.FysiskPostInfo`, ...). This module adds only what the schema cannot: the documents, the
certificate the package is encrypted to, the technical endpoints, priority and MPC, the
conversation id, and the business rules the XSD does not check (DIGEST 3, 11). The builder
functions validate their input and raise `InputError` naming the field and the rule.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from xsdata.models.datatype import XmlDateTime

from sdp.errors import InputError
from sdp.identifiers import parse_orgnr
from sdp.package.documents import Document
from sdp.xmlparse import has_non_xml_char
from sdp_bindings import sdp as s

#: Notification repetitions: values 0-25 days, unique, 1-10 of them (DIGEST 3.5, 15 item 15).
MAX_NOTIFY_DAY = 25
MAX_REPETITIONS = 10
#: Text limits from the schema types, checked early for a clear message (DIGEST 3.5, 3.10).
MAX_TITLE = 255
MAX_EMAIL_TEXT = 500
MAX_SMS_TEXT = 160
_UUID = re.compile(r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}")
_LANG = re.compile(r"[A-Za-z]{2}")


def _lang(value: str, field_name: str) -> str:
    # Spraakkode: exactly two characters (DIGEST 3.10); we also require letters.
    if not _LANG.fullmatch(value):
        raise InputError(f"language must be a two-letter ISO 639-1 code, got {value!r}",
                         subject=field_name)
    return value


def _text(value: str, limit: int, field_name: str) -> str:
    if not value or not value.strip():
        raise InputError("must not be empty", subject=field_name)
    if len(value) > limit:
        raise InputError(f"must be at most {limit} characters (has {len(value)})",
                         subject=field_name)
    if has_non_xml_char(value):
        raise InputError("contains a character XML cannot carry", subject=field_name)
    return value


def _days(days: Sequence[int], field_name: str) -> s.Repetisjoner:
    if not 1 <= len(days) <= MAX_REPETITIONS:
        raise InputError(f"needs 1-{MAX_REPETITIONS} days", subject=field_name)
    if len(set(days)) != len(days):
        raise InputError("days must be unique (xs:unique in the schema)", subject=field_name)
    for d in days:
        if not 0 <= d <= MAX_NOTIFY_DAY:
            raise InputError(f"day {d} is outside 0-{MAX_NOTIFY_DAY}", subject=field_name)
    return s.Repetisjoner(dager_etter=list(days))


def xml_datetime(value: dt.datetime, field_name: str) -> XmlDateTime:
    """A timezone-aware datetime as xs:dateTime; naive times are ambiguous and refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError("must carry a time zone (e.g. datetime.now(UTC))", subject=field_name)
    return XmlDateTime.from_datetime(value)


def epost_varsel(address: str, text: str, days: Sequence[int] = (0,), *,
                 lang: str = "NO") -> s.EpostVarsel:
    """E-mail notice. The text goes out unencrypted: no personal data (DIGEST 3.5)."""
    if "@" not in address or len(address) > 50 or any(c.isspace() for c in address) \
            or has_non_xml_char(address):
        raise InputError("must be an e-mail address of at most 50 characters",
                         subject="epostVarsel/epostadresse")
    return s.EpostVarsel(
        epostadresse=address,
        varslings_tekst=s.EpostVarselTekst(
            value=_text(text, MAX_EMAIL_TEXT, "epostVarsel/varslingsTekst"),
            lang=_lang(lang, "epostVarsel/varslingsTekst/@lang")),
        repetisjoner=_days(days, "epostVarsel/repetisjoner"),
    )


def sms_varsel(number: str, text: str, days: Sequence[int] = (0,), *,
               lang: str = "NO") -> s.SmsVarsel:
    """SMS notice (costs extra). KRR allows 8-20 characters for the number (DIGEST 3.5)."""
    if not re.fullmatch(r"\+?[0-9 ]{8,20}", number):
        raise InputError("must be a phone number of 8-20 digits", subject="smsVarsel")
    return s.SmsVarsel(
        mobiltelefonnummer=number,
        varslings_tekst=s.SmsVarselTekst(
            value=_text(text, MAX_SMS_TEXT, "smsVarsel/varslingsTekst"),
            lang=_lang(lang, "smsVarsel/varslingsTekst/@lang")),
        repetisjoner=_days(days, "smsVarsel/repetisjoner"),
    )


def digital_post_info(
    ikke_sensitiv_tittel: str,
    *,
    sikkerhetsnivaa: int = 4,
    aapningskvittering: bool = False,
    virkningstidspunkt: dt.datetime | None = None,
    epost: s.EpostVarsel | None = None,
    sms: s.SmsVarsel | None = None,
    lang: str = "NO",
) -> s.DigitalPostInfo:
    """DigitalPostInfo (DIGEST 3.4). Security level 4 by default, the spec's stated default."""
    if sikkerhetsnivaa not in (3, 4):
        raise InputError("must be 3 or 4 (ID-porten level)", subject="sikkerhetsnivaa")
    return s.DigitalPostInfo(
        virkningstidspunkt=(xml_datetime(virkningstidspunkt, "virkningstidspunkt")
                            if virkningstidspunkt else None),
        aapningskvittering=aapningskvittering,
        sikkerhetsnivaa=s.Sikkerhetsnivaa(str(sikkerhetsnivaa)),
        ikke_sensitiv_tittel=s.Tittel(
            value=_text(ikke_sensitiv_tittel, MAX_TITLE, "ikkeSensitivTittel"),
            lang=_lang(lang, "ikkeSensitivTittel/@lang")),
        varsler=s.Varsler(epost_varsel=epost, sms_varsel=sms) if (epost or sms) else None,
    )


def norsk_adresse(navn: str, postnummer: str, poststed: str,
                  *linjer: str) -> s.FysiskPostadresse:
    """A Norwegian postal address (DIGEST 3.6): up to three lines, 4-digit postal code."""
    if not re.fullmatch(r"[0-9]{4}", postnummer):
        raise InputError("must be 4 digits", subject="norskAdresse/postnummer")
    if len(linjer) > 3:
        raise InputError("at most 3 address lines", subject="norskAdresse")
    lines = [_text(x, 100, f"adresselinje{i + 1}") for i, x in enumerate(linjer)]
    lines += [None] * (3 - len(lines))  # type: ignore[list-item]
    return s.FysiskPostadresse(
        navn=_text(navn, 130, "navn"),
        norsk_adresse=s.NorskPostadresse(
            adresselinje1=lines[0], adresselinje2=lines[1], adresselinje3=lines[2],
            postnummer=postnummer, poststed=_text(poststed, 80, "poststed")),
    )


def utenlandsk_adresse(navn: str, landkode: str, *linjer: str) -> s.FysiskPostadresse:
    """A foreign postal address: 1-4 lines and an ISO 3166-1 alpha-2 country code."""
    if not re.fullmatch(r"[A-Za-z]{2}", landkode):
        raise InputError("must be an ISO 3166-1 alpha-2 code", subject="utenlandskAdresse/landkode")
    if not 1 <= len(linjer) <= 4:
        raise InputError("needs 1-4 address lines", subject="utenlandskAdresse")
    lines: list[str | None] = [_text(x, 100, f"adresselinje{i + 1}") for i, x in enumerate(linjer)]
    lines += [None] * (4 - len(lines))
    return s.FysiskPostadresse(
        navn=_text(navn, 130, "navn"),
        utenlandsk_adresse=s.UtenlandskPostadresse(
            adresselinje1=lines[0] or "", adresselinje2=lines[1], adresselinje3=lines[2],
            adresselinje4=lines[3], landkode=landkode.upper()),
    )


def fysisk_post_info(
    mottaker: s.FysiskPostadresse,
    retur_adresse: s.FysiskPostadresse,
    *,
    returhaandtering: s.FysiskPostReturhaandtering = s.FysiskPostReturhaandtering.DIREKTE_RETUR,
    posttype: s.FysiskPostType = s.FysiskPostType.B,
    utskriftsfarge: s.Utskriftsfarge = s.Utskriftsfarge.SORT_HVIT,
    printinstruksjoner: dict[str, str] | None = None,
) -> s.FysiskPostInfo:
    """FysiskPostInfo (DIGEST 3.6, 11.9); B-post and black-and-white are the cheap defaults."""
    return s.FysiskPostInfo(
        mottaker=mottaker,
        posttype=posttype,
        utskriftsfarge=utskriftsfarge,
        retur=s.FysiskPostRetur(post_haandtering=returhaandtering, mottaker=retur_adresse),
        printinstruksjoner=s.Printinstruksjoner(printinstruksjon=[
            s.Printinstruksjon(navn=k, verdi=v) for k, v in printinstruksjoner.items()
        ]) if printinstruksjoner else None,
    )


def new_conversation_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Forsendelse:
    """One consignment: digital post (mottaker + digital_post_info) or physical post.

    `databehandler_orgnr` is the technical sender that signs and transmits; it equals the
    avsender's orgnr unless sending on behalf of someone else (DIGEST 1.7).
    `receiver_orgnr` is the mailbox provider (from KRR) or the print provider: the SBDH
    Receiver (DIGEST 6.2). `recipient_certificate` is what the package is encrypted to.
    """

    avsender: s.Avsender
    hoveddokument: Document
    recipient_certificate: x509.Certificate
    receiver_orgnr: str
    mottaker: s.Mottaker | None = None
    digital_post_info: s.DigitalPostInfo | None = None
    fysisk_post_info: s.FysiskPostInfo | None = None
    vedlegg: Sequence[Document] = ()
    databehandler_orgnr: str | None = None
    prioritert: bool = False
    mpc_id: str | None = None
    spraak: str = "NO"
    conversation_id: str = field(default_factory=new_conversation_id)

    def __post_init__(self) -> None:
        digital = self.mottaker is not None or self.digital_post_info is not None
        if digital and self.fysisk_post_info is not None:
            raise InputError("give either mottaker + digital_post_info (digital post) or "
                             "fysisk_post_info (physical post), not both", subject="forsendelse")
        if digital and (self.mottaker is None or self.digital_post_info is None):
            raise InputError("digital post needs both mottaker and digital_post_info",
                             subject="forsendelse")
        if not digital and self.fysisk_post_info is None:
            raise InputError("needs mottaker + digital_post_info or fysisk_post_info",
                             subject="forsendelse")
        self.receiver_orgnr = parse_orgnr(self.receiver_orgnr, field="receiver_orgnr")
        if self.databehandler_orgnr is not None:
            self.databehandler_orgnr = parse_orgnr(self.databehandler_orgnr,
                                                   field="databehandler_orgnr")
        if not _UUID.fullmatch(self.conversation_id):
            # The MF enforces the UUID form on the conversation id (DIGEST 6.2).
            raise InputError("must be a UUID", subject="conversation_id")
        _lang(self.spraak, "spraak")

    @property
    def is_digital(self) -> bool:
        return self.fysisk_post_info is None

    @property
    def avsender_orgnr(self) -> str:
        return parse_orgnr(self.avsender.organisasjon.value, field="avsender/organisasjon")

    @property
    def technical_sender_orgnr(self) -> str:
        """Who signs the SBD and talks to the MF: the databehandler, or the avsender itself."""
        return self.databehandler_orgnr or self.avsender_orgnr
