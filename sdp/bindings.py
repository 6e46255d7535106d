"""Typed bindings: XML <-> the dataclasses xsdata generated from the official schemas.

The classes themselves live in the generated package `sdp_bindings` (one module per
namespace: `sdp_bindings.sdp`, `.sbdh`, `.ebms`, `.xmldsig`, ...). This module adds the two
things generated code cannot: safe parsing of untrusted input before xsdata sees it, and one
serializer configuration (prefixes, no schemaLocation) shared by everything we write.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import threading
from dataclasses import is_dataclass
from types import ModuleType
from typing import IO, Any, TypeVar, cast

from lxml import etree
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig
from xsdata.formats.dataclass.parsers.handlers import LxmlEventHandler
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig

# Importing the package imports every namespace module, which registers each class with
# xsdata: without it an SBD's xs:any payload (sdp:digitalPost, sdp:kvittering) could not be
# resolved to its class and would come back as a generic node.
import sdp_bindings
from sdp import xmlparse
from sdp.binding_reader import BindingReader, Rejected
from sdp.binding_writer import XML_DECLARATION, BindingWriter
from sdp.errors import SchemaValidationError
from sdp.schemas import NS_MAP

T = TypeVar("T")

__all__ = ["from_xml", "root_class", "sdp_bindings", "to_xml"]


_LOCK = threading.RLock()


@functools.cache
def _context() -> XmlContext:
    """One context per process, with every generated class built up front.

    xsdata fills the context's caches lazily and without locking; a broker parsing from
    several threads once got a half-built entry (an SBD payload that was not resolved).
    Building everything here, once, leaves only reads for later.
    """
    with _LOCK:
        context = XmlContext()
        for module in _binding_modules():
            for value in vars(module).values():
                if isinstance(value, type) and is_dataclass(value) \
                        and value.__module__ == module.__name__:
                    context.build(value)
        context.build_xsi_cache()
        return context


def _binding_modules() -> list[ModuleType]:
    import importlib
    import pkgutil

    return [importlib.import_module(f"sdp_bindings.{m.name}")
            for m in pkgutil.iter_modules(sdp_bindings.__path__)]


def _parser() -> XmlParser:
    # fail_on_unknown_properties: an element the schema does not know is an error, not
    # silently dropped data.
    config = ParserConfig(fail_on_unknown_properties=True, fail_on_converter_warnings=True)
    return XmlParser(config=config, context=_context(), handler=LxmlEventHandler)


def root_class(tag: str) -> type[Any] | None:
    """The generated class for a global element, by Clark name `{namespace}local`."""
    found: type[Any] | None = _context().find_type(tag)
    return found


@functools.cache
def _reader() -> BindingReader:
    """The fast binder, reproducing exactly the configuration `_parser` gives xsdata."""
    return BindingReader(_context(), _parser().config)


def _bind_with_xsdata(root: etree._Element, target: type[T], what: str) -> T:
    """xsdata's generic binding: the reference, and the fallback for what the reader leaves
    to it. `root` is consumed (xsdata clears elements as it reads them)."""
    try:
        obj = _parser().parse(root, target)
    except Exception as exc:  # xsdata raises ParserError, ConverterError, ...
        raise SchemaValidationError(
            f"does not match {target.__name__}: {exc}", subject=what
        ) from exc
    if not isinstance(obj, target):
        # Found by fuzzing: xsdata can hand back stray text instead of the root object.
        raise SchemaValidationError(f"does not match {target.__name__}", subject=what)
    return obj


def from_xml(
    xml: bytes | IO[bytes] | etree._Element, clazz: type[T] | None = None, *, what: str = "XML"
) -> T:
    """Parse XML into its typed root object, after the safe parser has accepted it.

    With `clazz`, the root must be that class; otherwise it is found from the root tag.
    A given element is left untouched. Binding goes through `sdp.binding_reader` (a
    profile found xsdata's generic binding the main cost of reading a response); what that
    reader does not reproduce exactly is bound by xsdata, on a copy of a given element
    since xsdata's lxml handler clears elements as it reads them.
    """
    given = isinstance(xml, etree._Element)
    root = cast("etree._Element", xml) if given else xmlparse.parse(
        cast("bytes | IO[bytes]", xml), what=what)
    target = clazz or root_class(root.tag)
    if target is None:
        raise SchemaValidationError(
            f"no binding for root element {root.tag}",
            subject=what,
            violations=[(f"/{root.tag}", "unknown root element")],
        )
    try:
        obj = _reader().bind(root, target)
    except Rejected as exc:
        # xsdata would refuse it as well (the reader's tests check that it does).
        reason = f": {exc}" if str(exc) else ""
        raise SchemaValidationError(
            f"does not match {target.__name__}{reason}", subject=what
        ) from exc
    except Exception:  # Unsupported, or anything the reader did not foresee: xsdata decides
        return _bind_with_xsdata(copy.deepcopy(root) if given else root,
                                 cast("type[T]", target), what)
    if not isinstance(obj, target):
        raise SchemaValidationError(f"does not match {target.__name__}", subject=what)
    return cast("T", obj)


@functools.cache
def _writer() -> BindingWriter:
    """One fast writer per process, compiling its per-class plans from `_context()`."""
    return BindingWriter(_context())


def to_xml(obj: object, *, xml_declaration: bool = True, pretty: bool = False,
           ns_map: dict[str, str] | None = None) -> bytes:
    """Serialize a bound object with the project's prefixes (`sdp`, `ds`, `sbdh`, ...).

    `ns_map` gives the prefixes; the root declares those the document uses (an SBD declares
    only what it uses). `sdp.binding_writer` does the work (a profile found xsdata's
    generic serializer one of the biggest costs of sending); anything it does not reproduce
    exactly, and any error (a character XML cannot carry, a bad value), is left to xsdata's
    serializer, the reference, for the whole call: errors stay the ones callers handle. Both
    routes declare only the prefixes used; `pretty` output is xsdata's own and declares all.
    """
    namespaces = NS_MAP if ns_map is None else ns_map
    if pretty:
        return _xsdata_to_xml(obj, xml_declaration=xml_declaration, pretty=True,
                              ns_map=namespaces)
    # Unsupported, or an error (invalid characters, a bad value): xsdata decides.
    with contextlib.suppress(Exception):
        return _writer().serialize(obj, namespaces, xml_declaration=xml_declaration)
    data = _xsdata_to_xml(obj, xml_declaration=False, pretty=False, ns_map=namespaces)
    return _declare_only_used(data, xml_declaration=xml_declaration)


#: `prefix:` at the start of a text or attribute value: a QName that may need its prefix.
_VALUE_PREFIX = re.compile(r"\s*([^\s:<>\"']+):")


def _declare_only_used(data: bytes, *, xml_declaration: bool) -> bytes:
    """xsdata's output without the prefixes it declares but does not use, so that both
    routes of `to_xml` declare the same (the ebMS header relies on it). A prefix that only a
    QName value uses (`env:Sender`, an xsi:type) is kept: lxml cannot see it (found in
    review, where such declarations were dropped). Our own output, so no safe parser."""
    root = etree.fromstring(data)
    in_values = set()
    for el in root.iter():
        for value in (el.text, *el.attrib.values()):
            found = _VALUE_PREFIX.match(value) if value else None
            if found:
                in_values.add(found.group(1))
    etree.cleanup_namespaces(root, keep_ns_prefixes=sorted(in_values))
    text = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return XML_DECLARATION.encode("ascii") + text if xml_declaration else text


def _xsdata_to_xml(obj: object, *, xml_declaration: bool, pretty: bool,
                   ns_map: dict[str, str]) -> bytes:
    """xsdata's serializer: the reference output, and the fallback of `to_xml`."""
    config = SerializerConfig(
        xml_declaration=xml_declaration,
        encoding="UTF-8",
        indent="  " if pretty else None,
    )
    serializer = XmlSerializer(config=config, context=_context())
    return serializer.render(obj, ns_map=ns_map).encode("utf-8")
