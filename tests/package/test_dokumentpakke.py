"""The document package end to end: build, open, interoperate, refuse."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import shutil
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from sdp.devpki import Identity
from sdp.errors import (
    CertificateChainError,
    DigestMismatchError,
    NotForRecipientError,
    PackageSizeError,
)
from sdp.package import cms, xades
from sdp.package.asice import AsiceWriter
from sdp.package.documents import Document, ExtensionData
from sdp.package.dokumentpakke import (
    ManifestMismatchError,
    build_package,
    open_container,
    open_package,
)
from sdp.package.manifest import ExtensionDataError, build_manifest
from sdp.parties import avsender, mottaker
from tests.conftest import EXAMPLES, SENDER_ORGNR

OPENSSL = shutil.which("openssl") or "openssl"
WHEN = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.UTC)
LENKE = (EXAMPLES / "utvidelser" / "lenke.xml")


def _docs(lenke: bytes | None = None) -> tuple[Document, list[Document]]:
    main = Document(b"%PDF-1.7\n" + bytes(range(256)) * 400, "vedtak.pdf", "application/pdf",
                    title="Vedtak", language="NO")
    data = (ExtensionData(lenke, "lenke.xml", "application/vnd.difi.dpi.lenke+xml")
            if lenke else None)
    info = Document(b"<html><body><p>Informasjon</p></body></html>", "info.html", "text/html",
                    title="Informasjon", data=data)
    return main, [info]


def _build(sender: Identity, mailbox: Identity, **kw: object) -> tuple[bytes, object]:
    main, attachments = _docs()
    out = io.BytesIO()
    args: dict[str, object] = dict(
        hoveddokument=main, vedlegg=attachments, avsender=avsender(SENDER_ORGNR),
        mottaker=mottaker("01043100358", "ola.nordmann#1ABC"), signer=sender,
        recipient=mailbox.certificate, signing_time=WHEN,
    )
    args.update(kw)
    built = build_package(out, **args)  # type: ignore[arg-type]
    return out.getvalue(), built


def test_build_and_open_round_trip(sender: Identity, mailbox: Identity, ca: Identity) -> None:
    data, built = _build(sender, mailbox)
    assert built.fingerprint == hashlib.sha256(data).digest()  # type: ignore[attr-defined]
    assert built.size == len(data)  # type: ignore[attr-defined]
    with open_package(data, mailbox.key, mailbox.certificate, trust=[ca.certificate]) as pkg:
        assert pkg.signer == sender.certificate
        assert pkg.signature.signing_time == WHEN
        assert [d.href for d in pkg.documents] == ["vedtak.pdf", "info.html"]
        main = pkg.documents[0]
        assert main.is_main and main.title == "Vedtak" and main.mime_type == "application/pdf"
        assert main.open().read() == _docs()[0].content
        assert pkg.manifest.mottaker is not None
        assert pkg.manifest.mottaker.person.personidentifikator == "01043100358"


def _openssl_decrypt(tmp_path: Path, data: bytes, mailbox: Identity) -> bytes:
    (tmp_path / "p.cms").write_bytes(data)
    (tmp_path / "k.pem").write_bytes(mailbox.key_pem())
    (tmp_path / "c.pem").write_bytes(mailbox.cert_pem())
    proc = subprocess.run(
        [OPENSSL, "cms", "-decrypt", "-inform", "DER", "-binary", "-in", str(tmp_path / "p.cms"),
         "-inkey", str(tmp_path / "k.pem"), "-recip", str(tmp_path / "c.pem"),
         "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
         "-keyopt", "rsa_mgf1_md:sha256"],
        capture_output=True, check=True)
    return proc.stdout


def test_openssl_decrypts_and_the_zip_is_a_valid_asice(tmp_path: Path, sender: Identity,
                                                      mailbox: Identity, ca: Identity) -> None:
    data, _ = _build(sender, mailbox)
    zipped = _openssl_decrypt(tmp_path, data, mailbox)
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        names = zf.namelist()
        assert names == ["vedtak.pdf", "info.html", "manifest.xml", "META-INF/signatures.xml"]
        assert "mimetype" not in names  # SDP 1.x (DIGEST 4.1)
        assert zf.getinfo("vedtak.pdf").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("info.html").compress_type == zipfile.ZIP_DEFLATED
    with open_container(zipped, trust=[ca.certificate]) as pkg:
        assert pkg.signer == sender.certificate
    _verify_with_signxml(zipped, sender)


def _verify_with_signxml(zipped: bytes, sender: Identity) -> None:
    """An independent XAdES check: signxml verifies SignedInfo, the signature value, every
    file digest and the SignedProperties; we add that every file is covered."""
    from signxml import DigestAlgorithm, SignatureMethod
    from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier

    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    signed = [n for n in files if not n.startswith("META-INF/")]
    verifier = XAdESVerifier()
    verifier.excise_empty_xmlns_declarations = True  # libxml2 sub-tree c14n quirk (DIGEST 4.4)
    config = XAdESSignatureConfiguration(
        expect_references=len(signed) + 1, location="./",
        signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}))
    results = verifier.verify(files["META-INF/signatures.xml"], x509_cert=sender.certificate,
                              expect_config=config, uri_resolver=lambda uri: files[uri])
    assert sorted(r.signed_data for r in results[: len(signed)]) == sorted(
        files[n] for n in signed)


def test_zip_is_reproducible_with_fixed_time_and_key(tmp_path: Path, sender: Identity,
                                                    mailbox: Identity) -> None:
    first, a = _build(sender, mailbox)
    second, b = _build(sender, mailbox)
    assert first != second  # fresh content key and IV every time (DIGEST 4.6) ...
    assert a.fingerprint != b.fingerprint  # type: ignore[attr-defined]
    one = cms.decrypt(first, mailbox.key)
    two = cms.decrypt(second, mailbox.key)
    assert one == two  # ... but the signed zip inside is byte-for-byte the same


def test_sha1_key_transport_option(sender: Identity, mailbox: Identity) -> None:
    data, _ = _build(sender, mailbox, key_transport=cms.KeyTransport.OAEP_SHA1)
    with open_package(data, mailbox.key) as pkg:
        assert len(pkg.documents) == 2


def test_package_for_someone_else_is_refused(sender: Identity, mailbox: Identity) -> None:
    data, _ = _build(sender, mailbox)
    with pytest.raises(NotForRecipientError):
        open_package(data, sender.key, sender.certificate)


def test_untrusted_signer_is_refused(sender: Identity, mailbox: Identity) -> None:
    from sdp import devpki

    other_root = devpki.make_ca("Someone else's root")
    data, _ = _build(sender, mailbox)
    with pytest.raises(CertificateChainError):
        open_package(data, mailbox.key, trust=[other_root.certificate])


def test_encrypted_size_limit_is_enforced_before_writing(sender: Identity,
                                                        mailbox: Identity) -> None:
    main, attachments = _docs()
    out = io.BytesIO()
    with pytest.raises(PackageSizeError, match="encrypted package would be"):
        build_package(out, hoveddokument=main, vedlegg=attachments,
                      avsender=avsender(SENDER_ORGNR), mottaker=None, signer=sender,
                      recipient=mailbox.certificate, max_package_bytes=104_000)
    assert out.getvalue() == b""


def test_documents_alone_over_the_limit_fail_early(sender: Identity, mailbox: Identity) -> None:
    main, _ = _docs()
    with pytest.raises(PackageSizeError):
        build_package(io.BytesIO(), hoveddokument=main, avsender=avsender(SENDER_ORGNR),
                      mottaker=None, signer=sender, recipient=mailbox.certificate,
                      max_package_bytes=50_000)


def test_extension_data_is_validated_against_its_schema(sender: Identity, mailbox: Identity,
                                                        ca: Identity) -> None:
    main, attachments = _docs(lenke=LENKE.read_bytes())
    out = io.BytesIO()
    build_package(out, hoveddokument=main, vedlegg=attachments, avsender=avsender(SENDER_ORGNR),
                  mottaker=None, signer=sender, recipient=mailbox.certificate)
    with open_package(out.getvalue(), mailbox.key, trust=[ca.certificate]) as pkg:
        assert pkg.documents[1].data_href == "lenke.xml"
        assert pkg.container.entries["lenke.xml"].read() == LENKE.read_bytes()
    bad_main, bad_attachments = _docs(lenke=LENKE.read_bytes().replace(b"<url>", b"<urll>", 1))
    with pytest.raises(ExtensionDataError) as err:
        build_package(io.BytesIO(), hoveddokument=bad_main, vedlegg=bad_attachments,
                      avsender=avsender(SENDER_ORGNR), mottaker=None, signer=sender,
                      recipient=mailbox.certificate)
    assert "info.html: data lenke.xml" in str(err.value)
    not_extension = _docs(lenke=(EXAMPLES / "sdpManifest.xml").read_bytes())
    with pytest.raises(ExtensionDataError, match="not an extension"):
        build_manifest(avsender=avsender(SENDER_ORGNR), hoveddokument=not_extension[0],
                       vedlegg=not_extension[1])


def test_file_not_listed_in_manifest_is_refused(sender: Identity) -> None:
    main, attachments = _docs()
    _, manifest_xml = build_manifest(avsender=avsender(SENDER_ORGNR), hoveddokument=main)
    out = io.BytesIO()
    with AsiceWriter(out) as writer:
        writer.add_document(main)
        writer.add_document(attachments[0])  # signed, but absent from the manifest
        writer.add_manifest(manifest_xml)
        writer.finish(lambda entries: xades.sign(entries, sender, WHEN))
    with pytest.raises(ManifestMismatchError) as err:
        open_container(out.getvalue())
    assert err.value.subject == "info.html"


def test_official_example_package_verifies(spec: Path) -> None:
    with open_container(EXAMPLES / "post.asice.zip") as pkg:
        assert pkg.documents[0].is_main
        assert pkg.signer.not_valid_after_utc.year < 2026  # expired: hence `at` below
    anchors = [c for c in pkg.signature.certificates
               if c.issuer == c.subject] or list(pkg.signature.certificates[-1:])
    with open_container(EXAMPLES / "post.asice.zip", trust=anchors,
                        at=pkg.signature.signing_time) as again:
        assert again.signature.chain is not None


def test_tampered_document_in_official_example_is_detected(spec: Path, tmp_path: Path) -> None:
    src = zipfile.ZipFile(EXAMPLES / "post.asice.zip")
    victim = next(n for n in src.namelist() if not n.startswith("META-INF") and n != "manifest.xml")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == victim:
                content = bytes([content[0] ^ 1]) + content[1:]
            dst.writestr(info, content)
    with pytest.raises(DigestMismatchError) as err:
        open_container(tampered)
    assert victim in str(err.value)


def test_streaming_build_memory_does_not_grow_with_document_size(
    tmp_path: Path, sender: Identity, mailbox: Identity
) -> None:
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:
        block = b"%PDF" + bytes(range(256)) * 4096
        for _ in range(48 * 1024 * 1024 // len(block)):
            fh.write(block)
    out_path = tmp_path / "big.cms"
    tracemalloc.start()
    try:
        with out_path.open("wb") as out:
            built = build_package(out, hoveddokument=Document(big, "big.pdf", "application/pdf"),
                                  avsender=avsender(SENDER_ORGNR), mottaker=None, signer=sender,
                                  recipient=mailbox.certificate, spool_bytes=1024 * 1024,
                                  max_package_bytes=64 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert built.size == out_path.stat().st_size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a 48 MiB document"
