"""A fast reader from an lxml tree to the xsdata-generated dataclasses.

xsdata's own parser is generic: an event stream, a node object per element, a converter
lookup per value. That costs about half a millisecond for a small eb:Messaging, and every
response we receive (and every message the broker simulator gets) is bound. This reader
compiles xsdata's metadata (`XmlMeta`/`XmlVar`) once per class into a plan and then binds
with a tight loop over each element's attributes and children, reading the tree in place.

It is not a second interpretation of the schema: xsdata stays the reference. The plan
reproduces what xsdata's `XmlParser` does with the project's configuration (unknown
elements are errors, unknown attributes are silently dropped, converter warnings are
errors), including its quirks; whatever is not reproduced exactly raises `Unsupported`, and
the caller then binds the whole document with xsdata instead. `Rejected` means xsdata would
refuse the document too. Left to xsdata: xsi:type and xsi:nil anywhere they steer xsdata
(they select subclasses, DerivedElement wrappers, nil objects); a second element or stray
text for a single-valued wildcard (xsdata nests them in a generic element); elements of
type xs:anyType; and class shapes the generated bindings do not have (compound fields,
wrappers, class unions, fixed element values, mixed content beside other fields).
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from enum import Enum, EnumMeta
from typing import Any, Final

from lxml import etree
from xsdata.exceptions import ParserError
from xsdata.formats.converter import (
    BoolConverter,
    BytesConverter,
    DecimalConverter,
    EnumConverter,
    FloatConverter,
    IntConverter,
    ProxyConverter,
    StringConverter,
    converter,
)
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.models.elements import XmlMeta, XmlVar
from xsdata.formats.dataclass.parsers.config import ParserConfig, default_class_factory
from xsdata.formats.dataclass.parsers.utils import ParserUtils
from xsdata.models.datatype import XmlDate, XmlDateTime, XmlDuration, XmlPeriod, XmlTime
from xsdata.models.enums import QNames
from xsdata.utils.dates import validate_date, validate_time

__all__ = ["BindingReader", "Rejected", "Unsupported"]

XSI_TYPE: Final = QNames.XSI_TYPE
XSI_NIL: Final = QNames.XSI_NIL
_ANY_NS: Final = "##any"
#: Most remembered look-ups per class (namespaces of unknown children) and per reader
#: (wildcard qnames): hostile input names as many as it likes, memory must stay bounded.
_CACHE_LIMIT: Final = 256


class Unsupported(Exception):
    """The document uses something this reader does not reproduce exactly: bind with xsdata."""


class Rejected(Exception):
    """xsdata would refuse this document; the message is the one xsdata gives, where known."""


Converter = Callable[[str, etree._Element], Any]

# Slot kinds: what a child element becomes.
_COMPLEX: Final = 0  # a dataclass, bound recursively
_PRIMITIVE: Final = 1  # a simple value converted from the element's text
_WILDCARD: Final = 2  # xs:any: a registered class by qname, else a generic AnyElement
_UNSUPPORTED: Final = 3  # a field kind left to xsdata (xs:anyType element, class union)


def _never_converted(value: str, element: etree._Element) -> Any:
    raise Unsupported("not a simple field")


def _never_empty() -> Any:
    raise Unsupported("not a simple field")


class _Slot:
    """One field a child element can go to, as `XmlMeta.find_children` yields it."""

    __slots__ = ("clazz", "convert", "empty", "is_list", "kind", "name", "nillable", "plan",
                 "unique", "why")

    def __init__(self, kind: int, name: str, *, is_list: bool, unique: bool,
                 clazz: type[Any] = object, convert: Converter = _never_converted,
                 empty: Callable[[], Any] = _never_empty, nillable: bool = False,
                 why: str = "") -> None:
        self.kind = kind
        self.name = name
        self.is_list = is_list
        #: A single-valued element: xsdata takes a second occurrence as the next candidate
        #: (or an unknown property), never as a replacement.
        self.unique = unique
        self.clazz = clazz
        self.convert = convert
        self.empty = empty
        self.nillable = nillable
        self.why = why
        self.plan: _Plan | None = None  # the class's plan, once compiled


class _Attribute:
    __slots__ = ("convert", "init", "name", "var")

    def __init__(self, name: str, convert: Converter, init: bool, var: XmlVar) -> None:
        self.name = name
        self.convert = convert
        self.init = init
        self.var = var


class _Plan:
    """Everything needed to bind one class, computed once from its `XmlMeta`."""

    __slots__ = ("any_attributes", "attributes", "clazz", "has_wildcards", "known", "meta",
                 "mixed", "namespace", "text", "unknown", "unsupported", "wild")

    def __init__(self, clazz: type[Any], meta: XmlMeta) -> None:
        self.clazz = clazz
        self.meta = meta
        self.namespace: str | None = meta.namespace
        self.unsupported = ""
        self.attributes: dict[str, _Attribute] = {}
        self.any_attributes: tuple[XmlVar, ...] = tuple(meta.any_attributes)
        self.known: dict[str, tuple[_Slot, ...]] = {}
        #: Candidates for children whose qname no field names, by namespace (bounded).
        self.unknown: dict[str | None, tuple[_Slot, ...]] = {}
        self.text: tuple[str, Converter] | None = None
        self.wild: _Slot | None = None  # the first wildcard: it takes stray text
        self.has_wildcards = bool(meta.wildcards)
        self.mixed = False


def _namespace_of(qname: str) -> str | None:
    if qname[:1] == "{":
        end = qname.find("}")
        if end > 1:
            return qname[1:end]
    return None


def _matches(var: XmlVar, qname: str) -> bool:
    """Whether a wildcard's namespace constraint admits `qname` (as `XmlVar.match_namespace`,
    without adding to the var's unbounded cache)."""
    uri = _namespace_of(qname)
    if not var.namespaces and uri is None:
        return True
    for check in var.namespaces:
        if (not check and uri is None) or check == uri or check == _ANY_NS:
            return True
        if check and check[0] == "!" and check[1:] != uri:
            return True
    return False


def _candidates(meta: XmlMeta, qname: str) -> list[XmlVar]:
    """The vars a child named `qname` may bind to, in xsdata's order (`find_children`)."""
    found = list(meta.elements.get(qname, ()))
    for wildcard in meta.wildcards:
        if _matches(wildcard, qname):
            if wildcard.elements:
                choice = wildcard.elements.get(qname)
                if choice is None:
                    choice = next((w for w in wildcard.wildcards if _matches(w, qname)), None)
                found.append(choice or wildcard)
            else:
                found.append(wildcard)
            break
    return found


def _normalized(value: str | None) -> str | None:
    """xsdata's `normalize_content`: whitespace-only text is no text."""
    if value and value.strip():
        return value
    return None


# --- value conversion ------------------------------------------------------------------------


def _to_bool(value: str) -> bool:
    stripped = value.strip()
    if stripped in ("true", "1"):
        return True
    if stripped in ("false", "0"):
        return False
    raise ValueError(value)


def _base64(value: str) -> bytes:
    # xsdata removes r"\s+" first; str.split() splits on exactly the same characters
    # (both use Py_UNICODE_ISSPACE) and is several times faster on a certificate.
    return base64.b64decode("".join(value.split()), validate=True)


def _base16(value: str) -> bytes:
    return binascii.unhexlify("".join(value.split()))


def _to_str(value: str) -> str:
    return value


def _text_as_is(value: str, element: etree._Element) -> str:
    return value


def _enum_lookup(enum: Any) -> dict[str, Enum] | None:
    """Members by value, when xsdata's `EnumConverter` reduces to that lookup: string values
    that are already whitespace-normalized (it compares the stripped input and its
    space-joined tokens with each value)."""
    table: dict[str, Enum] = {}
    for member in enum:
        value = member.value
        if not isinstance(value, str) or value != " ".join(value.split()):
            return None
        table.setdefault(value, member)
    return table


#: The plain ASCII forms of xs:dateTime / xs:date. xsdata's own parser is a general
#: format interpreter (about 10 us a value); anything this does not match goes to it.
_DATE = r"(-?)([0-9]{4,})-([0-9]{2})-([0-9]{2})"
_ZONE = r"(Z|[+-][0-9]{2}:[0-9]{2})?"
_DATE_TIME_RE = re.compile(_DATE + r"T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{0,9}))?" + _ZONE)
_DATE_RE = re.compile(_DATE + _ZONE)


def _year(sign: str, digits: str) -> int:
    """A year as `DateTimeParser.parse_year` reads it, including its leading-zero rule."""
    year = int(digits)
    zeros = len(digits) - len(digits.lstrip("0"))
    if zeros > 4 or (zeros and year > 10 ** (4 - zeros) - 1):
        raise ValueError(digits)
    return -year if sign else year


def _offset(zone: str | None) -> int | None:
    if not zone:
        return None
    if zone == "Z":
        return 0
    minutes = int(zone[1:3]) * 60 + int(zone[4:6])  # xsdata checks no range here
    return -minutes if zone[0] == "-" else minutes


def _date_time(value: str) -> XmlDateTime:
    match = _DATE_TIME_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(value)
    sign, year, month, day, hour, minute, second, fraction, zone = match.groups()
    args = (_year(sign, year), int(month), int(day), int(hour), int(minute), int(second),
            int(fraction.ljust(9, "0")) if fraction is not None else 0, _offset(zone))
    validate_date(args[0], args[1], args[2])
    validate_time(args[3], args[4], args[5], args[6])
    return XmlDateTime(*args)


def _date(value: str) -> XmlDate:
    match = _DATE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(value)
    sign, year, month, day, zone = match.groups()
    args = (_year(sign, year), int(month), int(day), _offset(zone))
    validate_date(args[0], args[1], args[2])
    return XmlDate(*args)


def _fast_type(tp: type[Any], fmt: str | None) -> Callable[[str], Any] | None:
    """A converter that gives what xsdata's does for `tp`, raising where xsdata's fails
    (in its exact way or not: a failure is always re-run through xsdata). None: no shortcut."""
    try:
        used = converter.type_converter(tp)
    except Exception:
        return None
    kind = type(used)
    if kind is StringConverter:
        return _to_str
    if kind is IntConverter:
        return int
    if kind is BoolConverter:
        return _to_bool
    if kind is FloatConverter:
        return float
    if kind is DecimalConverter:
        return Decimal
    if kind is BytesConverter and fmt == "base64":
        return _base64
    if kind is BytesConverter and fmt == "base16":
        return _base16
    if kind is ProxyConverter and isinstance(used, ProxyConverter):
        factory = used.factory
        if factory == XmlDateTime.from_string:
            return _date_time
        if factory == XmlDate.from_string:
            return _date
        if factory in (XmlTime.from_string, XmlDuration, XmlPeriod):
            return factory
        return None
    if kind is EnumConverter and isinstance(tp, EnumMeta):
        table = _enum_lookup(tp)
        if table is None:
            return None
        return lambda value: table[" ".join(value.split())]
    return None


class BindingReader:
    """Binds lxml elements to generated dataclasses as xsdata's `XmlParser` would, faster.

    One reader per context; plans are compiled on first use, under a lock, so several
    threads may bind at once.
    """

    def __init__(self, context: XmlContext, config: ParserConfig) -> None:
        # The plans reproduce exactly this configuration of xsdata's parser.
        if not (config.fail_on_unknown_properties and config.fail_on_converter_warnings
                and not config.fail_on_unknown_attributes
                and config.class_factory is default_class_factory):
            raise ValueError("BindingReader reproduces only the project's parser config")
        self.context = context
        self.config = config
        self._any_element: type[Any] = context.class_type.any_element
        self._lock = threading.RLock()
        self._plans: dict[type[Any], _Plan] = {}
        self._types: dict[str, type[Any] | None] = {}
        self._types_modules = -1

    # --- public ------------------------------------------------------------------------------

    def bind(self, root: etree._Element, clazz: type[Any]) -> Any:
        """The object xsdata would build for `root` as `clazz`.

        Raises `Rejected` where xsdata would fail, `Unsupported` where only xsdata can tell.
        The tree is only read.
        """
        if root.get(XSI_TYPE) is not None or root.get(XSI_NIL) is not None:
            raise Unsupported("xsi:type or xsi:nil on the root")
        obj = self._element(root, self._plan(clazz, None))
        if _normalized(root.tail) is not None:
            # xsdata returns the root's stray tail text instead of the object.
            raise Rejected("")
        return obj

    # --- plans ---------------------------------------------------------------------------

    def _plan(self, clazz: type[Any], parent_ns: str | None) -> _Plan:
        plan = self._plans.get(clazz)
        if plan is None:
            with self._lock:
                plan = self._plans.get(clazz)
                if plan is None:
                    # As xsdata does: the context caches one meta per class, built with the
                    # namespace of whichever parent asked first (all are built up front).
                    plan = self._compile(clazz, self.context.build(clazz, parent_ns))
                    self._plans[clazz] = plan
        return plan

    def _compile(self, clazz: type[Any], meta: XmlMeta) -> _Plan:
        plan = _Plan(clazz, meta)
        why = self._unsupported_meta(meta)
        if why:
            plan.unsupported = why
            return plan
        for qname, var in meta.attributes.items():
            plan.attributes[qname] = _Attribute(var.name, self._converter(meta, var), var.init,
                                                var)
        if meta.text is not None:
            plan.text = (meta.text.name, self._converter(meta, meta.text))
        wild = meta.find_any_wildcard()
        if wild is not None:
            plan.wild = self._slot(meta, wild)
            plan.mixed = wild.mixed
        qnames = set(meta.elements)
        for wildcard in meta.wildcards:
            qnames.update(wildcard.elements)
        for qname in qnames:
            plan.known[qname] = tuple(self._slot(meta, var) for var in _candidates(meta, qname))
        return plan

    @staticmethod
    def _unsupported_meta(meta: XmlMeta) -> str:
        """Why a class is left to xsdata as a whole, or "" if it is not."""
        if meta.wrappers or meta.choices:
            return "element wrappers or compound fields"
        if len(meta.wildcards) > 1:
            return "more than one wildcard"
        for wildcard in meta.wildcards:
            if wildcard.wildcards:
                return "a wildcard inside a wildcard's choices"
            first = _candidates(meta, wildcard.qname)[:1]
            if not first or first[0] is not wildcard:
                return "a wildcard whose generic values would bind elsewhere"
            if wildcard.mixed and (meta.elements or meta.text is not None):
                return "mixed content beside element or text fields"
        for var in meta.get_all_vars():
            if var.is_clazz_union:
                return "a union of classes"
            if var.list_element and var.factory is not list:
                return "a non-list repeated field"
            if (var.is_element or var.is_text) and not var.init:
                return "a fixed element or text value"
            if var.is_attribute and var.qname in (XSI_TYPE, XSI_NIL):
                return "an xsi:type or xsi:nil field"
        for wildcard in meta.wildcards:
            for choice in wildcard.elements.values():
                if choice.list_element and choice.factory is not list:
                    return "a non-list repeated choice"
                if not choice.init:
                    return "a fixed choice"
        return ""

    def _slot(self, meta: XmlMeta, var: XmlVar) -> _Slot:
        is_list = bool(var.list_element)
        unique = bool(var.is_element and not var.list_element)
        if var.is_wildcard:
            return _Slot(_WILDCARD, var.name, is_list=is_list, unique=False,
                         nillable=bool(var.nillable))
        if var.is_clazz_union:
            return _Slot(_UNSUPPORTED, var.name, is_list=is_list, unique=unique,
                         why="a union of classes")
        if var.clazz is not None:
            return _Slot(_COMPLEX, var.name, is_list=is_list, unique=unique, clazz=var.clazz)
        if var.any_type:
            return _Slot(_UNSUPPORTED, var.name, is_list=is_list, unique=unique,
                         why="an xs:anyType element")
        return _Slot(_PRIMITIVE, var.name, is_list=is_list, unique=unique,
                     convert=self._converter(meta, var), empty=self._empty(var))

    def _empty(self, var: XmlVar) -> Callable[[], Any]:
        """The value of a simple element without text: its default, else "" or b""."""
        default = var.default
        blank: Any = b"" if bytes in var.types else ""

        def empty() -> Any:
            if callable(default):
                value = default() if var.tokens_factory else None
            else:
                value = default
            if value is None and not var.nillable:
                return blank
            return value

        return empty

    def _converter(self, meta: XmlMeta, var: XmlVar) -> Converter:
        """Text to value, as `ParserUtils.parse_var` converts it for this var."""
        config = self.config

        def reference(value: str, element: etree._Element) -> Any:
            try:
                return ParserUtils.parse_var(meta=meta, var=var, config=config, value=value,
                                             ns_map=element.nsmap)
            except Exception as exc:  # ParserError, or what a converter let through
                raise Rejected(str(exc)) from exc

        if var.tokens_factory is not None:
            return reference
        types = tuple(var.types)
        if len(types) == 1:
            fast = _fast_type(types[0], var.format)
            if fast is None:
                return reference
            if fast is _to_str:
                return _text_as_is  # the most common case, and it cannot fail

            def single(value: str, element: etree._Element) -> Any:
                try:
                    return fast(value)
                except Exception:
                    return reference(value, element)  # xsdata's verdict, and its message

            return single
        if (len(types) == 2 and types[1] is str and isinstance(types[0], EnumMeta)
                and type(converter.type_converter(types[0])) is EnumConverter
                and type(converter.type_converter(str)) is StringConverter):
            # A union like xml:lang's (LangValue | str): the enum if a member matches, else
            # the text itself.
            table = _enum_lookup(types[0])
            if table is not None:
                def enum_or_str(value: str, element: etree._Element) -> Any:
                    return table.get(" ".join(value.split()), value)

                return enum_or_str
        return reference

    # --- binding -------------------------------------------------------------------------

    def _element(self, element: etree._Element, plan: _Plan) -> Any:
        """One element as its class (xsdata's `ElementNode`, children bound in document
        order). Written for speed: this loop is where the time goes."""
        if plan.unsupported:
            raise Unsupported(f"{plan.clazz.__qualname__}: {plan.unsupported}")
        params: dict[str, Any] = {}
        items = element.items()
        if items:
            self._attributes(element, items, plan, params)
        mixed = plan.mixed
        content: list[Any] = []
        known = plan.known
        for child in element:
            tag = child.tag
            if tag.__class__ is not str:
                if isinstance(child, etree._Entity):
                    raise Unsupported("an entity reference")
                continue  # comments and processing instructions are not content to xsdata
            slots = known.get(tag)
            if slots is None:
                slots = self._unknown(plan, tag)
            for slot in slots:
                if slot.unique and slot.name in params:
                    continue  # taken: xsdata tries the next field of that name
                break
            else:
                raise Rejected(f"Unknown property {plan.meta.qname}:{tag}")
            kind = slot.kind
            if kind == _PRIMITIVE:
                if child.keys() and (child.get(XSI_TYPE) is not None
                                     or child.get(XSI_NIL) is not None):
                    raise Unsupported("xsi:type or xsi:nil on a simple element")
                if len(child):
                    for grandchild in child:
                        if grandchild.tag.__class__ is str:
                            raise Rejected("Primitive node doesn't support child nodes!")
                text = child.text
                value = slot.empty() if text is None else slot.convert(text, child)
                if mixed:
                    content.append(self._any_element(qname=tag,
                                                     text=converter.serialize(value)))
                    tail = _normalized(child.tail)
                    if tail is not None:
                        content.append(tail)
                    continue
                own_tail = False  # xsdata drops a simple element's tail outside mixed content
            elif kind == _COMPLEX:
                child_plan = slot.plan
                if child_plan is None:
                    child_plan = slot.plan = self._plan(slot.clazz, plan.namespace)
                value = self._element(child, child_plan)
                own_tail = True
            elif kind == _WILDCARD:
                if child.keys() and (child.get(XSI_TYPE) is not None
                                     or child.get(XSI_NIL) is not None):
                    raise Unsupported("xsi:type or xsi:nil on a wildcard element")
                resolved = self._resolve(tag)
                if resolved is not None:
                    value = self._element(child, self._plan(resolved, plan.namespace))
                    own_tail = True
                else:
                    value = self._generic(child, slot.nillable)
                    own_tail = False  # a generic element keeps its tail inside
            else:
                raise Unsupported(slot.why)
            if mixed:
                content.append(value)
                if own_tail:
                    tail = _normalized(child.tail)
                    if tail is not None:
                        content.append(tail)
                continue
            name = slot.name
            if slot.is_list:
                values = params.get(name)
                if values is None:
                    params[name] = [value]
                else:
                    values.append(value)
            elif kind == _WILDCARD and name in params:
                raise Unsupported("a second element for a single wildcard")
            else:
                params[name] = value
            if own_tail and plan.has_wildcards and _normalized(child.tail) is not None:
                # xsdata offers the stray text to its wildcard lookup with qname None,
                # which fails in `target_uri(None)`.
                raise Rejected("'NoneType' object is not subscriptable")
        if plan.text is not None or plan.wild is not None:
            self._text(element, plan, params, content)
        try:
            return plan.clazz(**params)
        except Exception as exc:  # a required field missing (TypeError), as xsdata fails
            raise Rejected(str(exc)) from exc

    def _attributes(self, element: etree._Element, items: Sequence[tuple[Any, Any]], plan: _Plan,
                    params: dict[str, Any]) -> None:
        attributes = plan.attributes
        for key, value in items:
            attribute = attributes.get(key)
            if attribute is not None:
                converted = attribute.convert(value, element)
                if attribute.init:
                    params[attribute.name] = converted
                else:
                    try:
                        ParserUtils.validate_fixed_value(plan.meta, attribute.var, converted)
                    except ParserError as exc:
                        raise Rejected(str(exc)) from exc
            elif key == XSI_TYPE or key == XSI_NIL:
                raise Unsupported("xsi:type or xsi:nil")
            else:
                for var in plan.any_attributes:
                    if _matches(var, key):
                        bucket = params.get(var.name)
                        if bucket is None:
                            bucket = params[var.name] = {}
                        bucket[key] = ParserUtils.parse_any_attribute(value, element.nsmap)
                        break
                # else: an unknown attribute, which xsdata (fail_on_unknown_attributes off)
                # drops without a word.

    def _text(self, element: etree._Element, plan: _Plan, params: dict[str, Any],
              content: list[Any]) -> None:
        """The element's own text: its text field, else the first wildcard (xsdata's
        `bind_text`, then `bind_wild_text`)."""
        if plan.text is not None:
            text = element.text
            if text is not None:
                name, convert = plan.text
                params[name] = convert(text, element)
                return
        wild = plan.wild
        if wild is None:
            return  # text with nowhere to go is dropped
        text = _normalized(element.text)
        if plan.mixed:
            if text is not None:
                content.insert(0, text)
            params[wild.name] = content
        elif wild.is_list:
            if text is not None:
                values = params.get(wild.name)
                if values is None:
                    params[wild.name] = [text]
                else:
                    values.insert(0, text)
        elif text is not None or _normalized(element.tail) is not None:
            raise Unsupported("text for a single wildcard")

    def _unknown(self, plan: _Plan, qname: str) -> tuple[_Slot, ...]:
        """Candidates for a child no field names: the wildcard, if its namespaces admit it."""
        namespace = _namespace_of(qname)
        slots = plan.unknown.get(namespace)
        if slots is None:
            slots = tuple(self._slot(plan.meta, var) for var in _candidates(plan.meta, qname))
            if len(plan.unknown) < _CACHE_LIMIT:
                plan.unknown[namespace] = slots
        return slots

    def _resolve(self, qname: str) -> type[Any] | None:
        """The class for a wildcard element, as xsdata finds it (`XmlContext.find_type`)."""
        modules = len(sys.modules)
        if modules != self._types_modules:
            # xsdata re-indexes its classes when modules were imported; so must we.
            with self._lock:
                self._types = {}
                self._types_modules = modules
        types = self._types
        try:
            return types[qname]
        except KeyError:
            pass
        with self._lock:
            found: type[Any] | None = self.context.find_type(qname)
        # A miss is not remembered: xsdata rebuilds its index without a lock when modules are
        # imported, and a miss during that rebuild must not stick (found in review).
        if found is not None and len(types) < _CACHE_LIMIT:
            types[qname] = found
        return found

    def _generic(self, element: etree._Element, nillable: bool) -> Any:
        """An `AnyElement`, as xsdata's `WildcardNode` builds one (recursively)."""
        children = []
        for child in element:
            if child.tag.__class__ is str:
                children.append(self._generic(child, nillable))
            elif isinstance(child, etree._Entity):
                raise Unsupported("an entity reference")
        items: Sequence[tuple[Any, Any]] = element.items()
        if items:
            ns_map = element.nsmap
            attributes = {key: ParserUtils.parse_any_attribute(value, ns_map)
                          for key, value in items}
        else:
            attributes = {}
        text = element.text
        if children:
            text = _normalized(text)
        if text is None and not nillable:
            text = ""
        return self._any_element(qname=element.tag, text=text, tail=_normalized(element.tail),
                                 attributes=attributes, children=children)
