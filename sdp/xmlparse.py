"""Safe parsing of XML that came from outside: no DTDs, no entities, no network.

Every byte that arrives from the network, a file or a package goes through `parse`. lxml is
configured so that a DOCTYPE is refused outright (which rules out external entities and
entity-expansion bombs), nothing is fetched, and documents are bounded in size and depth.
"""

from __future__ import annotations

import re
import threading
from typing import IO

from lxml import etree

from sdp.errors import XmlSecurityError

#: Larger documents are refused before parsing. A business message or receipt is a few KB;
#: a SOAP envelope without its attachment stays far below this.
MAX_XML_BYTES = 16 * 1024 * 1024
#: Deepest element nesting accepted; SDP documents nest fewer than 15 levels.
MAX_DEPTH = 64
#: Most elements, attributes, namespace declarations, comments and PIs in one document. libxml2
#: spends over 100 bytes on each, so the byte limit alone lets 16 MiB of `<a/>` cost half a
#: gigabyte; counted while parsing, a document is stopped before it gets that far.
MAX_NODES = 250_000
_FEED_BYTES = 64 * 1024
#: Every counted node takes at least four bytes (`<a/>`, ` a=""`, `<?a?>`), so a document of
#: at most this size cannot exceed MAX_NODES and is parsed in one call, without the event
#: stream that counts nodes (half the cost of parsing a SOAP response, bench/e2e.py).
_SMALL_BYTES = 4 * MAX_NODES
#: An XPath that is true when some element is nested deeper than MAX_DEPTH.
_TOO_DEEP = etree.XPath("boolean(/" + "*/" * MAX_DEPTH + "*)")
_local = threading.local()


#: A character XML 1.0 cannot carry: control characters, surrogates, U+FFFE and U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def has_non_xml_char(value: str) -> bool:
    """Whether `value` holds a character no XML document can carry (found by fuzzing: such
    text must be refused when the input is built, not fail later in the serializer)."""
    return _NOT_XML_CHAR.search(value) is not None


def _parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end", "start-ns", "comment", "pi"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
        collect_ids=False,
    )


def _small_parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
            huge_tree=False, remove_blank_text=False, remove_comments=False,
            collect_ids=False)
    return parser


def parse(source: bytes | str | IO[bytes], *, what: str = "XML document",
          max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse untrusted XML and return its root element, or raise `XmlSecurityError`.

    `what` names the input in error messages ("transport receipt", "manifest.xml", ...).
    """
    if isinstance(source, str):
        data = source.encode("utf-8")
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise XmlSecurityError(f"larger than the limit of {max_bytes} bytes", subject=what)
    try:
        if len(data) <= _SMALL_BYTES:
            root = etree.fromstring(data, _small_parser())
            # libxml2 alone stops at 256 levels; ours is stricter.
            if _TOO_DEEP(root):
                raise XmlSecurityError(f"nested deeper than {MAX_DEPTH} elements",
                                       subject=what)
        else:
            root = _parse_counted(data, what)
    except etree.XMLSyntaxError as exc:
        raise XmlSecurityError(f"not well-formed XML: {exc}", subject=what) from exc
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.system_url or tree.docinfo.public_id:
        raise XmlSecurityError("a DOCTYPE is not allowed", subject=what)
    for _entity in root.iter(etree.Entity):
        raise XmlSecurityError("entity references are not allowed", subject=what)
    return root


def _parse_counted(data: bytes, what: str) -> etree._Element:
    """Parse in pieces, counting nodes and depth from the parser's events as they come."""
    parser = _parser()
    state = [0, 0]  # current depth, nodes so far
    for offset in range(0, len(data), _FEED_BYTES):
        parser.feed(data[offset:offset + _FEED_BYTES])
        _count(parser, state, what)
    root = parser.close()
    _count(parser, state, what)
    return root


def _count(parser: etree.XMLPullParser, state: list[int], what: str) -> None:
    """Track depth and node count from the parser's events, stopping a document early."""
    for event, node in parser.read_events():
        if event == "end":
            state[0] -= 1
            continue
        state[1] += 1
        if event == "start":
            state[0] += 1
            state[1] += len(node.attrib)  # type: ignore[union-attr]
            if state[0] > MAX_DEPTH:
                raise XmlSecurityError(f"nested deeper than {MAX_DEPTH} elements", subject=what)
    if state[1] > MAX_NODES:
        raise XmlSecurityError(f"more than {MAX_NODES} elements, attributes and other nodes",
                               subject=what)
