"""Property-based tests: valid input builds schema-valid XML, invalid input raises the typed error.

Identifiers (fødselsnummer, D-nummer, organisasjonsnummer), manifest.xml from generated
documents, and the signed business message (digitalPost in an SBD) from generated
notification, address and title data. "Never another exception" is the point: a ValueError
or UnicodeEncodeError escaping the library is a failure here, not an "error of some kind".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sdp import devpki
from sdp.bindings import from_xml
from sdp.consignment import (
    Forsendelse,
    digital_post_info,
    epost_varsel,
    fysisk_post_info,
    norsk_adresse,
    sms_varsel,
    utenlandsk_adresse,
)
from sdp.errors import DocumentError, InputError, SdpError
from sdp.identifiers import PersonNumberKind, parse_orgnr, parse_person_number
from sdp.message import build_digital_post_sbd, verify_sbd
from sdp.package.documents import Document, check_documents
from sdp.package.manifest import build_manifest
from sdp.parties import avsender, mottaker
from sdp.schemas import NS_SDP, validate
from sdp_bindings import sdp as s
from tests.conftest import MAILBOX_ORGNR, PROCESSOR_ORGNR, SENDER_ORGNR

FINGERPRINT = hashlib.sha256(b"the encrypted package").digest()
#: Hypothesis settings for tests that use the session PKI fixtures (RSA work: no deadline).
WITH_KEYS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
FAST = settings(max_examples=200, deadline=None)

# --- check digits, written independently of sdp.identifiers -------------------------------------


def control_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 control digit, None when the remainder makes the number impossible."""
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    k = (11 - remainder) % 11
    return None if k == 10 else k


W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
WORG = (3, 2, 7, 6, 5, 4, 3, 2)


def with_checks(nine: str) -> str | None:
    k1 = control_digit(nine, W1)
    if k1 is None:
        return None
    k2 = control_digit(nine + str(k1), W2)
    return None if k2 is None else f"{nine}{k1}{k2}"


@st.composite
def person_numbers(draw: st.DrawFn) -> tuple[str, dt.date, bool, bool]:
    """(number, birth date, is D-nummer, is synthetic) with valid check digits.

    Births 1900-1999 use individual numbers 000-499, births 2000-2039 use 500-999, so the
    century rule is unambiguous.
    """
    born = draw(st.dates(dt.date(1900, 1, 1), dt.date(2039, 12, 31)))
    individual = draw(st.integers(0, 499) if born.year < 2000 else st.integers(500, 999))
    d_number = draw(st.booleans())
    synthetic = draw(st.sampled_from([0, 0, 40, 80]))
    day = born.day + (40 if d_number else 0)
    month = born.month + synthetic
    nine = f"{day:02d}{month:02d}{born.year % 100:02d}{individual:03d}"
    number = with_checks(nine)
    assume(number is not None)
    assert number is not None
    return number, born, d_number, synthetic != 0


@st.composite
def orgnrs(draw: st.DrawFn) -> str:
    eight = draw(st.text(string.digits, min_size=8, max_size=8))
    k = control_digit(eight, WORG)
    assume(k is not None)
    return f"{eight}{k}"


def one_digit_changed(draw: st.DrawFn, number: str) -> str:
    position = draw(st.integers(0, len(number) - 1))
    other = draw(st.sampled_from([d for d in string.digits if d != number[position]]))
    return number[:position] + other + number[position + 1:]


# --- identifiers ----------------------------------------------------------------------------------


@FAST
@given(person_numbers())
def test_valid_person_numbers_are_accepted(case: tuple[str, dt.date, bool, bool]) -> None:
    number, born, d_number, synthetic = case
    parsed = parse_person_number(number, allow_synthetic=True)
    assert parsed.value == number
    assert parsed.birth_date == born
    assert parsed.kind is (PersonNumberKind.D_NUMMER if d_number
                           else PersonNumberKind.FOEDSELSNUMMER)
    assert parsed.synthetic is synthetic
    assert parsed.redacted().endswith(number[-2:]) and born.strftime("%d%m") not in \
        parsed.redacted()
    if synthetic:
        with pytest.raises(InputError):
            parse_person_number(number)
    else:
        assert parse_person_number(number) == parsed


@FAST
@given(st.data(), person_numbers())
def test_a_single_wrong_digit_is_caught(data: st.DataObject,
                                        case: tuple[str, dt.date, bool, bool]) -> None:
    typo = one_digit_changed(data.draw, case[0])
    with pytest.raises(InputError):
        parse_person_number(typo, allow_synthetic=True)


@FAST
@given(st.one_of(st.text(max_size=14), st.text(string.digits, min_size=9, max_size=12),
                 st.integers(), st.none(), st.binary(max_size=11)))
def test_any_person_number_input_is_accepted_or_an_input_error(value: object) -> None:
    try:
        parsed = parse_person_number(value, allow_synthetic=True)  # type: ignore[arg-type]
    except InputError as exc:
        assert exc.subject == "personidentifikator"
    else:
        assert isinstance(value, str) and parsed.value == value and len(value) == 11


@FAST
@given(orgnrs(), st.sampled_from(["", "9908:", "0192:"]))
def test_valid_orgnrs_are_accepted(orgnr: str, prefix: str) -> None:
    assert parse_orgnr(prefix + orgnr) == orgnr


@FAST
@given(st.data(), orgnrs())
def test_a_single_wrong_orgnr_digit_is_caught(data: st.DataObject, orgnr: str) -> None:
    with pytest.raises(InputError):
        parse_orgnr(one_digit_changed(data.draw, orgnr))


@FAST
@given(st.one_of(st.text(max_size=16), st.text(string.digits + ":", min_size=8, max_size=15),
                 st.integers(), st.none()))
def test_any_orgnr_input_is_accepted_or_an_input_error(value: object) -> None:
    try:
        digits = parse_orgnr(value)  # type: ignore[arg-type]
    except InputError as exc:
        assert exc.subject == "organisasjonsnummer"
    else:
        assert isinstance(value, str) and value.endswith(digits) and len(digits) == 9


# --- manifest.xml ---------------------------------------------------------------------------------


def xml_char(c: str) -> bool:
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


#: Every encodable character XML 1.0 cannot carry: C0 controls but TAB/LF/CR, U+FFFE, U+FFFF.
NOT_XML = st.sampled_from([chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
                          + ["\ufffe", "\uffff"])
#: Any character XML 1.0 can carry (surrogates are not characters).
XML_TEXT_CHARS = st.characters(exclude_categories=("Cs",)).filter(xml_char)
#: File-name characters: printable, no separators (the rules in documents.check_name).
NAME_CHARS = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\\")
SUFFIXES = {".pdf": "application/pdf", ".txt": "text/plain", ".png": "image/png",
            ".odt": "application/vnd.oasis.opendocument.text"}


@st.composite
def file_names(draw: st.DrawFn) -> str:
    suffix = draw(st.sampled_from(sorted(SUFFIXES)))
    stem = draw(st.text(NAME_CHARS, min_size=1, max_size=96))
    return stem + suffix


titles = st.text(XML_TEXT_CHARS, min_size=1, max_size=255)


@st.composite
def documents(draw: st.DrawFn, name: str | None = None) -> Document:
    href = name or draw(file_names())
    return Document(
        content=b"%PDF-1.4 generated\n",
        href=href,
        mime_type=SUFFIXES.get(href[href.rfind("."):], "application/pdf"),
        title=draw(st.none() | titles),
        language=draw(st.sampled_from(["NO", "EN", "se", "nn"])),
    )


@st.composite
def document_sets(draw: st.DrawFn) -> tuple[Document, list[Document]]:
    names = draw(st.lists(file_names(), min_size=1, max_size=6,
                          unique_by=lambda n: unicodedata.normalize("NFC", n).casefold()))
    docs = [draw(documents(name)) for name in names]
    return docs[0], docs[1:]


def passes_preflight(main: Document, attachments: list[Document]) -> bool:
    try:
        check_documents(main, attachments)
    except DocumentError:
        return False
    return True


AVSENDER = avsender(SENDER_ORGNR)
MOTTAKER = mottaker("01043100358", "ola.nordmann#1ABC")


@settings(max_examples=60, deadline=None)
@given(document_sets(), st.booleans())
def test_valid_documents_give_a_schema_valid_manifest(
        docs: tuple[Document, list[Document]], digital: bool) -> None:
    main, attachments = docs
    assume(passes_preflight(main, attachments))
    manifest, xml = build_manifest(avsender=AVSENDER, hoveddokument=main, vedlegg=attachments,
                                   mottaker=MOTTAKER if digital else None)
    found = validate(xml)
    assert (found.namespace, found.local_name) == (NS_SDP, "manifest")
    back = from_xml(xml, s.Manifest)
    assert back == manifest
    written = [back.hoveddokument, *back.vedlegg]
    assert [d.href for d in written] == [d.href for d in (main, *attachments)]
    for doc, entry in zip((main, *attachments), written, strict=True):
        assert (entry.tittel.value if entry.tittel else None) == doc.title
        assert entry.mime == doc.mime_type


BAD_NAMES = st.one_of(
    st.text(NAME_CHARS, max_size=3),  # too short
    st.text(NAME_CHARS, min_size=101, max_size=120),  # too long
    st.builds(lambda a, c, b: f"{a}{c}{b}.pdf", st.text(NAME_CHARS, min_size=1, max_size=5),
              st.characters(categories=("Cc",)) | st.sampled_from("/\\"),
              st.text(NAME_CHARS, max_size=5)),
    st.builds(lambda a: f" {a}.pdf", st.text(NAME_CHARS, min_size=1, max_size=5)),
    st.sampled_from(["manifest.xml", "MANIFEST.XML", "mimetype", "META-INF", "C:brev.pdf"]),
)
BAD_TITLES = st.one_of(
    st.just(""),
    st.text(XML_TEXT_CHARS, min_size=256, max_size=300),
    st.builds(lambda a, c: a + c, st.text(XML_TEXT_CHARS, max_size=10),
              NOT_XML),
)


@settings(max_examples=80, deadline=None)
@given(st.one_of(BAD_NAMES.map(lambda n: ("href", n)), BAD_TITLES.map(lambda t: ("title", t))))
def test_invalid_names_and_titles_raise_the_typed_error(bad: tuple[str, str]) -> None:
    field, value = bad
    args: dict[str, object] = dict(content=b"%PDF", href="brev.pdf",
                                   mime_type="application/pdf", title="Brev")
    args[field] = value
    doc = Document(**args)  # type: ignore[arg-type]
    with pytest.raises(DocumentError):
        check_documents(doc, [])
    # The manifest builder alone never lets an untyped error out: it either writes a valid
    # manifest (an empty title is left out) or raises one of ours.
    try:
        _, xml = build_manifest(avsender=AVSENDER, hoveddokument=doc)
    except SdpError:
        return
    validate(xml)


# --- the business message -------------------------------------------------------------------------

TEXT = st.text(XML_TEXT_CHARS, min_size=1, max_size=40).filter(lambda t: t.strip() != "")
DAYS = st.lists(st.integers(0, 25), min_size=1, max_size=10, unique=True)
LANG = st.sampled_from(["NO", "EN", "nb", "se"])
AWARE = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31),
                     timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2)),
                                                dt.timezone(dt.timedelta(hours=-5,
                                                                         minutes=-30))]))
EMAILS = st.builds(lambda a, b: f"{a}@{b}",
                   st.text(string.ascii_letters + string.digits + "._-+", min_size=1,
                           max_size=20),
                   st.text(string.ascii_lowercase + ".", min_size=1, max_size=20))
PHONES = st.builds(lambda plus, digits: plus + digits, st.sampled_from(["", "+"]),
                   st.text(string.digits, min_size=8, max_size=20))


@st.composite
def digital_infos(draw: st.DrawFn) -> s.DigitalPostInfo:
    epost = draw(st.none() | st.builds(epost_varsel, EMAILS,
                                       st.text(XML_TEXT_CHARS, min_size=1, max_size=500)
                                       .filter(str.strip), DAYS, lang=LANG))
    sms = draw(st.none() | st.builds(sms_varsel, PHONES,
                                     st.text(XML_TEXT_CHARS, min_size=1, max_size=160)
                                     .filter(str.strip), DAYS, lang=LANG))
    return digital_post_info(
        draw(st.text(XML_TEXT_CHARS, min_size=1, max_size=255).filter(str.strip)),
        sikkerhetsnivaa=draw(st.sampled_from([3, 4])),
        aapningskvittering=draw(st.booleans()),
        virkningstidspunkt=draw(st.none() | AWARE),
        epost=epost, sms=sms, lang=draw(LANG))


LINES = st.lists(TEXT, max_size=3)


@st.composite
def addresses(draw: st.DrawFn) -> s.FysiskPostadresse:
    if draw(st.booleans()):
        return norsk_adresse(draw(TEXT), draw(st.text(string.digits, min_size=4, max_size=4)),
                             draw(TEXT), *draw(LINES))
    return utenlandsk_adresse(draw(TEXT), draw(st.text(string.ascii_letters, min_size=2,
                                                       max_size=2)),
                              *draw(st.lists(TEXT, min_size=1, max_size=4)))


def check_sbd(f: Forsendelse, signer: devpki.Identity, ca: devpki.Identity,
              intermediate: devpki.Identity) -> s.DigitalPost:
    sbd = build_digital_post_sbd(f, FINGERPRINT, signer)
    validate(sbd.xml)
    verified = verify_sbd(sbd.xml, trust=[ca.certificate],
                          intermediates=[intermediate.certificate])
    assert verified.conversation_id == f.conversation_id
    assert (verified.sender_orgnr, verified.receiver_orgnr) == (SENDER_ORGNR, f.receiver_orgnr)
    message = verified.message
    assert isinstance(message, s.DigitalPost)
    assert message.dokumentpakkefingeravtrykk.digest_value.value == FINGERPRINT
    return message


@WITH_KEYS
@given(info=digital_infos())
def test_valid_digital_post_builds_a_verifiable_sbd(
        info: s.DigitalPostInfo, sender: devpki.Identity, mailbox: devpki.Identity,
        ca: devpki.Identity, intermediate: devpki.Identity) -> None:
    f = Forsendelse(avsender=AVSENDER, hoveddokument=Document(b"%PDF", "a.pdf",
                                                               "application/pdf"),
                    recipient_certificate=mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
                    mottaker=MOTTAKER, digital_post_info=info)
    message = check_sbd(f, sender, ca, intermediate)
    assert message.digital_post_info is not None
    got = message.digital_post_info
    assert got.ikke_sensitiv_tittel.value == info.ikke_sensitiv_tittel.value
    assert got.sikkerhetsnivaa == info.sikkerhetsnivaa
    assert (got.varsler is None) == (info.varsler is None)
    if info.varsler is not None and info.varsler.epost_varsel is not None:
        assert got.varsler is not None and got.varsler.epost_varsel is not None
        assert got.varsler.epost_varsel.varslings_tekst.value == \
            info.varsler.epost_varsel.varslings_tekst.value
    if info.virkningstidspunkt is not None:
        assert got.virkningstidspunkt is not None
        assert got.virkningstidspunkt.to_datetime() == info.virkningstidspunkt.to_datetime()


@WITH_KEYS
@given(to=addresses(), back=addresses())
def test_valid_physical_post_builds_a_verifiable_sbd(
        to: s.FysiskPostadresse, back: s.FysiskPostadresse, sender: devpki.Identity,
        mailbox: devpki.Identity, ca: devpki.Identity, intermediate: devpki.Identity) -> None:
    f = Forsendelse(avsender=AVSENDER, hoveddokument=Document(b"%PDF", "a.pdf",
                                                               "application/pdf"),
                    recipient_certificate=mailbox.certificate, receiver_orgnr=PROCESSOR_ORGNR,
                    fysisk_post_info=fysisk_post_info(to, back))
    message = check_sbd(f, sender, ca, intermediate)
    assert message.fysisk_post_info is not None
    assert message.fysisk_post_info.mottaker == to
    assert message.fysisk_post_info.retur.mottaker == back


#: A text carrying one character XML cannot hold (control characters, U+FFFE, U+FFFF).
NON_XML_TEXT = st.builds(lambda a, c, b: a + c + b,
                         st.text(string.ascii_letters, min_size=1, max_size=5),
                         NOT_XML, st.text(string.ascii_letters, max_size=5))


def _call(builder: str, bad: object) -> object:
    calls = {
        "title": lambda: digital_post_info(bad),  # type: ignore[arg-type]
        "title-lang": lambda: digital_post_info("Brev", lang=bad),  # type: ignore[arg-type]
        "level": lambda: digital_post_info("Brev", sikkerhetsnivaa=bad),  # type: ignore[arg-type]
        "when": lambda: digital_post_info("Brev", virkningstidspunkt=bad),  # type: ignore[arg-type]
        "epost-address": lambda: epost_varsel(bad, "Du har post"),  # type: ignore[arg-type]
        "epost-text": lambda: epost_varsel("a@b.no", bad),  # type: ignore[arg-type]
        "epost-days": lambda: epost_varsel("a@b.no", "Du har post", bad),  # type: ignore[arg-type]
        "sms-number": lambda: sms_varsel(bad, "Du har post"),  # type: ignore[arg-type]
        "sms-text": lambda: sms_varsel("+4799999999", bad),  # type: ignore[arg-type]
        "postnummer": lambda: norsk_adresse("Ola", bad, "Oslo"),  # type: ignore[arg-type]
        "poststed": lambda: norsk_adresse("Ola", "0150", bad),  # type: ignore[arg-type]
        "navn": lambda: norsk_adresse(bad, "0150", "Oslo"),  # type: ignore[arg-type]
        "line": lambda: utenlandsk_adresse("Ola", "SE", bad),  # type: ignore[arg-type]
        "landkode": lambda: utenlandsk_adresse("Ola", bad, "Gata 1"),  # type: ignore[arg-type]
        "postkasseadresse": lambda: mottaker("01043100358", bad),  # type: ignore[arg-type]
        "avsenderidentifikator": lambda: avsender(
            SENDER_ORGNR, avsenderidentifikator=bad),  # type: ignore[arg-type]
        "fakturareferanse": lambda: avsender(SENDER_ORGNR,
                                             fakturareferanse=bad),  # type: ignore[arg-type]
    }
    return calls[builder]()


INVALID = st.one_of(
    st.tuples(st.sampled_from(["title", "epost-text", "sms-text", "poststed", "navn", "line",
                               "postkasseadresse"]),
              st.one_of(st.just(""), st.text(" \t\n", min_size=1, max_size=3), NON_XML_TEXT)),
    st.tuples(st.sampled_from(["avsenderidentifikator", "fakturareferanse"]),
              st.just("") | NON_XML_TEXT),
    st.tuples(st.just("title"), st.text(XML_TEXT_CHARS, min_size=256, max_size=270)
              .filter(str.strip)),
    st.tuples(st.just("sms-text"), st.text(string.ascii_letters, min_size=161, max_size=170)),
    st.tuples(st.sampled_from(["title-lang"]), st.text(max_size=4).filter(
        lambda t: not (len(t) == 2 and t.isascii() and t.isalpha()))),
    st.tuples(st.just("level"), st.integers().filter(lambda n: n not in (3, 4))),
    st.tuples(st.just("when"), st.datetimes()),  # naive
    st.tuples(st.just("epost-address"), st.one_of(
        st.text(string.ascii_letters, max_size=60),  # no @
        st.text(string.ascii_letters, min_size=50, max_size=60).map(lambda t: t + "@x.no"),
        st.builds(lambda a, c: f"{a}@{c}x.no",
                  st.text(string.ascii_letters, min_size=1, max_size=5),
                  NOT_XML | st.sampled_from(" \t\u00a0\u2028")))),
    st.tuples(st.just("epost-days"), st.one_of(
        st.just([]), st.lists(st.integers(0, 25), min_size=11, max_size=15, unique=True),
        st.lists(st.integers(0, 25), min_size=2, max_size=5).filter(
            lambda d: len(set(d)) != len(d)),
        st.lists(st.integers().filter(lambda n: not 0 <= n <= 25), min_size=1, max_size=3))),
    st.tuples(st.just("sms-number"), st.text(max_size=25).filter(
        lambda t: not (8 <= len(t.lstrip("+")) <= 20 and set(t.lstrip("+")) <= set("0123456789 ")
                       and t.count("+") <= 1))),
    st.tuples(st.just("postnummer"), st.text(max_size=6).filter(
        lambda t: not (len(t) == 4 and t.isascii() and t.isdigit()))),
    st.tuples(st.just("landkode"), st.text(max_size=4).filter(
        lambda t: not (len(t) == 2 and t.isascii() and t.isalpha()))),
)


@settings(max_examples=300, deadline=None)
@given(INVALID)
def test_invalid_business_message_input_raises_input_error(case: tuple[str, object]) -> None:
    builder, bad = case
    with pytest.raises(InputError):
        _call(builder, bad)


@FAST
@given(st.one_of(st.text(max_size=40), st.uuids().map(str)), st.text(max_size=3))
def test_forsendelse_rejects_bad_ids_with_input_error(conversation_id: str, spraak: str) -> None:
    try:
        f = Forsendelse(avsender=AVSENDER, hoveddokument=Document(b"%PDF", "a.pdf",
                                                                   "application/pdf"),
                        recipient_certificate=None,  # type: ignore[arg-type]
                        receiver_orgnr=MAILBOX_ORGNR, mottaker=MOTTAKER,
                        digital_post_info=digital_post_info("Brev"),
                        conversation_id=conversation_id, spraak=spraak)
    except InputError:
        return
    assert len(f.conversation_id) == 36 and len(f.spraak) == 2


@WITH_KEYS
@given(bad=NON_XML_TEXT)
def test_raw_bindings_with_non_xml_text_raise_input_error(
        bad: str, sender: devpki.Identity, mailbox: devpki.Identity) -> None:
    # Bindings made directly, not through the checking builders: the SBD builder still
    # refuses with the typed error rather than letting the serializer's ValueError out.
    info = s.DigitalPostInfo(ikke_sensitiv_tittel=s.Tittel(value=bad, lang="NO"),
                             sikkerhetsnivaa=s.Sikkerhetsnivaa("4"))
    f = Forsendelse(avsender=AVSENDER, hoveddokument=Document(b"%PDF", "a.pdf",
                                                               "application/pdf"),
                    recipient_certificate=mailbox.certificate, receiver_orgnr=MAILBOX_ORGNR,
                    mottaker=MOTTAKER, digital_post_info=info)
    with pytest.raises(InputError):
        build_digital_post_sbd(f, FINGERPRINT, sender)
