"""Loading signing identities and certificates from PKCS#12, PEM, DER and Java keystores."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import jks  # the optional [jks] extra, part of [test]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sdp import devpki
from sdp.errors import KeyMaterialError
from sdp.keys import (
    SigningIdentity,
    load_certificate,
    load_certificates,
    load_signing_identity,
)

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def _same(a: SigningIdentity, b: SigningIdentity) -> None:
    assert a.certificate == b.certificate
    assert a.chain == b.chain
    assert a.key.private_numbers() == b.key.private_numbers()


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in certs)


@pytest.fixture(scope="module")
def deep(intermediate: devpki.Identity) -> tuple[devpki.Identity, devpki.Identity]:
    """A leaf two intermediates below the root: (sub-CA, leaf)."""
    sub = devpki.make_ca("SDP Test Sub CA", parent=intermediate)
    return sub, devpki.make_enterprise_certificate(sub, "889640782", "Dyp Databehandler AS")


# --- PKCS#12 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["hemmelig", b"hemmelig", "pæssord-æøå"])
def test_pkcs12_round_trip(sender: devpki.Identity, tmp_path: Path, password: str | bytes) -> None:
    raw = password.encode() if isinstance(password, str) else password
    blob = sender.to_pkcs12(raw)
    _same(load_signing_identity(blob, password), sender)
    path = tmp_path / "sender.p12"
    path.write_bytes(blob)
    loaded = load_signing_identity(path, password)
    _same(loaded, sender)
    assert loaded.chain == (sender.chain[0],)  # the issuing CA, no root
    _same(load_signing_identity(str(path), password), sender)


def test_pkcs12_without_password(sender: devpki.Identity) -> None:
    _same(load_signing_identity(sender.to_pkcs12(None)), sender)


def test_pkcs12_wrong_or_missing_password(sender: devpki.Identity) -> None:
    blob = sender.to_pkcs12(b"right")
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(blob, "wrong")
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(blob, None)


def test_pkcs12_chain_reordered(deep: tuple[devpki.Identity, devpki.Identity],
                                intermediate: devpki.Identity, ca: devpki.Identity) -> None:
    sub, leaf = deep
    from cryptography.hazmat.primitives.serialization import pkcs12

    blob = pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.certificate,
        [ca.certificate, intermediate.certificate, sub.certificate],
        serialization.BestAvailableEncryption(b"pw"),
    )
    loaded = load_signing_identity(blob, "pw")
    assert loaded.certificate == leaf.certificate
    assert loaded.chain == (sub.certificate, intermediate.certificate)


# --- PEM --------------------------------------------------------------------------------------


def test_pem_one_file(sender: devpki.Identity) -> None:
    _same(load_signing_identity(sender.key_pem() + sender.cert_pem()), sender)


def test_pem_two_files(sender: devpki.Identity, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(sender.key_pem())
    (tmp_path / "chain.pem").write_bytes(sender.cert_pem())
    _same(load_signing_identity(tmp_path / "key.pem", certificates=tmp_path / "chain.pem"), sender)


def test_pem_chain_order_and_root_excluded(
    deep: tuple[devpki.Identity, devpki.Identity],
    intermediate: devpki.Identity,
    ca: devpki.Identity,
    mailbox: devpki.Identity,
) -> None:
    sub, leaf = deep
    # Root, a stray unrelated certificate and the path, all shuffled.
    shuffled = _pem(ca.certificate, intermediate.certificate, mailbox.certificate,
                    leaf.certificate, sub.certificate)
    loaded = load_signing_identity(leaf.key_pem() + shuffled)
    assert loaded.certificate == leaf.certificate
    assert loaded.chain == (sub.certificate, intermediate.certificate)
    assert ca.certificate not in loaded.certificates


def test_pem_encrypted_key(sender: devpki.Identity) -> None:
    key = sender.key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    assert b"ENCRYPTED PRIVATE KEY" in key
    _same(load_signing_identity(key + sender.cert_pem(), "pw"), sender)
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(key + sender.cert_pem(), "nope")
    with pytest.raises(KeyMaterialError, match="password is needed"):
        load_signing_identity(key + sender.cert_pem())


def test_key_not_matching_certificate(sender: devpki.Identity, mailbox: devpki.Identity) -> None:
    with pytest.raises(KeyMaterialError, match="does not match"):
        load_signing_identity(sender.key_pem() + _pem(mailbox.certificate))


def test_no_key_or_no_certificate(sender: devpki.Identity) -> None:
    with pytest.raises(KeyMaterialError, match="no private key"):
        load_signing_identity(sender.cert_pem())
    with pytest.raises(KeyMaterialError, match="no certificate"):
        load_signing_identity(sender.key_pem())


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="cannot read"):
        load_signing_identity(tmp_path / "missing.p12", "pw")
    with pytest.raises(KeyMaterialError):
        load_signing_identity(random.Random(1).randbytes(300), "pw")
    with pytest.raises(KeyMaterialError):
        load_signing_identity(b"\xfe\xed\xfe\xed" + bytes(40), "pw")


# --- Java keystores ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # C=Unknown in the example
def test_nyinf_example_jks(spec: Path) -> None:
    path = spec / "nyinf/eksempler/komplette/eksempel.jks"
    identity = load_signing_identity(path, "changeit", alias="eksempel")
    public = identity.certificate.public_key()
    assert public.public_numbers() == identity.key.public_key().public_numbers()  # type: ignore[union-attr]
    assert identity.chain == ()  # one self-signed certificate: nothing above the leaf
    # The only key entry is found without an alias, and aliases ignore case as in Java.
    assert load_signing_identity(path, "changeit").certificate == identity.certificate
    assert load_signing_identity(path, "changeit", alias="EKSEMPEL").certificate == (
        identity.certificate
    )
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(path, "changeme")
    with pytest.raises(KeyMaterialError, match="alias 'annen'"):
        load_signing_identity(path, "changeit", alias="annen")


def _keystore(store_type: str, entries: list[tuple[str, devpki.Identity]], password: str) -> bytes:
    items = [
        jks.PrivateKeyEntry.new(
            alias,
            [c.public_bytes(DER) for c in ident.certificates],
            ident.key.private_bytes(
                DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        for alias, ident in entries
    ]
    data: bytes = jks.KeyStore.new(store_type, items).saves(password)
    return data


# pyjks cannot write JCEKS; reading it goes through the same `jks.KeyStore.loads` path.
@pytest.mark.parametrize("store_type", ["jks"])
def test_keystore_round_trip_and_alias_choice(
    store_type: str, sender: devpki.Identity, mailbox: devpki.Identity
) -> None:
    blob = _keystore(store_type, [("avsender", sender), ("postkasse", mailbox)], "storepw")
    _same(load_signing_identity(blob, "storepw", alias="avsender"), sender)
    _same(load_signing_identity(blob, "storepw", alias="postkasse"), mailbox)
    with pytest.raises(KeyMaterialError, match="choose one with alias"):
        load_signing_identity(blob, "storepw")
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(blob, "feil", alias="avsender")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="Java keytool not installed")
def test_jceks_converted_by_keytool(sender: devpki.Identity, tmp_path: Path) -> None:
    (tmp_path / "a.jks").write_bytes(_keystore("jks", [("avsender", sender)], "storepw"))
    proc = subprocess.run(
        ["keytool", "-importkeystore", "-noprompt",
         "-srckeystore", str(tmp_path / "a.jks"), "-srcstoretype", "JKS",
         "-srcstorepass", "storepw",
         "-destkeystore", str(tmp_path / "a.jceks"), "-deststoretype", "JCEKS",
         "-deststorepass", "storepw"],
        capture_output=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    blob = (tmp_path / "a.jceks").read_bytes()
    assert blob[:4] == b"\xce\xce\xce\xce"
    _same(load_signing_identity(blob, "storepw", alias="avsender"), sender)
    with pytest.raises(KeyMaterialError, match="wrong password"):
        load_signing_identity(blob, "feil")


def test_keystore_key_not_matching_chain(sender: devpki.Identity, mailbox: devpki.Identity) -> None:
    wrong = SigningIdentity(sender.key, mailbox.certificate, mailbox.chain)
    blob = _keystore("jks", [("x", wrong)], "pw")
    with pytest.raises(KeyMaterialError, match="does not match"):
        load_signing_identity(blob, "pw")


def test_missing_pyjks_names_the_extra(
    sender: devpki.Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = _keystore("jks", [("a", sender)], "pw")
    monkeypatch.setitem(sys.modules, "jks", None)  # makes `import jks` raise ImportError
    with pytest.raises(KeyMaterialError, match=r"sikker-digital-post\[jks\]"):
        load_signing_identity(blob, "pw")


# --- certificates -----------------------------------------------------------------------------


def test_load_certificate_pem_and_der(mailbox: devpki.Identity, tmp_path: Path) -> None:
    assert load_certificate(mailbox.certificate.public_bytes(PEM)) == mailbox.certificate
    path = tmp_path / "mailbox.cer"
    path.write_bytes(mailbox.certificate.public_bytes(DER))
    assert load_certificate(path) == mailbox.certificate
    with pytest.raises(KeyMaterialError, match="not a certificate"):
        load_certificate(b"\x30\x03\x02\x01\x00")
    with pytest.raises(KeyMaterialError, match="no certificate"):
        load_certificate(mailbox.key_pem())


def test_load_certificates_bundle(sender: devpki.Identity, ca: devpki.Identity) -> None:
    bundle = b"# comment\n" + _pem(sender.certificate, *sender.chain, ca.certificate)
    assert load_certificates(bundle) == [sender.certificate, *sender.chain, ca.certificate]
    assert load_certificate(bundle) == sender.certificate


def test_official_trust_anchors_in_both_encodings(spec: Path) -> None:
    # DIGEST 10.2: the Commfides test files are PEM, all others DER.
    folder = spec / "sikkerhet/sertifikater"
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".cer", ".crt"))
    assert len(files) == 8
    names = [load_certificate(p).subject.rfc4514_string() for p in files]
    assert sum("Buypass" in n for n in names) == 4
    assert sum("CPN" in n for n in names) == 4
