"""A fast XML writer for the generated bindings, with xsdata's serializer as the reference.

xsdata's `XmlSerializer` is generic: every object becomes a stream of SAX events, every
event goes through an lxml content handler, and the tree is serialized at the end. For our
small documents (an SBD, an eb:Messaging header, a manifest) that costs about half a
millisecond each, one of the biggest costs on the send path.

This writer reads the same metadata xsdata uses (`XmlContext` -> `XmlMeta` -> `XmlVar`),
turns it once per class into a `_Plan`, and writes text directly. It reproduces xsdata's
output (elements, order, attributes, text, escaping as lxml does it, the prefixes xsdata
would generate for namespaces outside the caller's map) with one intended difference: the
root declares only the prefixes of `ns_map` that the document uses, which is what callers
got by running `etree.cleanup_namespaces` over xsdata's output.

Whatever it cannot promise to write exactly as xsdata would raises `Unsupported`, decided
before any output is returned; the caller then uses xsdata for the whole call (see
`sdp.bindings.to_xml`). Every generated class compiles to a supported plan; what goes to
xsdata is decided by the values: a default namespace or an odd entry in `ns_map`, QName
values (or xsi:type) in a namespace outside `ns_map`, attribute values starting with `{`
(xsdata may rewrite them as QNames), two runs of text without an element between them
(xsdata moves the second), an `AnyElement` without a name, a `DerivedElement` or
xs:anyType field with a simple non-string value (xsi:type from the XML Schema namespace),
an instance of a subclass in a typed field, classes the context does not know, and text
with characters XML cannot carry (xsdata and lxml raise the error callers already handle).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final
from xml.etree.ElementTree import QName

from lxml import etree
from xsdata.formats.converter import converter
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.models.elements import XmlMeta, XmlVar
from xsdata.formats.dataclass.models.generics import AnyElement, DerivedElement
from xsdata.models.datatype import XmlDateTime
from xsdata.models.enums import Namespace
from xsdata.utils.collections import is_array
from xsdata.utils.namespaces import clean_prefixes, split_qname

__all__ = ["BindingWriter", "Unsupported"]

XML_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'

_XML_NS: Final = Namespace.XML.uri
_XSI_NS: Final = Namespace.XSI.uri

#: What lxml refuses in any string (control characters other than tab/LF/CR, U+FFFE,
#: U+FFFF) or cannot encode (lone surrogates).
_INVALID_XML_CHAR: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_SPECIAL: Final = re.compile("[&<>\r]")
_ATTR_SPECIAL: Final = re.compile('[&<>"\t\n\r]')
#: Prefixes and namespace URIs we declare ourselves: conservative on purpose, so anything
#: unusual goes to xsdata, which raises or writes it as it always has.
_NCNAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@!$()*+,;=%']*\Z")

# Kinds of content a class field holds (xsdata: text, element, wildcard).
_TEXT: Final = 0
_ELEMENT: Final = 1
_WILDCARD: Final = 2

_DYNAMIC_NAME_CACHE_SIZE: Final = 4096
#: Value types an element field writes as plain text without further checks.
_SIMPLE: Final = frozenset({str, int, bool, XmlDateTime, bytes})


class Unsupported(Exception):
    """This call needs something the fast path does not reproduce; use xsdata instead."""


def _escape_text(value: str) -> str:
    # As lxml writes text content: &, <, > and CR escaped, everything else as is.
    if _TEXT_SPECIAL.search(value) is None:
        return value
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _escape_attr(value: str) -> str:
    # As lxml writes attribute values: also the quote, and TAB/LF/CR as character
    # references (a parser would otherwise normalize them to spaces).
    if _ATTR_SPECIAL.search(value) is None:
        return value
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;")
            .replace("\r", "&#13;"))


def _checked_name(qname: str) -> tuple[str | None, str] | None:
    """`{uri}local` or `local` split, or None if it is not a name we write ourselves."""
    if qname.startswith("{"):
        end = qname.find("}")
        uri, local = qname[1:end], qname[end + 1:]
        if end < 0 or not _URI.match(uri) or uri == "http://www.w3.org/2000/xmlns/":
            return None
    else:
        uri, local = None, qname
    if local == "xmlns" or _INVALID_XML_CHAR.search(local):
        return None
    try:
        etree.QName(uri, local)  # lxml's own check of element and attribute names
    except ValueError:
        return None
    return uri, local


class _Var:
    """One field of a class, as the writer needs it."""

    __slots__ = ("_choice_cache", "any_type", "choices", "clazz", "fmt", "is_list", "kind",
                 "local", "mixed", "name", "qname", "types", "uri")

    def __init__(self, var: XmlVar, reasons: list[str]) -> None:
        self.name: str = var.name
        self.qname: str = var.qname
        self.fmt: str | None = var.format
        self.types: tuple[type, ...] = tuple(var.types)
        self.clazz: type | None = var.clazz
        self.is_list: bool = bool(var.list_element)
        self.mixed: bool = bool(var.mixed)
        self.any_type: bool = bool(var.any_type)
        self.uri: str | None = None
        self.local: str = ""
        self.choices: tuple[_Var, ...] = ()
        self._choice_cache: dict[type, _Var | None] = {}
        where = f"field {var.name}"
        if var.is_text:
            self.kind = _TEXT
        elif var.is_element:
            self.kind = _ELEMENT
            name = _checked_name(var.qname)
            if name is None:
                reasons.append(f"{where}: element name {var.qname!r}")
            else:
                self.uri, self.local = name
        elif var.is_wildcard:
            self.kind = _WILDCARD
            self.choices = tuple(_Var(choice, reasons) for choice in var.elements.values())
        else:
            self.kind = -1
            reasons.append(f"{where}: compound (xs:choice) field")
        if var.nillable:
            reasons.append(f"{where}: nillable (xsi:nil)")
        if var.wrapper_qname:
            reasons.append(f"{where}: wrapper element")
        if var.tokens and not var.is_text and not var.mixed:
            reasons.append(f"{where}: list of tokens as element")
        if var.mixed and not var.is_wildcard:
            reasons.append(f"{where}: mixed content outside a wildcard")

    def choice_for(self, cls: type) -> _Var | None:
        """The wildcard's typed choice for a class, as xsdata's `find_clazz_choice`."""
        try:
            return self._choice_cache[cls]
        except KeyError:
            pass
        found = self._find_choice(cls)
        self._choice_cache[cls] = found
        return found

    def _find_choice(self, cls: type) -> _Var | None:
        derived = None
        for choice in self.choices:
            if choice.clazz is None:
                continue
            if cls in choice.types:
                return choice
            if derived is None and any(issubclass(cls, t) for t in choice.types):
                derived = choice
        return derived


class _Plan:
    """A class compiled once: its element name, attributes and content, in xsdata's order."""

    __slots__ = ("attrs", "content", "local", "qname", "target_qname", "unsupported", "uri")

    def __init__(self, meta: XmlMeta | None, unsupported: str | None = None) -> None:
        self.unsupported = unsupported
        self.qname: str = ""
        self.target_qname: str | None = None
        self.uri: str | None = None
        self.local: str = ""
        self.attrs: tuple[tuple[str, str | None, str, str | None, bool], ...] = ()
        self.content: tuple[_Var | tuple[_Var, ...], ...] = ()
        if meta is None:
            return
        reasons: list[str] = []
        self.qname = meta.qname
        self.target_qname = meta.target_qname
        name = _checked_name(meta.qname)
        if name is None:
            reasons.append(f"element name {meta.qname!r}")
        else:
            self.uri, self.local = name
        if meta.nillable:
            reasons.append("nillable class (xsi:nil)")

        attrs: list[tuple[str, str | None, str, str | None, bool]] = []
        for var in meta.get_attribute_vars():
            if var.is_attributes:
                attrs.append((var.name, None, "", None, True))
                continue
            name = _checked_name(var.qname)
            if name is None:
                reasons.append(f"attribute name {var.qname!r}")
                continue
            attrs.append((var.name, name[0], name[1], var.format, False))
        self.attrs = tuple(attrs)

        # xsdata's `next_value`: fields in order; a run of fields sharing a sequence number
        # (up to its last member) is written interleaved, item by item.
        content: list[_Var | tuple[_Var, ...]] = []
        evars = meta.get_element_vars()
        index = 0
        while index < len(evars):
            var = evars[index]
            if var.sequence is None:
                content.append(_Var(var, reasons))
                index += 1
                continue
            end = max(i for i in range(index, len(evars)) if evars[i].sequence == var.sequence)
            content.append(tuple(_Var(v, reasons) for v in evars[index:end + 1]))
            index = end + 1
        self.content = tuple(content)
        if reasons:
            self.unsupported = f"{meta.clazz.__qualname__}: " + "; ".join(reasons)


class _NsMap:
    """The caller's prefixes, normalized as xsdata does; one per distinct `ns_map`."""

    __slots__ = ("order", "scope")

    def __init__(self, ns_map: Mapping[Any, Any]) -> None:
        cleaned = clean_prefixes(dict(ns_map))
        if None in cleaned:
            raise Unsupported("a default namespace in ns_map")
        uris = list(cleaned.values())
        if len(set(uris)) != len(uris):
            raise Unsupported("one namespace under two prefixes in ns_map")
        for prefix, uri in cleaned.items():
            if (not isinstance(prefix, str) or not isinstance(uri, str)
                    or not _NCNAME.match(prefix) or prefix.lower().startswith("xml")
                    or not _URI.match(uri) or uri == _XML_NS):
                raise Unsupported(f"ns_map entry {prefix!r}: {uri!r}")
        #: uri -> prefix; also the root scope for lookups while writing.
        self.scope: dict[str, str] = {uri: prefix for prefix, uri in cleaned.items()}
        self.order: tuple[tuple[str, str], ...] = tuple(cleaned.items())


class _Document:
    """The state of one serialization: output parts and the namespaces used so far."""

    __slots__ = ("cached_plan", "is_model", "out", "plan", "root_scope", "used")

    def __init__(self, writer: BindingWriter, root_scope: dict[str, str]) -> None:
        self.out: list[str] = []
        self.used: set[str] = set()
        self.plan = writer.plan
        self.is_model = writer.plan.is_model
        self.cached_plan = writer.plan.cached
        self.root_scope = root_scope

    # --- names and values ---------------------------------------------------------------

    def _generate(self, uri: str, scope: dict[str, str], decls: list[tuple[str, str]]) -> str:
        # xsdata's `generate_prefix`: a well-known prefix, else ns<N> with N the number of
        # prefixes in scope; declared on the element that first needs it.
        known = Namespace.get_enum(uri)
        prefix = known.prefix if known else f"ns{len(scope)}"
        if prefix in scope.values():
            raise Unsupported(f"generated prefix {prefix} is already taken")
        scope[uri] = prefix
        if uri != _XML_NS:
            decls.append((prefix, uri))
        return prefix

    def _qname_value(self, text: str) -> str:
        # Only prefixes of the caller's map: they mean the same everywhere in the document.
        # xsdata would generate a prefix for any other namespace at the moment it reads the
        # value, which interleaves with the element's other declarations.
        namespace, local = split_qname(text)
        if not namespace:
            return str(local)
        prefix = self.root_scope.get(namespace)
        if prefix is None:
            raise Unsupported("QName value in a namespace outside ns_map")
        self.used.add(namespace)
        return f"{prefix}:{local}"

    def encode(self, value: Any, fmt: str | None) -> str:
        """A simple value as text, as xsdata's `encode_primitive` + writer `encode_data`."""
        kind = type(value)
        if kind is str:
            return value  # type: ignore[no-any-return]
        if kind is bool:
            return "true" if value else "false"
        if kind is int or kind is XmlDateTime:
            return str(value)
        if kind is bytes and fmt == "base64":
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, QName):
            return self._qname_value(value.text)
        if is_array(value):
            return " ".join(self.encode(item, fmt) for item in value)
        if isinstance(value, Enum):
            return self.encode(value.value, fmt)
        if value is None:
            raise Unsupported("None inside a list value")
        text = converter.serialize(value, format=fmt)
        if type(text) is not str:
            raise Unsupported(f"{type(value).__name__} does not serialize to text")
        return text

    # --- elements -----------------------------------------------------------------------

    def start(self, uri: str | None, local: str,
              attrs: list[tuple[str | None, str, str]], scope: dict[str, str],
              root: bool = False) -> tuple[str, dict[str, str]]:
        """Write `<tag attrs>`; returns the tag and the scope for the element's content."""
        used = self.used
        if uri:
            prefix = scope.get(uri)
            if prefix is None:
                return self._start_declaring(uri, local, attrs, scope, root)
            used.add(uri)
            tag = prefix + ":" + local
        else:
            tag = local
        rest = ""
        for auri, alocal, value in attrs:
            if auri:
                prefix = scope.get(auri)
                if prefix is None:
                    return self._start_declaring(uri, local, attrs, scope, root)
                used.add(auri)
                rest += f' {prefix}:{alocal}="{_escape_attr(value)}"'
            else:
                rest += f' {alocal}="{_escape_attr(value)}"'
        if root:
            self._emit(tag, rest + ">", root)
        else:
            self.out.append(f"<{tag}{rest}>")
        return tag, scope

    def _start_declaring(self, uri: str | None, local: str,
                         attrs: list[tuple[str | None, str, str]], scope: dict[str, str],
                         root: bool) -> tuple[str, dict[str, str]]:
        # `start` for an element that needs a prefix its scope lacks. xsdata generates them in
        # this order (the element's namespace, then attributes' in order) and declares them
        # on this element, for its content to inherit.
        scope = dict(scope)
        decls: list[tuple[str, str]] = []
        used = self.used
        if uri:
            prefix = scope.get(uri)
            if prefix is None:
                prefix = self._generate(uri, scope, decls)
            else:
                used.add(uri)
            tag = f"{prefix}:{local}"
        else:
            tag = local
        rendered = []
        for auri, alocal, value in attrs:
            if auri:
                prefix = scope.get(auri)
                if prefix is None:
                    prefix = self._generate(auri, scope, decls)
                else:
                    used.add(auri)
                rendered.append(f' {prefix}:{alocal}="{_escape_attr(value)}"')
            else:
                rendered.append(f' {alocal}="{_escape_attr(value)}"')
        rest = "".join(f' xmlns:{p}="{u}"' for p, u in decls) + "".join(rendered) + ">"
        self._emit(tag, rest, root)
        return tag, scope

    def _emit(self, tag: str, rest: str, root: bool) -> None:
        if root:
            # The caller's prefixes are declared in between, once we know which are used.
            self.out.extend(("<" + tag, "", rest))
        else:
            self.out.append("<" + tag + rest)

    def write_object(self, obj: Any, plan: _Plan, uri: str | None, local: str,
                     scope: dict[str, str], xsi_type: str | None, root: bool = False) -> None:
        """A bound object as an element (xsdata's `convert_dataclass`)."""
        if plan.unsupported is not None:
            raise Unsupported(plan.unsupported)
        attrs: list[tuple[str | None, str, str]] = []
        dynamic = False
        for name, auri, alocal, fmt, is_map in plan.attrs:
            value = getattr(obj, name)
            if is_map:
                if value:
                    dynamic = True
                    self._dynamic_attrs(value, attrs)
                continue
            if value is None:
                continue
            if type(value) is str:
                text: str = value
            else:
                if is_array(value) and not value:
                    continue
                text = self.encode(value, fmt)
            if text[:1] == "{":
                raise Unsupported("attribute value starting with '{' (xsdata may read a QName)")
            attrs.append((auri, alocal, text))
        if xsi_type is not None:
            attrs.append((_XSI_NS, "type", self._qname_value(xsi_type)))
        if dynamic and len({(a[0], a[1]) for a in attrs}) != len(attrs):
            raise Unsupported("an attribute given twice")

        tag, scope = self.start(uri, local, attrs, scope, root)
        out = self.out
        mark = len(out)
        in_tail = False
        for item in plan.content:
            if type(item) is tuple:
                in_tail = self._write_sequence(obj, item, scope, in_tail)
                continue
            var: _Var = item  # type: ignore[assignment]
            value = getattr(obj, var.name)
            if value is None:
                continue
            kind = var.kind
            if kind == _ELEMENT:
                if var.is_list and type(value) is list:
                    for each in value:
                        in_tail = self.element(each, var, scope, in_tail)
                else:
                    in_tail = self.element(value, var, scope, in_tail)
            elif kind == _TEXT:
                in_tail = self.data(self.encode(value, var.fmt), in_tail)
            else:
                in_tail = self.write_value(value, var, scope, in_tail)
        if len(out) == mark:
            out[-1] = out[-1][:-1] + "/>"
        else:
            out.append("</" + tag + ">")

    def element(self, value: Any, var: _Var, scope: dict[str, str], in_tail: bool) -> bool:
        """One value of an element field: the common cases directly, the rest as xsdata."""
        cls = type(value)
        plan = self.cached_plan(cls)
        if plan is not None:
            if cls in var.types:
                self.write_object(value, plan, var.uri, var.local, scope, None)
                return False
        elif cls in _SIMPLE and (cls is str or not var.any_type):
            uri = var.uri
            if uri:
                prefix = scope.get(uri)
                if prefix is not None:
                    self.used.add(uri)
                    tag = prefix + ":" + var.local
                    text = value if cls is str else self.encode(value, var.fmt)
                    if text:
                        self.out.append(f"<{tag}>{_escape_text(text)}</{tag}>")
                    else:
                        self.out.append(f"<{tag}/>")
                    return False
        return self.write_value(value, var, scope, in_tail)

    def _dynamic_attrs(self, values: Any, attrs: list[tuple[str | None, str, str]]) -> None:
        for key, value in values.items():
            name = self.plan.dynamic_name(key)
            if type(value) is not str or value[:1] == "{":
                raise Unsupported("attribute value that is not plain text")
            attrs.append((name[0], name[1], value))

    def _write_sequence(self, obj: Any, group: tuple[_Var, ...], scope: dict[str, str],
                        in_tail: bool) -> bool:
        # xsdata's `next_value` for a sequence: item j of every field, then item j+1, ...
        j = 0
        rolling = True
        while rolling:
            rolling = False
            for var in group:
                values = getattr(obj, var.name)
                if is_array(values):
                    if j < len(values):
                        rolling = True
                        value = values[j]
                        if value is not None:
                            in_tail = self.write_value(value, var, scope, in_tail)
                elif j == 0:
                    rolling = True
                    if values is not None:
                        in_tail = self.write_value(values, var, scope, in_tail)
            j += 1
        return in_tail

    def data(self, text: str | None, in_tail: bool) -> bool:
        """Character data inside the current element (xsdata's `set_data`)."""
        if text:
            if in_tail:
                # xsdata would hold this text back and write it after the next end tag.
                raise Unsupported("two runs of text without an element between them")
            self.out.append(_escape_text(text))
        return True

    def write_value(self, value: Any, var: _Var, scope: dict[str, str], in_tail: bool) -> bool:
        """One field's value (xsdata's `convert_value`); returns the text state after it."""
        if var.mixed:
            if type(value) is not list:
                raise Unsupported("mixed content that is not a list")
            for item in value:
                in_tail = self.write_any(item, var, scope, in_tail)
            return in_tail
        if var.kind == _TEXT:
            return self.data(self.encode(value, var.fmt), in_tail)
        if var.is_list and (type(value) is list or is_array(value)):
            for item in value:
                in_tail = self.write_value(item, var, scope, in_tail)
            return in_tail
        return self.write_any(value, var, scope, in_tail)

    def write_any(self, value: Any, var: _Var, scope: dict[str, str], in_tail: bool) -> bool:
        """A value of any kind in a field (xsdata's `convert_any_type`)."""
        cls = type(value)
        plan = self.cached_plan(cls)
        if plan is None:
            if isinstance(value, AnyElement):
                return self._any_element(value, var, scope)
            if isinstance(value, DerivedElement):
                self._derived_element(value, scope)
                return False
            if self.is_model(value):
                if isinstance(value, type):
                    raise Unsupported("a class where an instance belongs")
                plan = self.plan(cls)
        if plan is not None:
            if var.kind == _WILDCARD:
                choice = var.choice_for(cls) if var.choices else None
                if choice is not None:
                    return self.write_value(value, choice, scope, in_tail)
                self.write_object(value, plan, plan.uri, plan.local, scope, None)
            elif var.kind == _ELEMENT:
                xsi_type = None
                if cls not in var.types:
                    if var.clazz is not None:
                        raise Unsupported(f"{cls.__name__} in a field of another type")
                    if plan.target_qname != var.qname:
                        xsi_type = plan.target_qname
                self.write_object(value, plan, var.uri, var.local, scope, xsi_type)
            else:
                raise Unsupported("a bound object in a text field")
            return False
        if var.kind == _ELEMENT:
            self._simple_element(value, var, scope)
            return False
        return self.data(None if value is None else self.encode(value, var.fmt), in_tail)

    def _simple_element(self, value: Any, var: _Var, scope: dict[str, str]) -> None:
        # xsdata's `convert_element`: no attributes unless an xsi:type is due.
        if var.any_type and value is not None and value != "" and type(value) is not str:
            raise Unsupported("xs:anyType element with a typed value (xsi:type)")
        tag, scope = self.start(var.uri, var.local, [], scope)
        out = self.out
        text = None if value is None else self.encode(value, var.fmt)
        if text:
            out.append(f"{_escape_text(text)}</{tag}>")
        else:
            out[-1] = out[-1][:-1] + "/>"

    def _any_element(self, value: AnyElement, var: _Var, scope: dict[str, str]) -> bool:
        # xsdata's `convert_any_element`.
        if not value.qname:
            raise Unsupported("AnyElement without a name")
        uri, local = self.plan.dynamic_name(value.qname)
        attrs: list[tuple[str | None, str, str]] = []
        self._dynamic_attrs(value.attributes, attrs)
        tag, scope = self.start(uri, local, attrs, scope)
        mark = len(self.out)
        if value.text is not None and type(value.text) is not str:
            raise Unsupported("AnyElement text that is not a string")
        in_tail = self.data(value.text, False)
        for child in value.children:
            in_tail = self.write_any(child, var, scope, in_tail)
        if len(self.out) == mark:
            self.out[-1] = self.out[-1][:-1] + "/>"
        else:
            self.out.append(f"</{tag}>")
        if value.tail:
            if type(value.tail) is not str:
                raise Unsupported("AnyElement tail that is not a string")
            return self.data(value.tail, False)
        return False

    def _derived_element(self, value: DerivedElement[Any], scope: dict[str, str],
                         root: bool = False) -> None:
        # xsdata's `convert_derived_element` for a bound value; a simple value would need an
        # xsi:type from the XML Schema namespace.
        inner = value.value
        if isinstance(inner, type) or not self.is_model(inner):
            raise Unsupported("DerivedElement with a simple value")
        plan = self.plan(type(inner))
        if not isinstance(value.qname, str):
            raise Unsupported("DerivedElement without a name")
        qname = value.qname or plan.qname
        uri, local = self.plan.dynamic_name(qname)
        xsi_type = plan.target_qname if plan.target_qname != value.qname else None
        self.write_object(inner, plan, uri, local, scope, xsi_type, root)


class _Plans:
    """Compiled plans per class for one `XmlContext`; built once, under a lock."""

    def __init__(self, context: XmlContext) -> None:
        self._context = context
        self.is_model: Callable[[Any], bool] = context.class_type.is_model
        self._plans: dict[type, _Plan] = {}
        #: The plan of a class if already compiled (a plain dict lookup, for the hot path).
        self.cached: Callable[[type], _Plan | None] = self._plans.get
        self._names: dict[str, tuple[str | None, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, cls: type) -> _Plan:
        plan = self._plans.get(cls)
        if plan is not None:
            return plan
        if issubclass(cls, (AnyElement, DerivedElement)):
            raise Unsupported(f"{cls.__name__} as a bound class")
        with self._lock:
            plan = self._plans.get(cls)
            if plan is None:
                plan = self._compile(cls)
                self._plans[cls] = plan
        return plan

    def _compile(self, cls: type) -> _Plan:
        # Only classes the context has already built: building one here would change the
        # shared context, which xsdata does without locking.
        meta = self._context.cache.get(cls)
        if meta is None:
            return _Plan(None, f"{cls.__qualname__} is not a generated binding")
        return _Plan(meta)

    def dynamic_name(self, qname: Any) -> tuple[str | None, str]:
        """A name from data (AnyElement, DerivedElement, other_attributes keys), checked."""
        name = self._names.get(qname) if type(qname) is str else None
        if name is None:
            checked = _checked_name(qname) if type(qname) is str else None
            if checked is None:
                raise Unsupported(f"name {qname!r}")
            if len(self._names) >= _DYNAMIC_NAME_CACHE_SIZE:
                self._names.clear()
            self._names[qname] = name = checked
        return name


class BindingWriter:
    """Serializes generated binding objects; raises `Unsupported` to defer to xsdata."""

    def __init__(self, context: XmlContext) -> None:
        self.plan = _Plans(context)
        self._ns_maps: dict[tuple[tuple[Any, Any], ...], _NsMap | str] = {}

    def _ns(self, ns_map: Mapping[Any, Any]) -> _NsMap:
        key = tuple(ns_map.items())
        found = self._ns_maps.get(key)
        if found is None:
            try:
                found = _NsMap(ns_map)
            except Unsupported as exc:
                found = str(exc)
            if len(self._ns_maps) >= 64:
                self._ns_maps.clear()
            self._ns_maps[key] = found
        if isinstance(found, str):
            raise Unsupported(found)
        return found

    def serialize(self, obj: object, ns_map: Mapping[Any, Any], *,
                  xml_declaration: bool = True) -> bytes:
        """UTF-8 bytes of `obj`, meaning the same as xsdata's output for it.

        The root declares the prefixes of `ns_map` that are used; a namespace outside it
        gets the prefix xsdata would generate, declared where xsdata would declare it.
        """
        namespaces = self._ns(ns_map)
        scope = namespaces.scope
        doc = _Document(self, scope)
        if isinstance(obj, DerivedElement):
            doc._derived_element(obj, scope, root=True)
        else:
            if isinstance(obj, type) or not self.plan.is_model(obj):
                raise Unsupported("not a bound object")
            plan = self.plan(type(obj))
            doc.write_object(obj, plan, plan.uri, plan.local, scope, None, root=True)
        used = doc.used
        doc.out[1] = "".join(f' xmlns:{prefix}="{uri}"' for prefix, uri in namespaces.order
                             if uri in used)
        text = "".join(doc.out)
        if _INVALID_XML_CHAR.search(text) is not None:
            raise Unsupported("a character XML cannot carry (xsdata raises the error)")
        if xml_declaration:
            text = XML_DECLARATION + text
        return text.encode("utf-8")
