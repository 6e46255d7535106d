"""XML-DSig engine shared by the three SDP signature profiles.

SDP signs XML in three places that differ only in configuration: the XAdES signature of the
document package (DIGEST 4.3), the enveloped signature of the business message (DIGEST 3.11)
and the WS-Security signature of the SOAP message (DIGEST 7.8). This module holds the
mechanism once: canonicalization, building `ds:Reference`/`ds:SignedInfo`/`ds:KeyInfo`,
signing, and the verifying mirror that checks algorithms against a per-profile allow-list,
the SignatureValue and each reference digest (through a caller-supplied resolver).

Canonicalization has a reference implementation here, because libxml2 (through lxml) is not
exact everywhere: it canonicalizes a sub-element with stray `xmlns=""` declarations and
without the `xml:*` attributes inherited from ancestors (DIGEST 4.4 pitfall), has no C14N 1.1,
and lxml drops PrefixList entries it has not seen parsed. libxml2 is used, ~10x faster, only
where its output provably equals the reference (see `canonicalize`); tests compare the two on
every element of every official example and on generated trees.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import cast
from urllib.parse import urljoin

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from sdp.certificates import load_der
from sdp.errors import DigestMismatchError, SignatureError, SignatureValueError
from sdp.xmlparse import parse

# --- namespaces (DIGEST 0.1) ------------------------------------------------------------------

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EC_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
ASIC_NS = "http://uri.etsi.org/2918/v1.2.1#"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# --- algorithm identifiers (DIGEST 0.2) -------------------------------------------------------

C14N10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N10_COMMENTS = C14N10 + "#WithComments"
C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
C14N11_COMMENTS = C14N11 + "#WithComments"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_COMMENTS = EXC_C14N + "WithComments"
ENVELOPED_SIGNATURE = DS_NS + "enveloped-signature"
SWA_ATTACHMENT_CONTENT = (
    "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform"
)
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"

#: Canonicalization algorithms this module implements: URI -> (exclusive, 1.1, with comments).
_C14N_MODES: dict[str, tuple[bool, bool, bool]] = {
    C14N10: (False, False, False),
    C14N10_COMMENTS: (False, False, True),
    C14N11: (False, True, False),
    C14N11_COMMENTS: (False, True, True),
    EXC_C14N: (True, False, False),
    EXC_C14N_COMMENTS: (True, False, True),
}
CANONICALIZATION_METHODS = frozenset(_C14N_MODES)

_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    SHA256: lambda data: hashlib.sha256(data).digest(),
    # Only for XAdES CertDigest (DIGEST 0.2), never for references unless a profile allows it.
    SHA1: lambda data: hashlib.sha1(data, usedforsecurity=False).digest(),
}
_SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {RSA_SHA256: hashes.SHA256}


class SignatureProfileError(SignatureError):
    """The signature's structure breaks the profile: a missing, repeated or unexpected element."""


class AlgorithmNotAllowedError(SignatureProfileError):
    """An algorithm URI outside the profile's allow-list (DIGEST 10.3: rsa-sha256/SHA-256 only)."""


def _ds(local: str) -> str:
    return f"{{{DS_NS}}}{local}"


# --- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What one signature profile allows; the engine refuses everything else."""

    name: str
    canonicalization: frozenset[str]
    transforms: frozenset[str] = frozenset()
    signature_methods: frozenset[str] = frozenset({RSA_SHA256})
    digest_methods: frozenset[str] = frozenset({SHA256})


#: DIGEST 4.3: SignedInfo C14N 1.1 (SHOULD) or 1.0 (MAY); only the SignedProperties reference
#: has a transform, C14N 1.0.
XADES_PROFILE = Profile("XAdES", frozenset({C14N11, C14N10}), frozenset({C14N10}))
#: DIGEST 3.11: exclusive c14n of SignedInfo, enveloped-signature transform on URI="".
SBD_PROFILE = Profile("SBD signature", frozenset({EXC_C14N}), frozenset({ENVELOPED_SIGNATURE}))
#: DIGEST 7.8: exclusive c14n everywhere, plus the SwA attachment transform for the `cid:` part.
WSS_PROFILE = Profile(
    "WS-Security", frozenset({EXC_C14N}), frozenset({EXC_C14N, SWA_ATTACHMENT_CONTENT})
)


# --- canonicalization -------------------------------------------------------------------------


def canonicalize(node: etree._Element | etree._ElementTree, algorithm: str = C14N10, *,
                 inclusive_prefixes: Sequence[str] = (), comments: bool = True) -> bytes:
    """Canonical bytes of a whole document (`_ElementTree`) or of one element's subtree.

    A subtree is canonicalized as the XML-DSig node-set "this element and its descendants",
    in the context of its document: inclusive c14n renders every namespace in scope at the
    apex (DIGEST 4.4) and, for 1.0, the `xml:*` attributes inherited from ancestors; exclusive
    c14n renders only visibly used namespaces and those named in `inclusive_prefixes`
    (`#default` for the default namespace, DIGEST 7.8). `comments=False` drops comments even
    for a #WithComments algorithm, as same-document URIs require.
    """
    try:
        exclusive, v11, with_comments = _C14N_MODES[algorithm]
    except KeyError:
        raise AlgorithmNotAllowedError(f"unsupported canonicalization {algorithm}") from None
    apex = node.getroot() if isinstance(node, etree._ElementTree) else node
    keep = with_comments and comments
    if exclusive and "#default" not in inclusive_prefixes:
        fast = _libxml2_exclusive(node, keep, inclusive_prefixes, algorithm)
    elif not exclusive:
        fast = _libxml2_inclusive(node, keep)
    else:
        fast = None
    if fast is not None and _exact(fast, apex):
        return fast
    c14n = _Canonicalizer(
        exclusive=exclusive,
        v11=v11,
        comments=keep,
        prefixes=frozenset("" if p == "#default" else p for p in inclusive_prefixes),
    )
    if isinstance(node, etree._ElementTree):
        return c14n.document(node.getroot())
    return c14n.subtree(node)


def _libxml2_exclusive(node: etree._Element | etree._ElementTree, with_comments: bool,
                       prefixes: Sequence[str], algorithm: str) -> bytes | None:
    """Exclusive c14n by libxml2, or None where it is known to be wrong.

    Exclusive c14n does not depend on the context above the apex, so libxml2's C
    implementation is exact here and ~13x faster (bench/e2e.py); it runs about ten times per
    consignment. Its known flaws send us to the Python implementation: a stray xmlns="" on a
    sub-tree, and PrefixList entries lxml drops (below).
    """
    apex = node.getroot() if isinstance(node, etree._ElementTree) else node
    try:
        for prefix in prefixes:
            # lxml passes libxml2 only the PrefixList entries already in the document's string
            # dictionary, on the theory that no other prefix can occur; a namespace declared
            # through the API (wsse:Security as we sign) is not in it, and was silently left
            # out of the Timestamp's digest. Creating (and dropping) an element of that name
            # puts it there.
            apex.makeelement(prefix)
    except ValueError:  # not a name (a:b, 1x): the Python implementation decides
        return None
    try:
        fast = etree.tostring(node, method="c14n", exclusive=True, with_comments=with_comments,
                              inclusive_ns_prefixes=list(prefixes) or None)
    except etree.C14NError as exc:  # e.g. a relative namespace URI (found by fuzzing)
        raise SignatureProfileError(f"cannot canonicalize: {exc}", subject=algorithm) from None
    if b'xmlns=""' in fast or not _renders_prefixes(fast, apex, prefixes):
        return None
    return fast


#: True when a namespace in scope anywhere in the subtree has `&` in its URI.
_AMPERSAND_NAMESPACE = etree.XPath(
    "boolean(descendant-or-self::*/namespace::*[contains(., '&')])")
#: The first start tag of a canonical document, after any comments and PIs before it.
_FIRST_START_TAG = re.compile(rb"(?:<\?[^>]*\?>\n|<!--.*?-->\n)*(<[^!?][^>]*>)", re.S)


def _exact(canonical: bytes, apex: etree._Element | None) -> bool:
    """False where libxml2 is known to differ from C14N: it writes `&` in a namespace URI
    unescaped (found in review: `urn:a&b` and `urn:a&amp;b` then canonicalize alike). Such a
    URI can only show as a `&` in the output, so the costly look at every namespace in scope
    runs only for output that has one."""
    if b"&" not in canonical or apex is None:
        return True
    return not _AMPERSAND_NAMESPACE(apex)


def _renders_prefixes(canonical: bytes, apex: etree._Element | None,
                      prefixes: Sequence[str]) -> bool:
    """Whether the apex's start tag declares every PrefixList prefix in scope there, as
    exclusive c14n requires of the apex (it has no rendered ancestor); a check that the
    dictionary fix above worked, sending anything else to the Python implementation."""
    if not prefixes or apex is None:
        return True
    in_scope = apex.nsmap
    found = _FIRST_START_TAG.match(canonical)
    head = found.group(1) if found else b""
    return all(f' xmlns:{p}="'.encode() in head for p in prefixes if p in in_scope)


def _is_prefix(value: str) -> bool:
    """Whether `value` can be a namespace prefix (an XML NCName), as lxml judges names."""
    try:
        etree.Element(value)
    except ValueError:
        return False
    return True


#: Clark-notation start of an attribute in the XML namespace (xml:lang, xml:space, ...).
_XML_ATTRIBUTE = f"{{{XML_NS}}}"


def _bindings(el: etree._Element) -> dict[str | None, str]:
    """The namespaces in scope at `el`; `xmlns=""` (no default namespace) counts as none."""
    return {p: u for p, u in el.nsmap.items() if p is not None or u}


def _libxml2_inclusive(node: etree._Element | etree._ElementTree,
                       with_comments: bool) -> bytes | None:
    """Inclusive C14N by libxml2 where it provably equals `_Canonicalizer`, else None.

    lxml offers libxml2's C14N 1.0 of a document, about ten times faster than the Python
    implementation (bench: SBD digest, XAdES SignedInfo and SignedProperties). It is used
    when all of these hold; otherwise (None) the Python implementation decides:

    * 1.0 stands in for 1.1. C14N 1.1 differs from 1.0 only in its section 2.4, the
      processing of an element whose parent is omitted from the node-set: the `xml:*`
      attributes inherited from omitted ancestors (1.1: not xml:id) and the xml:base fix-up.
      A whole document omits no parent; a subtree omits only the apex's, and when no ancestor
      has an `xml:*` attribute, neither version adds anything to the apex.
    * A whole document (`_ElementTree`): its root is the root element of its libxml2
      document (lxml canonicalizes that document, not a wrapped sub-element or a detached
      element) and no text lies at document level (an API-set tail of the root or of a
      comment/PI beside it, which libxml2 prints). Comments and PIs outside the root element
      get the same line breaks from both (tests/test_xmldsig.py).
    * A subtree: no ancestor has an `xml:*` attribute (see above), and a copy of the subtree
      as a document of its own has in scope at its root exactly the namespaces in scope at
      the apex. The copy (libxml2 xmlDocCopyNode) resolves every namespace reference inside
      itself and declares on its root those the subtree uses but ancestors declare; each
      element keeps its own declarations, attributes and children. With the same bindings at
      the root, every element of the copy has the in-scope namespaces of its original, so
      the copy's canonical form is the subtree's, every namespace in scope at the apex
      included (DIGEST 4.4). A namespace that an ancestor declares and the subtree does not
      use is missing from the copy, so such a subtree is left to Python. The apex's tail,
      which the copy keeps as document-level text, is dropped. lxml's own c14n of an element
      is not used: its stand-in root holds copies of the ancestors' declarations while the
      descendants still point at the originals, and libxml2, which compares declarations by
      identity, then emits stray `xmlns=""` and repeated declarations (on `d` in
      `<r xmlns:p="u"><a><p:b><c><d xmlns:p="u"/></c></p:b></a></r>`, apex `a`).
    * libxml2 succeeds: it refuses (C14NError) relative namespace URIs, which the Python
      implementation renders, and entity references, which it refuses with its own error.

    Both implementations presume what every parsed, copied or factory-built lxml tree is: each
    element and attribute in the namespace its prefix is bound to. lxml can break that when
    it moves an element that re-declares a prefix (it drops declarations it judges redundant
    by URI alone); its serializer then writes a different document, and the two
    canonicalizers disagree too (tests/test_c14n_fast.py). No caller here canonicalizes such
    a tree: verification parses; signing builds with lxml's factories and moves nothing but a
    fresh, empty ds:Signature.

    `inclusive_prefixes` mean nothing to inclusive c14n; `_Canonicalizer` ignores them too.
    """
    if isinstance(node, etree._ElementTree):
        root = node.getroot()
        if root is None or root.getroottree().getroot() is not root or root.tail is not None:
            return None
        if any(sibling.tail is not None for sibling in root.itersiblings(preceding=True)):
            return None
        if any(sibling.tail is not None for sibling in root.itersiblings()):
            return None
        document = node
    else:
        if not isinstance(node.tag, str):
            return None  # a comment or PI as the apex
        for ancestor in node.iterancestors():
            if any(str(name).startswith(_XML_ATTRIBUTE) for name in ancestor.keys()):
                return None
        dup = copy.copy(node)
        dup.tail = None
        if _bindings(dup) != _bindings(node):
            return None
        document = dup.getroottree()
    try:
        return etree.tostring(document, method="c14n", exclusive=False,
                              with_comments=with_comments)
    except etree.C14NError:
        return None


def _escape_text(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#xD;"))


def _escape_attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace("\t", "&#x9;").replace("\n", "&#xA;").replace("\r", "&#xD;"))


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, local = name[1:].split("}", 1)
        return ns, local
    return "", name


@dataclass(frozen=True)
class _Canonicalizer:
    exclusive: bool
    v11: bool
    comments: bool
    prefixes: frozenset[str]

    def document(self, root: etree._Element) -> bytes:
        out: list[str] = []
        for node in reversed(list(root.itersiblings(preceding=True))):
            if self._misc(node, out):
                out.append("\n")
        self._element(root, out, {}, {})
        for node in root.itersiblings():
            mark = len(out)
            out.append("\n")
            if not self._misc(node, out):
                del out[mark:]
        return "".join(out).encode("utf-8")

    def subtree(self, el: etree._Element) -> bytes:
        out: list[str] = []
        self._element(el, out, {}, self._inherited_xml_attributes(el))
        return "".join(out).encode("utf-8")

    def _inherited_xml_attributes(self, el: etree._Element) -> dict[str, str]:
        """xml:* attributes of omitted ancestors that the apex must carry (C14N 1.0 / 1.1)."""
        if self.exclusive:
            return {}
        found: dict[str, str] = {}
        bases: list[str] = []
        for ancestor in el.iterancestors():  # nearest first
            for name, raw in ancestor.attrib.items():
                ns, local = _split(str(name))
                value = str(raw)
                if ns != XML_NS:
                    continue
                if self.v11 and local == "id":
                    continue  # C14N 1.1: xml:id is not inherited
                if self.v11 and local == "base":
                    bases.append(value)
                    continue
                found.setdefault(local, value)
        if bases:
            # C14N 1.1 xml:base fix-up: resolve the apex's base against the omitted ancestors'.
            own = el.get(f"{{{XML_NS}}}base")
            chain = [*reversed(bases), *([own] if own is not None else [])]
            found["base"] = reduce(urljoin, chain)
        return found

    def _misc(self, node: etree._Element, out: list[str]) -> bool:
        """Render a comment or PI; False when it is not part of the output."""
        if isinstance(node, etree._Comment):
            if not self.comments:
                return False
            out.append(f"<!--{node.text or ''}-->")
            return True
        if isinstance(node, etree._ProcessingInstruction):
            target = str(node.target)
            out.append(f"<?{target} {node.text}?>" if node.text else f"<?{target}?>")
            return True
        if isinstance(node, etree._Entity):
            raise SignatureProfileError("entity references cannot be canonicalized")
        return False

    def _attribute_prefix(self, el: etree._Element, ns: str, name: str) -> str:
        if ns == XML_NS:
            return "xml"
        candidates = sorted(p for p, u in el.nsmap.items() if p is not None and u == ns)
        if len(candidates) == 1:
            return candidates[0]
        # Several prefixes bind this namespace: ask XPath which one the attribute really uses.
        local = _split(name)[1]
        for i in range(1, len(el.attrib) + 1) if candidates else ():
            if (el.xpath(f"namespace-uri(@*[{i}])") == ns
                    and el.xpath(f"local-name(@*[{i}])") == local):
                prefix = str(el.xpath(f"name(@*[{i}])")).rpartition(":")[0]
                if prefix in candidates:
                    return prefix
        raise SignatureProfileError(f"attribute {name} uses an undeclared namespace",
                                    subject=str(el.tag))

    def _element(self, el: etree._Element, out: list[str], rendered: dict[str, str],
                 extra: dict[str, str]) -> None:
        in_scope = {("" if p is None else p): u for p, u in el.nsmap.items()}
        local = _split(str(el.tag))[1]
        prefix = el.prefix or ""
        qname = f"{prefix}:{local}" if prefix else local

        attrs: list[tuple[str, str, str, str]] = []
        used = {prefix}
        for name, raw in el.attrib.items():
            a_ns, a_local = _split(str(name))
            value = str(raw)
            if a_ns:
                a_prefix = self._attribute_prefix(el, a_ns, str(name))
                if a_prefix != "xml":
                    used.add(a_prefix)
                attrs.append((a_ns, a_local, f"{a_prefix}:{a_local}", value))
            else:
                attrs.append(("", a_local, a_local, value))
        # The apex's own xml:* attributes win over inherited ones, except a fixed-up xml:base
        # (C14N 1.1), which already folds the apex's own value in.
        override = {k for k in extra if k == "base" and self.v11}
        attrs = [a for a in attrs if not (a[0] == XML_NS and a[1] in override)]
        present = {(a[0], a[1]) for a in attrs}
        for x_local, value in extra.items():
            if (XML_NS, x_local) not in present:
                attrs.append((XML_NS, x_local, f"xml:{x_local}", value))

        if self.exclusive:
            candidates = used | {p for p in self.prefixes if p == "" or p in in_scope}
        else:
            candidates = set(in_scope) | {""}
        declarations: dict[str, str] = {}
        for p in candidates:
            if p == "":
                uri = in_scope.get("", "")
                if rendered.get("", "") != uri:
                    declarations[p] = uri
            elif p in in_scope and rendered.get(p) != in_scope[p]:
                declarations[p] = in_scope[p]

        parts = [f"<{qname}"]
        for p in sorted(declarations):
            name = f"xmlns:{p}" if p else "xmlns"
            parts.append(f' {name}="{_escape_attr(declarations[p])}"')
        for _a_ns, _a_local, a_qname, value in sorted(attrs, key=lambda a: (a[0], a[1])):
            parts.append(f' {a_qname}="{_escape_attr(value)}"')
        parts.append(">")
        out.append("".join(parts))

        child_rendered = {**rendered, **declarations} if declarations else rendered
        if el.text:
            out.append(_escape_text(el.text))
        for child in el:
            if isinstance(child.tag, str):
                self._element(child, out, child_rendered, {})
            else:
                self._misc(child, out)
            if child.tail:
                out.append(_escape_text(child.tail))
        out.append(f"</{qname}>")


# --- digests ----------------------------------------------------------------------------------


def digest(data: bytes, algorithm: str = SHA256) -> bytes:
    """Digest `data` with the algorithm named by its XML-DSig URI."""
    try:
        return _DIGESTS[algorithm](data)
    except KeyError:
        raise AlgorithmNotAllowedError(f"unsupported digest method {algorithm}") from None


def b64(data: bytes) -> str:
    """Base64 without line breaks: deterministic output for reproducible signatures."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str | None, *, subject: str) -> bytes:
    """Strict base64 (whitespace allowed, as base64Binary permits) or a typed error."""
    compact = "".join((text or "").split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureProfileError("not valid base64", subject=subject) from None


# --- signing side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """One `ds:Transform` (or the SignedInfo CanonicalizationMethod) with its PrefixList."""

    algorithm: str
    #: `ec:InclusiveNamespaces/@PrefixList` for exclusive c14n; None when absent.
    inclusive_prefixes: tuple[str, ...] | None = None


def new_signature(parent: etree._Element | None = None, *, ds_prefix: str | None = None,
                  id: str | None = None) -> etree._Element:
    """An empty `ds:Signature`, optionally appended to `parent`.

    `ds_prefix=None` declares ds as the default namespace, as XAdES and the SBD signature do
    (DIGEST 3.11, 4.3); WS-Security uses `ds` (DIGEST 7.8).
    """
    nsmap = ns_map({ds_prefix: DS_NS})
    sig = (etree.SubElement(parent, _ds("Signature"), nsmap=nsmap) if parent is not None
           else etree.Element(_ds("Signature"), nsmap=nsmap))
    if id is not None:
        sig.set("Id", id)
    return sig


def ns_map(mapping: dict[str | None, str]) -> dict[str, str]:
    """An lxml nsmap; lxml-stubs type the keys as str but None (default namespace) is valid."""
    return cast("dict[str, str]", mapping)


def _add_prefix_list(parent: etree._Element, prefixes: Sequence[str] | None) -> None:
    if prefixes is not None:
        inc = etree.SubElement(parent, f"{{{EC_NS}}}InclusiveNamespaces", nsmap={"ec": EC_NS})
        inc.set("PrefixList", " ".join(prefixes))


def add_signed_info(signature: etree._Element, *, c14n: Transform,
                    signature_method: str = RSA_SHA256) -> etree._Element:
    """Append `ds:SignedInfo` with its CanonicalizationMethod and SignatureMethod."""
    signed_info = etree.SubElement(signature, _ds("SignedInfo"))
    method = etree.SubElement(signed_info, _ds("CanonicalizationMethod"), Algorithm=c14n.algorithm)
    _add_prefix_list(method, c14n.inclusive_prefixes)
    etree.SubElement(signed_info, _ds("SignatureMethod"), Algorithm=signature_method)
    return signed_info


def add_reference(signed_info: etree._Element, *, uri: str, digest_value: bytes,
                  digest_method: str = SHA256, transforms: Sequence[Transform] = (),
                  id: str | None = None, type: str | None = None) -> etree._Element:
    """Append a `ds:Reference` (attribute order Id, Type, URI as in the package example)."""
    ref = etree.SubElement(signed_info, _ds("Reference"))
    if id is not None:
        ref.set("Id", id)
    if type is not None:
        ref.set("Type", type)
    ref.set("URI", uri)
    if transforms:
        container = etree.SubElement(ref, _ds("Transforms"))
        for t in transforms:
            el = etree.SubElement(container, _ds("Transform"), Algorithm=t.algorithm)
            _add_prefix_list(el, t.inclusive_prefixes)
    etree.SubElement(ref, _ds("DigestMethod"), Algorithm=digest_method)
    etree.SubElement(ref, _ds("DigestValue")).text = b64(digest_value)
    return ref


def add_key_info(signature: etree._Element, certificates: Iterable[x509.Certificate], *,
                 id: str | None = None) -> etree._Element:
    """Append `ds:KeyInfo/ds:X509Data` with one `ds:X509Certificate` per certificate, in order."""
    key_info = etree.SubElement(signature, _ds("KeyInfo"))
    if id is not None:
        key_info.set("Id", id)
    data = etree.SubElement(key_info, _ds("X509Data"))
    for cert in certificates:
        etree.SubElement(data, _ds("X509Certificate")).text = b64(
            cert.public_bytes(serialization.Encoding.DER))
    return key_info


def add_signature_value(signature: etree._Element, key: rsa.RSAPrivateKey) -> etree._Element:
    """Sign the canonical SignedInfo (RSA PKCS#1 v1.5, deterministic) and insert the value.

    Call this last: SignedInfo must be complete. The `ds:SignatureValue` goes right after
    `ds:SignedInfo`, whatever was appended to the signature since.
    """
    info = parse_signed_info(signature, _ANY_PROFILE, references=False)
    hash_cls = _SIGNATURE_HASHES[info.signature_method]
    value = key.sign(_canonical_signed_info(info), padding.PKCS1v15(), hash_cls())
    sv = etree.Element(_ds("SignatureValue"))
    sv.text = b64(value)
    signature.insert(signature.index(info.element) + 1, sv)
    return sv


# --- parsing and verifying --------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A parsed `ds:Reference`."""

    uri: str | None
    digest_method: str
    digest_value: bytes
    transforms: tuple[Transform, ...] = ()
    id: str | None = None
    type: str | None = None
    element: etree._Element | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """How error messages name this reference."""
        return f"Reference URI={self.uri!r}" + (f" Id={self.id!r}" if self.id else "")


@dataclass(frozen=True)
class SignedInfo:
    """A parsed `ds:SignedInfo`, already checked against a profile's allow-list."""

    element: etree._Element
    canonicalization: Transform
    signature_method: str
    references: tuple[Reference, ...]


_ANY_PROFILE = Profile(
    "any", frozenset(_C14N_MODES),
    frozenset({*_C14N_MODES, ENVELOPED_SIGNATURE, SWA_ATTACHMENT_CONTENT}),
    frozenset(_SIGNATURE_HASHES), frozenset(_DIGESTS),
)


def _children(el: etree._Element) -> list[etree._Element]:
    """Element children only: comments and PIs are not structure."""
    return [c for c in el if isinstance(c.tag, str)]


def _expect(el: etree._Element | None, local: str, where: str) -> etree._Element:
    if el is None or el.tag != _ds(local):
        found = "nothing" if el is None else str(el.tag)
        raise SignatureProfileError(f"expected ds:{local}, found {found}", subject=where)
    return el


def _algorithm(el: etree._Element, allowed: frozenset[str], what: str) -> str:
    alg = el.get("Algorithm")
    if alg is None:
        raise SignatureProfileError("missing Algorithm", subject=what)
    if alg not in allowed:
        raise AlgorithmNotAllowedError(f"algorithm {alg} is not allowed", subject=what)
    return alg


def _parse_transform(el: etree._Element, allowed: frozenset[str], what: str) -> Transform:
    alg = _algorithm(el, allowed, what)
    prefixes: tuple[str, ...] | None = None
    inner = _children(el)
    if alg in (EXC_C14N, EXC_C14N_COMMENTS) and inner:
        inc = inner[0]
        if inc.tag != f"{{{EC_NS}}}InclusiveNamespaces" or len(inner) > 1:
            raise SignatureProfileError("unexpected content", subject=what)
        prefixes = tuple((inc.get("PrefixList") or "").split())
        for prefix in prefixes:
            if prefix != "#default" and not _is_prefix(prefix):
                raise SignatureProfileError(f"PrefixList entry {prefix!r} is not a prefix",
                                            subject=what)
    elif inner:
        raise SignatureProfileError(f"unexpected {inner[0].tag}", subject=what)
    return Transform(alg, prefixes)


def parse_signed_info(signature: etree._Element, profile: Profile, *,
                      references: bool = True) -> SignedInfo:
    """Parse the signature's SignedInfo and refuse anything outside `profile`.

    `references=False` leaves the References unparsed (an empty tuple), for the signer,
    which needs only the two algorithms of a SignedInfo it has just built."""
    _expect(signature, "Signature", "signature")
    kids = _children(signature)
    info = _expect(kids[0] if kids else None, "SignedInfo", "ds:Signature")
    parts = _children(info)
    if len(parts) < 3:
        raise SignatureProfileError("needs CanonicalizationMethod, SignatureMethod and a "
                                    "Reference", subject="ds:SignedInfo")
    c14n = _parse_transform(_expect(parts[0], "CanonicalizationMethod", "ds:SignedInfo"),
                            profile.canonicalization, "ds:CanonicalizationMethod")
    method_el = _expect(parts[1], "SignatureMethod", "ds:SignedInfo")
    if _children(method_el):
        raise SignatureProfileError("unexpected parameters", subject="ds:SignatureMethod")
    method = _algorithm(method_el, profile.signature_methods, "ds:SignatureMethod")
    refs = tuple(_parse_reference(_expect(el, "Reference", "ds:SignedInfo"), profile)
                 for el in parts[2:]) if references else ()
    return SignedInfo(info, c14n, method, refs)


def _parse_reference(el: etree._Element, profile: Profile) -> Reference:
    uri = el.get("URI")
    where = f"Reference URI={uri!r}"
    parts = _children(el)
    transforms: tuple[Transform, ...] = ()
    if parts and parts[0].tag == _ds("Transforms"):
        transforms = tuple(
            _parse_transform(_expect(t, "Transform", where), profile.transforms,
                             f"{where} Transform")
            for t in _children(parts[0])
        )
        if not transforms:
            raise SignatureProfileError("empty ds:Transforms", subject=where)
        parts = parts[1:]
    if len(parts) != 2:
        raise SignatureProfileError("needs exactly DigestMethod and DigestValue", subject=where)
    method_el = _expect(parts[0], "DigestMethod", where)
    method = _algorithm(method_el, profile.digest_methods, f"{where} DigestMethod")
    value = b64decode(_expect(parts[1], "DigestValue", where).text, subject=f"{where} DigestValue")
    return Reference(uri, method, value, transforms, el.get("Id"), el.get("Type"), el)


def _canonical_signed_info(info: SignedInfo) -> bytes:
    return canonicalize(info.element, info.canonicalization.algorithm,
                        inclusive_prefixes=info.canonicalization.inclusive_prefixes or ())


def signature_value(signature: etree._Element) -> bytes:
    """The decoded `ds:SignatureValue` that follows SignedInfo."""
    kids = _children(signature)
    sv = _expect(kids[1] if len(kids) > 1 else None, "SignatureValue", "ds:Signature")
    return b64decode(sv.text, subject="ds:SignatureValue")


def verify_signature_value(signature: etree._Element, info: SignedInfo,
                           public_key: object) -> None:
    """Check SignatureValue over the canonical SignedInfo, or raise SignatureValueError."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise AlgorithmNotAllowedError("signer key is not RSA", subject="ds:SignatureMethod")
    value = signature_value(signature)
    hash_cls = _SIGNATURE_HASHES[info.signature_method]
    try:
        public_key.verify(value, _canonical_signed_info(info), padding.PKCS1v15(), hash_cls())
    except InvalidSignature:
        raise SignatureValueError("does not verify with the signer's public key",
                                  subject="ds:SignatureValue") from None


def certificates_from_key_info(signature: etree._Element) -> list[x509.Certificate]:
    """Every `ds:KeyInfo/ds:X509Data/ds:X509Certificate`, in document order."""
    certs: list[x509.Certificate] = []
    for key_info in signature.findall(_ds("KeyInfo")):
        for el in key_info.iterfind(f"{_ds('X509Data')}/{_ds('X509Certificate')}"):
            der = b64decode(el.text, subject="ds:X509Certificate")
            try:
                # Parsed in full (a corrupt certificate fails here, typed) and remembered:
                # the same few certificates sign every receipt and package.
                certs.append(load_der(der))
            except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
                raise SignatureProfileError(f"not a DER certificate: {exc}",
                                            subject="ds:X509Certificate") from None
    return certs


def find_by_id(root: etree._Element, value: str,
               attributes: Sequence[str] = ("Id",)) -> etree._Element:
    """The single element whose Id attribute is `value`.

    A repeated Id is refused rather than resolved: choosing one of two candidates is how
    signature-wrapping attacks get a signed element and a different processed one.
    """
    hits = [el for el in root.iter() if isinstance(el.tag, str)
            and any(el.get(a) == value for a in attributes)]
    if len(hits) != 1:
        problem = "no element has" if not hits else f"{len(hits)} elements have"
        raise SignatureProfileError(f"{problem} this Id", subject=f"#{value}")
    return hits[0]


#: What a resolver hands back for a reference: raw octets (a file, an attachment) or an
#: element whose subtree is the node-set (`#id`; for URI="" the document of that element).
Resolved = bytes | etree._Element
Resolver = Callable[[Reference], Resolved]


@dataclass(frozen=True)
class _NodeSet:
    element: etree._Element
    whole_document: bool
    comments: bool


def _index_path(el: etree._Element) -> list[int]:
    path: list[int] = []
    parent = el.getparent()
    while parent is not None:
        path.append(parent.index(el))
        el, parent = parent, parent.getparent()
    return path[::-1]


def _follow(root: etree._Element, path: Sequence[int]) -> etree._Element:
    for i in path:
        root = root[i]
    return root


def _without_signature(nodes: _NodeSet, signature: etree._Element) -> _NodeSet:
    """Enveloped-signature transform: the same node-set with this signature removed."""
    tree = nodes.element.getroottree()
    if signature.getroottree().getroot() is not tree.getroot():
        return nodes
    clone = copy.deepcopy(tree).getroot()
    element = _follow(clone, _index_path(nodes.element))
    target = _follow(clone, _index_path(signature))
    parent = target.getparent()
    if parent is not None:
        # lxml's remove() would take the tail text with it; the text belongs to the parent.
        if target.tail:
            prev = target.getprevious()
            if prev is not None:
                prev.tail = (prev.tail or "") + target.tail
            else:
                parent.text = (parent.text or "") + target.tail
        parent.remove(target)
    return _NodeSet(element, nodes.whole_document, nodes.comments)


def transformed_octets(reference: Reference, data: Resolved, *,
                       signature: etree._Element | None = None) -> bytes:
    """Apply the reference's transforms to the resolved data and return the octets to digest.

    Node-sets from same-document URIs exclude comments; a node-set left at the end is
    serialized with inclusive C14N 1.0, the XML-DSig default (DIGEST 3.11 step 3).
    """
    value: bytes | _NodeSet
    if isinstance(data, bytes):
        value = data
    else:
        value = _NodeSet(data, reference.uri == "", comments=False)
    for t in reference.transforms:
        if t.algorithm == ENVELOPED_SIGNATURE:
            if not isinstance(value, _NodeSet) or signature is None:
                raise SignatureProfileError("enveloped-signature needs an XML node-set",
                                            subject=reference.name)
            value = _without_signature(value, signature)
        elif t.algorithm in _C14N_MODES:
            if isinstance(value, bytes):
                value = _NodeSet(parse(value, what=reference.name), True, comments=True)
            node: etree._Element | etree._ElementTree = (
                value.element.getroottree() if value.whole_document else value.element)
            value = canonicalize(node, t.algorithm, comments=value.comments,
                                 inclusive_prefixes=t.inclusive_prefixes or ())
        elif t.algorithm == SWA_ATTACHMENT_CONTENT:
            # DIGEST 7.8: the digest covers the attachment octets after transfer decoding.
            if not isinstance(value, bytes):
                raise SignatureProfileError("attachment transform needs octets",
                                            subject=reference.name)
        else:
            raise AlgorithmNotAllowedError(f"unsupported transform {t.algorithm}",
                                           subject=reference.name)
    if isinstance(value, _NodeSet):
        node = value.element.getroottree() if value.whole_document else value.element
        value = canonicalize(node, C14N10, comments=False)
    return value


def reference_digest(reference: Reference, data: Resolved, *,
                     signature: etree._Element | None = None) -> bytes:
    """Digest of the resolved data after the reference's transforms."""
    return digest(transformed_octets(reference, data, signature=signature),
                  reference.digest_method)


def verify_reference(reference: Reference, data: Resolved, *,
                     signature: etree._Element | None = None,
                     subject: str | None = None) -> None:
    """Recompute one reference's digest, or raise DigestMismatchError naming it."""
    if reference_digest(reference, data, signature=signature) != reference.digest_value:
        raise DigestMismatchError("digest does not match the signed DigestValue",
                                  subject=subject or reference.name)


def verify(signature: etree._Element, *, profile: Profile, public_key: object,
           resolve: Resolver) -> SignedInfo:
    """Core validation: allow-listed algorithms, SignatureValue, then every reference.

    The SignatureValue is checked first so that a forged SignedInfo is reported as such
    rather than as a digest mismatch in whatever reference it altered.
    """
    info = parse_signed_info(signature, profile)
    verify_signature_value(signature, info, public_key)
    for ref in info.references:
        verify_reference(ref, resolve(ref), signature=signature)
    return info
