"""XML elements for stanzas: building and serializing (RFC 6120 §4.8, §11).

Elements are :class:`xml.etree.ElementTree.Element` objects with Clark-notation names
(``{namespace}local``). The serializer writes a default ``xmlns`` only where an element's
namespace differs from its parent's, which is how XMPP peers expect stanzas on the wire
(ElementTree's own serializer would invent ``ns0:`` prefixes).

The stream parser gives each direct child of a stanza the XML it arrived as
(:class:`ParsedElement`), and the serializer writes that text again instead of walking the
child: forwarding a message costs a few string joins, whatever its payload. So that this text
stays true, payloads received from a peer are read-only below the stanza: a module that changes
one replaces the child (``remove`` and ``append`` on the stanza), never edits it in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from xml.etree.ElementTree import Element, SubElement

from mypy_extensions import mypyc_attr

from . import ns

__all__ = ["WHITESPACE", "Element", "ParsedElement", "child", "element", "qname", "serialize", "split", "sub", "text_of"]

# XML 1.0 §2.3 S: the whitespace allowed between top-level elements (RFC 6120 §11.7). No TLS
# record starts with one of these bytes.
WHITESPACE = b" \t\r\n"


# Compiled (setup.py), a native subclass of ElementTree's C element crashes when made: this one
# stays an ordinary Python class.
@mypyc_attr(native_class=False)
class ParsedElement(Element):
    """A direct child of a received stanza, with the XML it arrived as.

    ``raw`` is that XML (None when it cannot be written again as it came: it uses a namespace
    prefix, whose declaration may lie outside it); ``raw_ns`` is the default namespace it was
    parsed in, which must be the one in scope wherever ``raw`` is written. Copies
    (``copy.copy``, ``copy.deepcopy``) are plain elements.
    """

    __slots__ = ("raw", "raw_ns")

    raw: str | None
    raw_ns: str | None


def qname(namespace: str, local: str) -> str:
    """The Clark-notation name of ``local`` in ``namespace``."""
    return f"{{{namespace}}}{local}"


def split(name: str) -> tuple[str | None, str]:
    """Split a Clark-notation name into (namespace, local name)."""
    if name[:1] == "{":
        namespace, _, local = name[1:].partition("}")
        return namespace, local
    return None, name


def element(
    name: str,
    attrs: Mapping[str, str | None] | None = None,
    text: str | None = None,
    children: Iterable[Element] = (),
) -> Element:
    """Build an element; attributes whose value is None are left out."""
    el = Element(name, {k: v for k, v in attrs.items() if v is not None} if attrs else {})
    if text is not None:
        el.text = text
    el.extend(children)
    return el


def sub(
    parent: Element, name: str, attrs: Mapping[str, str | None] | None = None, text: str | None = None
) -> Element:
    """Append a new child to ``parent`` and return it."""
    el = SubElement(parent, name, {k: v for k, v in attrs.items() if v is not None} if attrs else {})
    if text is not None:
        el.text = text
    return el


def child(parent: Element, name: str) -> Element | None:
    """The first child called ``name`` (Clark notation), or None."""
    return parent.find(name)


def text_of(parent: Element, name: str) -> str | None:
    """The text of the first child called ``name``; '' for an empty child, None if absent."""
    el = parent.find(name)
    if el is None:
        return None
    return el.text or ""


def _escape_text(s: str) -> str:
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    return s


def _escape_attr(s: str) -> str:
    s = _escape_text(s)
    if '"' in s:
        s = s.replace('"', "&quot;")
    # Literal newlines and tabs in attribute values would be normalized to spaces by the reader.
    if "\n" in s or "\r" in s or "\t" in s:
        s = s.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return s


def _write(el: Element, parent_ns: str | None, out: list[str]) -> None:
    namespace, local = split(el.tag)
    out.append("<")
    out.append(local)
    if namespace != parent_ns and namespace is not None:
        out.append(' xmlns="')
        out.append(_escape_attr(namespace))
        out.append('"')
    prefixes = 0
    for key, value in el.attrib.items():
        if key[:1] != "{":
            out.append(f' {key}="{_escape_attr(value)}"')
            continue
        attr_ns, _, attr_local = key[1:].partition("}")
        if attr_ns == ns.XML:
            out.append(f' xml:{attr_local}="{_escape_attr(value)}"')
        else:
            prefixes += 1
            out.append(f' xmlns:a{prefixes}="{_escape_attr(attr_ns)}" a{prefixes}:{attr_local}="{_escape_attr(value)}"')
    if el.text is None and len(el) == 0:
        out.append("/>")
        return
    out.append(">")
    if el.text:
        out.append(_escape_text(el.text))
    for sub_el in el:
        if type(sub_el) is ParsedElement and sub_el.raw is not None and sub_el.raw_ns == namespace:
            out.append(sub_el.raw)
        else:
            _write(sub_el, namespace, out)
        if sub_el.tail:
            out.append(_escape_text(sub_el.tail))
    out.append("</")
    out.append(local)
    out.append(">")


def serialize(el: Element, parent_ns: str | None = None) -> str:
    """Serialize ``el``; ``parent_ns`` is the default namespace in scope where it will be written.

    A stanza written inside a client stream passes ``jabber:client`` so that it carries no
    redundant ``xmlns``; one written into a WebSocket frame (RFC 7395 §3.3.3) passes None.
    """
    out: list[str] = []
    _write(el, parent_ns, out)
    return "".join(out)
