"""The shared XML-DSig engine: canonicalization, building, verifying, algorithm allow-lists."""

from __future__ import annotations

import hashlib
import uuid
import zipfile

import pytest
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLSigner, XMLVerifier
from signxml.algorithms import CanonicalizationMethod

from sdp import devpki
from sdp import xmldsig as ds
from sdp.errors import DigestMismatchError, SignatureValueError
from sdp.xmlparse import parse

# --- canonicalization against libxml2 on whole documents --------------------------------------

WHOLE_DOCUMENTS = [
    b'<a xmlns="urn:a" xmlns:x="urn:x" b="2" a="1" x:c="3"><b xmlns="">t &amp; &lt; &gt; "q"'
    b"</b><!-- c --><?pi data?><x:d attr=\"a&#10;b&#9;c&quot;&lt;\"/></a>",
    b"<?pi1?><!--pre--><r>x<![CDATA[<y>]]>z</r><!--post--><?pi2 x?>",
    b'<a xmlns:p="urn:p"><b xmlns:p="urn:p"><p:c/></b><p:d xmlns:p="urn:other"/></a>',
    b"<t>line&#13;break\r\nand\ttab</t>",
    b'<e xmlns:b="urn:b" xmlns:a="urn:z" a:x="1" b:y="2" z="0" xml:lang="no">'
    b'<f xml:lang="en"/></e>',
    b'<a xmlns="urn:a"><b xmlns=""><c xmlns="urn:a"/></b></a>',
    b'<p:a xmlns:p="urn:p" xmlns:q="urn:q" xmlns:unused="urn:u"><q:b p:at="v"/><c/></p:a>',
]


@pytest.mark.parametrize("doc", WHOLE_DOCUMENTS)
@pytest.mark.parametrize(
    ("algorithm", "exclusive", "comments"),
    [
        (ds.C14N10, False, False),
        (ds.C14N10_COMMENTS, False, True),
        (ds.C14N11, False, False),
        (ds.EXC_C14N, True, False),
        (ds.EXC_C14N_COMMENTS, True, True),
    ],
)
def test_whole_document_matches_libxml2(doc: bytes, algorithm: str, exclusive: bool,
                                        comments: bool) -> None:
    tree = etree.ElementTree(etree.fromstring(doc))
    expected = etree.tostring(tree, method="c14n", exclusive=exclusive, with_comments=comments)
    assert ds.canonicalize(tree, algorithm) == expected


@pytest.mark.parametrize("doc", WHOLE_DOCUMENTS)
def test_exclusive_prefix_list_matches_libxml2(doc: bytes) -> None:
    tree = etree.ElementTree(etree.fromstring(doc))
    expected = etree.tostring(tree, method="c14n", exclusive=True, with_comments=False,
                              inclusive_ns_prefixes=["q", "unused", "x"])
    got = ds.canonicalize(tree, ds.EXC_C14N, inclusive_prefixes=("q", "unused", "x"))
    assert got == expected


# --- canonicalization of subtrees (the cases lxml gets wrong) ----------------------------------

NESTED = (b'<r xmlns="urn:r" xmlns:x="urn:x" xml:lang="no" xml:id="i1">'
          b'<s xml:space="preserve"><t/></s></r>')


def test_inclusive_subtree_renders_ancestor_namespaces_and_xml_attributes() -> None:
    s = etree.fromstring(NESTED)[0]
    assert ds.canonicalize(s, ds.C14N10) == (
        b'<s xmlns="urn:r" xmlns:x="urn:x" xml:id="i1" xml:lang="no" xml:space="preserve">'
        b"<t></t></s>")


def test_c14n11_subtree_does_not_inherit_xml_id() -> None:
    s = etree.fromstring(NESTED)[0]
    assert ds.canonicalize(s, ds.C14N11) == (
        b'<s xmlns="urn:r" xmlns:x="urn:x" xml:lang="no" xml:space="preserve"><t></t></s>')


def test_c14n11_fixes_up_xml_base() -> None:
    doc = etree.fromstring(b'<a xml:base="http://e.org/x/"><b xml:base="y/"><c/></b></a>')
    assert ds.canonicalize(doc[0], ds.C14N11) == b'<b xml:base="http://e.org/x/y/"><c></c></b>'


def test_exclusive_subtree_renders_only_used_and_listed_prefixes() -> None:
    s = etree.fromstring(NESTED)[0]
    assert ds.canonicalize(s, ds.EXC_C14N) == b'<s xmlns="urn:r" xml:space="preserve"><t></t></s>'
    assert ds.canonicalize(s, ds.EXC_C14N, inclusive_prefixes=("x",)) == (
        b'<s xmlns="urn:r" xmlns:x="urn:x" xml:space="preserve"><t></t></s>')


def test_subtree_has_no_stray_empty_default_namespace() -> None:
    # lxml/libxml2 2.14 in-place c14n emits xmlns="" on every child here (DIGEST 4.4).
    doc = etree.fromstring(b'<a xmlns="urn:a"><b><c><d/></c></b></a>')
    assert ds.canonicalize(doc[0], ds.C14N10) == b'<b xmlns="urn:a"><c><d></d></c></b>'
    assert b'xmlns=""' in etree.tostring(doc[0], method="c14n")  # the bug we work around


def test_subtree_of_undeclared_default_namespace() -> None:
    doc = etree.fromstring(b'<a xmlns="urn:a"><b xmlns=""><c/></b></a>')
    assert ds.canonicalize(doc[0], ds.C14N10) == b"<b><c></c></b>"
    assert ds.canonicalize(doc, ds.C14N10) == b'<a xmlns="urn:a"><b xmlns=""><c></c></b></a>'


def test_same_document_node_set_drops_comments_even_with_comments_algorithm() -> None:
    doc = etree.fromstring(b"<a><!--x--><b/></a>")
    assert ds.canonicalize(doc, ds.C14N10_COMMENTS, comments=False) == b"<a><b></b></a>"
    assert ds.canonicalize(doc, ds.C14N10_COMMENTS) == b"<a><!--x--><b></b></a>"


def test_example_signed_properties_canonical_form(spec) -> None:  # type: ignore[no-untyped-def]
    """DIGEST 4.4: the canonical form pulls in the default and ns2 declarations."""
    with zipfile.ZipFile(spec / "eksempler" / "post.asice.zip") as z:
        root = parse(z.read("META-INF/signatures.xml"))
    sp = root.find(f".//{{{ds.XADES_NS}}}SignedProperties")
    assert sp is not None
    c14n = ds.canonicalize(sp, ds.C14N10)
    assert c14n.startswith(
        b'<SignedProperties xmlns="http://uri.etsi.org/01903/v1.3.2#" '
        b'xmlns:ns2="http://www.w3.org/2000/09/xmldsig#" Id="SignedProperties">')
    assert ds.b64(hashlib.sha256(c14n).digest()) == "BiHMW+f8SgDVP/86vqPwWq8Cw6DeyyjU48dSkBmCOQ0="


def test_unknown_canonicalization_is_refused() -> None:
    with pytest.raises(ds.AlgorithmNotAllowedError):
        ds.canonicalize(etree.fromstring(b"<a/>"), "http://example.org/c14n")


# --- an SBD-style enveloped signature (DIGEST 3.11) -------------------------------------------

SBD = (b'<sbd:StandardBusinessDocument xmlns:sbd="urn:sbd"><sbd:Header>h</sbd:Header>'
       b'<sdp:digitalPost xmlns:sdp="urn:sdp">\n  <sdp:avsender>x</sdp:avsender>\n'
       b"</sdp:digitalPost></sbd:StandardBusinessDocument>")


def _enveloped(identity: devpki.Identity) -> etree._Element:
    doc = etree.fromstring(SBD)
    post = doc[1]
    sig = ds.new_signature()
    post.insert(0, sig)
    sig.tail = post.text
    signed_info = ds.add_signed_info(sig, c14n=ds.Transform(ds.EXC_C14N))
    transforms = (ds.Transform(ds.ENVELOPED_SIGNATURE),)
    template = ds.Reference("", ds.SHA256, b"", transforms)
    ds.add_reference(signed_info, uri="", transforms=transforms,
                     digest_value=ds.reference_digest(template, doc, signature=sig))
    ds.add_key_info(sig, [identity.certificate])
    ds.add_signature_value(sig, identity.key)
    return doc


def _verify_enveloped(xml: bytes, profile: ds.Profile = ds.SBD_PROFILE) -> ds.SignedInfo:
    doc = parse(xml)
    sig = doc.find(f".//{{{ds.DS_NS}}}Signature")
    assert sig is not None
    cert = ds.certificates_from_key_info(sig)[0]
    return ds.verify(sig, profile=profile, public_key=cert.public_key(),
                     resolve=lambda ref: doc)


def test_enveloped_round_trip_and_tamper(sender: devpki.Identity) -> None:
    xml = etree.tostring(_enveloped(sender))
    info = _verify_enveloped(xml)
    assert [r.uri for r in info.references] == [""]
    assert info.canonicalization.algorithm == ds.EXC_C14N
    with pytest.raises(DigestMismatchError):
        _verify_enveloped(xml.replace(b">x<", b">y<"))
    with pytest.raises(DigestMismatchError):  # whitespace counts: it is in the node-set
        _verify_enveloped(xml.replace(b"\n  <sdp:avsender", b"\n <sdp:avsender"))


def test_enveloped_signature_verified_by_signxml(sender: devpki.Identity) -> None:
    """signxml independently checks our SignedInfo c14n, the enveloped digest and the value."""
    xml = etree.tostring(_enveloped(sender))
    config = SignatureConfiguration(
        signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}))
    result = XMLVerifier().verify(xml, x509_cert=sender.certificate, expect_config=config)
    assert result.signed_xml is not None
    assert result.signed_xml.tag == "{urn:sbd}StandardBusinessDocument"


def test_signxml_signature_verified_by_us(sender: devpki.Identity) -> None:
    signer = XMLSigner(c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
    signed = etree.tostring(
        signer.sign(etree.fromstring(SBD), key=sender.key, cert=[sender.certificate]))
    # signxml appends an exc-c14n transform after enveloped-signature; the strict SBD profile
    # (DIGEST 3.11) refuses that, a profile that allows it verifies it.
    with pytest.raises(ds.AlgorithmNotAllowedError):
        _verify_enveloped(signed)
    lenient = ds.Profile("test", ds.SBD_PROFILE.canonicalization,
                         ds.SBD_PROFILE.transforms | {ds.EXC_C14N})
    info = _verify_enveloped(signed, lenient)
    assert [t.algorithm for t in info.references[0].transforms] == [
        ds.ENVELOPED_SIGNATURE, ds.EXC_C14N]
    with pytest.raises(DigestMismatchError):
        _verify_enveloped(signed.replace(b">h<", b">H<"), lenient)


# --- a WS-Security-style signature (DIGEST 7.8) -----------------------------------------------

ENVELOPE = (
    f'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
    f'xmlns:wsse="{ds.WSSE_NS}" xmlns:wsu="{ds.WSU_NS}"><env:Header>'
    f'<wsse:Security env:mustUnderstand="true"><wsu:Timestamp wsu:Id="TS-1">'
    f"<wsu:Created>2014-10-13T13:12:59.216Z</wsu:Created></wsu:Timestamp></wsse:Security>"
    f'</env:Header><env:Body wsu:Id="soapBody"><p xmlns="urn:p">payload</p></env:Body>'
    f"</env:Envelope>"
).encode()
ATTACHMENT = b"\x00encrypted package bytes\xff"
CID = "cid:abc@meldingsformidler.sdp.difi.no"


def _wss_resolver(root: etree._Element, attachment: bytes) -> ds.Resolver:
    def resolve(ref: ds.Reference) -> ds.Resolved:
        uri = ref.uri or ""
        if uri.startswith("#"):
            return ds.find_by_id(root, uri[1:], (f"{{{ds.WSU_NS}}}Id",))
        if uri == CID:
            return attachment
        raise AssertionError(uri)
    return resolve


def _wss_sign(identity: devpki.Identity) -> bytes:
    root = etree.fromstring(ENVELOPE)
    security = root[0][0]
    sig = ds.new_signature(security, ds_prefix="ds", id="SIG-1")
    signed_info = ds.add_signed_info(sig, c14n=ds.Transform(ds.EXC_C14N, ("env",)))
    resolve = _wss_resolver(root, ATTACHMENT)
    for uri, transform in [
        ("#soapBody", ds.Transform(ds.EXC_C14N, ())),
        ("#TS-1", ds.Transform(ds.EXC_C14N, ("wsse", "env"))),
        (CID, ds.Transform(ds.SWA_ATTACHMENT_CONTENT)),
    ]:
        template = ds.Reference(uri, ds.SHA256, b"", (transform,))
        ds.add_reference(signed_info, uri=uri, transforms=[transform],
                         digest_value=ds.reference_digest(template, resolve(template)))
    ds.add_key_info(sig, [identity.certificate])
    ds.add_signature_value(sig, identity.key)
    return etree.tostring(root)


def _wss_verify(xml: bytes, attachment: bytes, key: object) -> ds.SignedInfo:
    root = parse(xml)
    sig = root.find(f".//{{{ds.DS_NS}}}Signature")
    assert sig is not None
    return ds.verify(sig, profile=ds.WSS_PROFILE, public_key=key,
                     resolve=_wss_resolver(root, attachment))


def test_wss_round_trip(sender: devpki.Identity) -> None:
    xml = _wss_sign(sender)
    assert b'<ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" ' \
           b'PrefixList="env"/>' in xml
    info = _wss_verify(xml, ATTACHMENT, sender.certificate.public_key())
    assert [r.uri for r in info.references] == ["#soapBody", "#TS-1", CID]
    assert info.references[1].transforms[0].inclusive_prefixes == ("wsse", "env")


def test_wss_timestamp_c14n_includes_listed_prefixes() -> None:
    root = etree.fromstring(ENVELOPE)
    ts = ds.find_by_id(root, "TS-1", (f"{{{ds.WSU_NS}}}Id",))
    c14n = ds.canonicalize(ts, ds.EXC_C14N, inclusive_prefixes=("wsse", "env"))
    assert c14n.startswith(b'<wsu:Timestamp xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
                           b'xmlns:wsse=')


def test_wss_tampered_attachment_body_and_value(sender: devpki.Identity,
                                                mailbox: devpki.Identity) -> None:
    xml = _wss_sign(sender)
    key = sender.certificate.public_key()
    with pytest.raises(DigestMismatchError, match=CID):
        _wss_verify(xml, ATTACHMENT + b"\x00", key)
    with pytest.raises(DigestMismatchError, match="soapBody"):
        _wss_verify(xml.replace(b">payload<", b">payl0ad<"), ATTACHMENT, key)
    with pytest.raises(SignatureValueError):
        _wss_verify(xml, ATTACHMENT, mailbox.certificate.public_key())


# --- allow-lists and structure ----------------------------------------------------------------


def test_profiles_refuse_algorithms_outside_their_list(sender: devpki.Identity) -> None:
    xml = _wss_sign(sender)
    key = sender.certificate.public_key()
    for old, new in [
        (ds.RSA_SHA256.encode(), b"http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
        (ds.SHA256.encode(), ds.SHA1.encode()),
        (ds.SWA_ATTACHMENT_CONTENT.encode(), ds.ENVELOPED_SIGNATURE.encode()),
    ]:
        with pytest.raises(ds.AlgorithmNotAllowedError):
            _wss_verify(xml.replace(old, new), ATTACHMENT, key)
    # WS-Security uses exclusive c14n; the XAdES profile does not allow it for SignedInfo.
    sig = parse(xml).find(f".//{{{ds.DS_NS}}}Signature")
    assert sig is not None
    with pytest.raises(ds.AlgorithmNotAllowedError, match="CanonicalizationMethod"):
        ds.parse_signed_info(sig, ds.XADES_PROFILE)


def test_duplicate_ids_are_refused() -> None:
    root = etree.fromstring(b'<a><b Id="x"/><c Id="x"/></a>')
    with pytest.raises(ds.SignatureProfileError, match="2 elements"):
        ds.find_by_id(root, "x")
    with pytest.raises(ds.SignatureProfileError, match="no element"):
        ds.find_by_id(root, "y")


def test_malformed_signed_info_is_a_profile_error(sender: devpki.Identity) -> None:
    xml = etree.tostring(_enveloped(sender))
    with pytest.raises(ds.SignatureProfileError, match="DigestValue"):
        _verify_enveloped(xml.replace(b"<DigestValue>", b"<DigestValue>!!"))
    no_refs = etree.fromstring(xml)
    info = no_refs.find(f".//{{{ds.DS_NS}}}SignedInfo")
    assert info is not None
    info.remove(info[2])
    with pytest.raises(ds.SignatureProfileError, match="SignedInfo"):
        _verify_enveloped(etree.tostring(no_refs))


def test_prefix_list_names_a_namespace_declared_through_the_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # lxml hands libxml2 only PrefixList entries already in the document's dictionary; a
    # prefix no parsed document ever used (here a fresh one) was dropped from the output.
    fresh = f"p{uuid.uuid4().hex[:12]}"
    root = etree.fromstring(b'<r xmlns:e="urn:e"><h/></r>')
    holder = etree.SubElement(root[0], f"{{urn:{fresh}}}sec", nsmap={fresh: f"urn:{fresh}",
                                                                     "u": "urn:u"})
    apex = etree.SubElement(holder, "{urn:u}ts")
    python = ds._Canonicalizer
    with monkeypatch.context() as m:  # libxml2 itself must get it right, not the fallback
        m.setattr(ds, "_Canonicalizer", None)
        got = ds.canonicalize(apex, ds.EXC_C14N, inclusive_prefixes=(fresh, "e"))
    assert got == (f'<u:ts xmlns:e="urn:e" xmlns:{fresh}="urn:{fresh}" xmlns:u="urn:u">'
                   "</u:ts>").encode()
    reference = python(exclusive=True, v11=False, comments=True,
                       prefixes=frozenset({fresh, "e"}))
    assert got == reference.subtree(apex)


def test_renders_prefixes_guard_sends_a_missing_declaration_to_python() -> None:
    apex = etree.fromstring(b'<a:r xmlns:a="urn:a" xmlns:b="urn:b"/>')
    assert ds._renders_prefixes(b'<a:r xmlns:a="urn:a" xmlns:b="urn:b"></a:r>', apex, ["b"])
    assert not ds._renders_prefixes(b'<a:r xmlns:a="urn:a"></a:r>', apex, ["b"])
    assert ds._renders_prefixes(b'<a:r xmlns:a="urn:a"></a:r>', apex, ["c"])  # not in scope
