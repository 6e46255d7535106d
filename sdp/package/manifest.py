"""manifest.xml (DIGEST 4.2), built with the generated bindings and checked against sdp.xsd.

Extension data files (lenke, bevis, arrangement; DIGEST 5) are validated against their own
schemas here, because the manifest is where they are tied to a document.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdp.bindings import to_xml
from sdp.errors import DocumentError, SchemaValidationError, XmlSecurityError
from sdp.package.documents import Document
from sdp.schemas import NS_ARRANGEMENT, NS_BEVIS, NS_LENKE, validate
from sdp_bindings import sdp as s

#: The extension namespaces a document's data file may use (DIGEST 5.1).
EXTENSION_NAMESPACES = {NS_LENKE: "lenke", NS_BEVIS: "bevis", NS_ARRANGEMENT: "arrangement"}


class ExtensionDataError(DocumentError):
    """An extension data file is not a valid lenke, bevis or arrangement document."""


def check_extension_data(doc: Document) -> None:
    """The document's extension data must be valid against its extension schema."""
    if doc.data is None:
        return
    subject = f"{doc.href}: data {doc.data.href}"
    try:
        found = validate(doc.data.content, what=subject)
    except (SchemaValidationError, XmlSecurityError) as exc:
        raise ExtensionDataError(f"invalid extension data: {exc}", subject=subject) from exc
    if found.namespace not in EXTENSION_NAMESPACES:
        raise ExtensionDataError(
            f"root {found.root} is not an extension (expected lenke, bevis or arrangement)",
            subject=subject,
        )


def _dokument(doc: Document) -> s.Dokument:
    return s.Dokument(
        href=doc.href,
        mime=doc.mime_type,
        tittel=s.Tittel(value=doc.title, lang=doc.language) if doc.title else None,
        data=s.DokumentData(href=doc.data.href, mime=doc.data.mime_type) if doc.data else None,
    )


def build_manifest(
    *,
    avsender: s.Avsender,
    hoveddokument: Document,
    vedlegg: Sequence[Document] = (),
    mottaker: s.Mottaker | None = None,
) -> tuple[s.Manifest, bytes]:
    """The typed manifest and its bytes, validated against the official schema.

    `mottaker` is given for digital post and omitted for physical post, where the package is
    encrypted to the print provider (DIGEST 4.2, [INFERRED]).
    """
    for doc in (hoveddokument, *vedlegg):
        check_extension_data(doc)
    manifest = s.Manifest(
        mottaker=mottaker,
        avsender=avsender,
        hoveddokument=_dokument(hoveddokument),
        vedlegg=[_dokument(d) for d in vedlegg],
    )
    try:
        data = to_xml(manifest)
    except ValueError as exc:  # control characters, lone surrogates (found by property tests)
        raise DocumentError(f"a value cannot be written as XML: {exc}",
                            subject="manifest.xml") from exc
    validate(data, what="manifest.xml")
    return manifest, data
