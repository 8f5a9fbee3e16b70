"""Incremental, restricted XML parsing of XMPP streams and WebSocket frames (RFC 6120 §11, RFC 7395).

Bytes in, events out. Expat does the parsing at C speed; this module builds stanzas as
ElementTree elements, enforces the XML subset XMPP allows (no DTD, comments, processing
instructions or entity declarations: RFC 6120 §11.1) and bounds every input before expat sees
it, because expat 2.5 re-parses a partial token from its start on every feed: a large token
fed in tiny chunks costs quadratic time.

The stream parser also keeps the bytes of the stanza being parsed, so that each direct child of a
stanza carries the XML it arrived as (:class:`~schnack.xmpp.xml.ParsedElement`): forwarding a
stanza then writes its payload as received instead of serializing it again. Between stanzas
it can let go of its expat parser (:meth:`StreamParser.release`), about 16 KiB, and build a new
one when input comes: an idle connection then holds little more than the stream header's bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element
from xml.parsers import expat

from .errors import StreamError
from .xml import ParsedElement

# Feed expat only once a tag could have ended (a '>' arrived) or this much is pending.
_FEED_THRESHOLD = 16 * 1024
# When expat holds an incomplete token larger than this, wait until at least as many new bytes
# are pending before feeding again, so re-parsing it costs amortised linear time, not quadratic.
_BIG_TOKEN = 4 * 1024
MAX_DEPTH: Final = 64
# A start tag, up to its '>' (attribute values may hold a '>'); group 1 is '/' for an empty element.
_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:'[^']*'|"[^"]*"))*\s*(/?)>""")
# The stream's closing tag, under any prefix, as looked for in input no longer parsed.
_CLOSE_TAG = re.compile(rb"</(?:[^\s<>/:]+:)?stream\s*>")
# Kept of discarded input so that a closing tag split across two reads is found (a tag is short).
_CLOSE_TAIL = 64


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The stream header arrived: its qualified name, attributes and default namespace."""

    name: str
    attrs: dict[str, str]
    default_ns: str | None


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    """A complete top-level element (stanza or nonza) inside the stream."""

    element: Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer closed its stream (``</stream:stream>``)."""


Event = StreamOpened | StanzaReceived | StreamClosed


def _name(expat_name: str) -> str:
    # Expat reports "namespace local" or, for a prefixed name, "namespace local prefix".
    namespace, sep, local = expat_name.partition(" ")
    if not sep:
        return expat_name
    if " " in local:
        local = local.partition(" ")[0]
    return f"{{{namespace}}}{local}"


def _attrs(expat_attrs: dict[str, str]) -> dict[str, str]:
    if not expat_attrs:
        return {}
    return {(_name(k) if " " in k else k): v for k, v in expat_attrs.items()}


def _element_name(expat_name: str) -> tuple[str, bool]:
    """The Clark name of an element as expat reports it, and whether it has a namespace prefix."""
    namespace, sep, local = expat_name.partition(" ")
    if not sep:
        return expat_name, False
    if " " in local:
        return f"{{{namespace}}}{local.partition(' ')[0]}", True
    return f"{{{namespace}}}{local}", False


# Element names as expat reports them, converted: streams repeat a few dozen, and looking one up
# costs less than splitting and joining it again. Names come from peers, so the table is bounded
# in entries and in their length (a name may be as long as a stanza).
_ELEMENT_NAMES: Final[dict[str, tuple[str, bool]]] = {}
_ELEMENT_NAMES_KEPT: Final = 4096
_ELEMENT_NAME_KEPT_LENGTH: Final = 256


def _convert(expat_name: str, expat_attrs: dict[str, str]) -> tuple[str, dict[str, str], bool]:
    """The Clark name and attributes of an element as expat reports it, and whether the element
    or an attribute uses a namespace prefix other than ``xml``. The common case (no prefix, no
    qualified attribute) makes no new dict: Element copies the one it is given."""
    known = _ELEMENT_NAMES.get(expat_name)
    if known is None:
        known = _element_name(expat_name)
        if len(expat_name) <= _ELEMENT_NAME_KEPT_LENGTH:
            if len(_ELEMENT_NAMES) >= _ELEMENT_NAMES_KEPT:
                _ELEMENT_NAMES.clear()
            _ELEMENT_NAMES[expat_name] = known
    expat_name, prefixed = known
    for key in expat_attrs:
        if " " in key:
            prefixed = prefixed or any(k.count(" ") == 2 and not k.endswith(" xml") for k in expat_attrs)
            return expat_name, _attrs(expat_attrs), prefixed
    return expat_name, expat_attrs, prefixed


def _add_text(stack: list[Element], data: str) -> None:
    """Character data for the element open at the top of ``stack``: its text, or the tail of its
    last child."""
    if not stack:
        return
    top = stack[-1]
    if len(top):
        last = top[-1]
        last.tail = (last.tail or "") + data
    else:
        top.text = (top.text or "") + data


def _expat_error(err: expat.ExpatError) -> StreamError:
    code = err.code
    if code == expat.errors.codes[expat.errors.XML_ERROR_UNBOUND_PREFIX]:
        return StreamError("bad-namespace-prefix", "undeclared namespace prefix")
    if code in (
        expat.errors.codes[expat.errors.XML_ERROR_UNKNOWN_ENCODING],
        expat.errors.codes[expat.errors.XML_ERROR_INCORRECT_ENCODING],
    ):
        return StreamError("unsupported-encoding", "only UTF-8 is allowed")
    return StreamError("not-well-formed", f"{expat.ErrorString(code)} at byte {err.offset}")


class _Restricted:
    """The expat set-up shared by stream and frame parsing."""

    def __init__(self, max_stanza_bytes: int) -> None:
        self.max_stanza_bytes = max_stanza_bytes
        self._parser: expat.XMLParserType = self._new_parser()
        self._stack: list[Element] = []
        self._depth = 0
        self._stanza_start = 0
        self._default_ns: str | None = None
        # Added to expat's byte index to give the offset in the whole input (see StreamParser).
        self._shift = 0

    def _new_parser(self) -> expat.XMLParserType:
        # Names are not interned per parser: that table would be one more thing every connection holds.
        p = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ", intern=None)
        p.buffer_text = True
        p.buffer_size = 4 * 1024
        p.namespace_prefixes = True
        p.ordered_attributes = False
        p.specified_attributes = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        p.StartNamespaceDeclHandler = self._ns_decl
        p.XmlDeclHandler = self._xml_decl
        p.CommentHandler = self._refuse_comment
        p.ProcessingInstructionHandler = self._refuse_pi
        p.StartDoctypeDeclHandler = self._refuse_doctype
        p.EntityDeclHandler = self._refuse_entity
        p.ExternalEntityRefHandler = self._refuse_external
        return p

    def _pos(self) -> int:
        """The input offset of the event being handled."""
        return self._parser.CurrentByteIndex + self._shift

    # Handlers: exceptions raised here stop expat and propagate out of Parse().
    @staticmethod
    def _refuse_comment(_data: str) -> None:
        raise StreamError("restricted-xml", "XML comments are not allowed")

    @staticmethod
    def _refuse_pi(_target: str, _data: str) -> None:
        raise StreamError("restricted-xml", "processing instructions are not allowed")

    @staticmethod
    def _refuse_doctype(*_args: object) -> None:
        raise StreamError("restricted-xml", "document type declarations are not allowed")

    @staticmethod
    def _refuse_entity(*_args: object) -> None:
        raise StreamError("restricted-xml", "entity declarations are not allowed")

    @staticmethod
    def _refuse_external(*_args: object) -> int:
        raise StreamError("restricted-xml", "external entities are not allowed")

    @staticmethod
    def _xml_decl(_version: str | None, encoding: str | None, _standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            raise StreamError("unsupported-encoding", f"encoding {encoding!r} is not UTF-8")

    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        # expat gives None for an undeclaration (xmlns='').
        if self._depth == 0 and prefix is None:
            self._default_ns = uri

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        raise NotImplementedError

    def _end(self, name: str) -> None:
        raise NotImplementedError

    def _chars(self, data: str) -> None:
        _add_text(self._stack, data)

    def _open_child(self, name: str, attrs: dict[str, str], cls: type[Element] = Element) -> bool:
        """Build the element and put it on the stack; return whether it uses a namespace prefix."""
        if self._depth > MAX_DEPTH:
            raise StreamError("policy-violation", f"elements nested deeper than {MAX_DEPTH}")
        tag, attrib, prefixed = _convert(name, attrs)
        el = cls(tag, attrib)
        stack = self._stack
        if stack:
            stack[-1].append(el)
        stack.append(el)
        return prefixed

    def _check_size(self) -> None:
        if self._pos() - self._stanza_start > self.max_stanza_bytes:
            raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_bytes} bytes")


class StreamParser(_Restricted):
    """Parses one XML stream (RFC 6120 §4): a header, top-level elements, and the closing tag.

    Call :meth:`feed` with whatever bytes arrived and handle the returned events. Limits are
    enforced as input arrives: :attr:`max_stanza_bytes` (change it after authentication) bounds
    each top-level element, one still open by what came of it so far. A :class:`StreamError`
    means the stream must be closed with that condition; then :meth:`discard` stops the parsing.
    After STARTTLS or SASL success make a new parser (§4.3.3).
    """

    def __init__(self, max_stanza_bytes: int = 10_000) -> None:
        super().__init__(max_stanza_bytes)
        self._events: list[Event] = []
        self._pending = bytearray()
        self._fed = 0
        self._min_feed = 0
        self._closed = False
        # The input offset just after the last complete top-level element.
        self._element_end = 0
        # The bytes fed since offset _raw_base of the stream: they reach back to the start of the
        # stanza being parsed, so that its direct children can keep their XML.
        self._raw = bytearray()
        self._raw_base = 0
        self._child_start = 0
        self._child_plain = True
        # Whether no text and no child came since the last start tag (see _end_of).
        self._nothing_inside = False
        # The default namespace a stanza declared for its children, if it declared one.
        self._stanza_ns: str | None = None
        # The stream header's start tag, replayed into a new expat parser after release().
        self._header = b""
        self._released = False
        self._replaying = False
        self._discarding = False

    def feed(self, data: bytes) -> list[Event]:
        """Feed bytes from the wire; return the events they completed.

        Input may be held back (see :meth:`buffered`); the caller calls :meth:`flush` once the
        peer has been quiet for a moment so that held input is never stuck.
        """
        if self._closed:
            return []
        pending = self._pending
        pending += data
        if self._discarding:
            return self._scan_for_close()
        in_stanza = self._fed - self._stanza_start if self._depth > 1 else 0
        if in_stanza + len(pending) > self.max_stanza_bytes:
            # One stanza too large, or many small ones that a reader behind a fast sender got at
            # once: parse, then the stanza still open must fit (each one that ended was checked
            # at its end). What is parsed at once is bounded by the transport's read size.
            events = self.flush()
            if self._depth > 1 and self._fed - self._stanza_start > self.max_stanza_bytes:
                raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_bytes} bytes")
            return events
        if len(pending) < self._min_feed or (b">" not in data and len(pending) < _FEED_THRESHOLD):
            return []
        return self.flush()

    def flush(self) -> list[Event]:
        """Parse everything held back; return the events it completed."""
        if self._closed or self._discarding or not self._pending:
            return []
        chunk = bytes(self._pending)
        self._pending.clear()
        if self._released:
            self._rebuild()
        self._fed += len(chunk)
        self._raw += chunk
        try:
            self._parser.Parse(chunk, False)
        except expat.ExpatError as err:
            raise _expat_error(err) from None
        held = self._fed - self._pos()
        self._min_feed = held if held > _BIG_TOKEN else 0
        if self._depth <= 1:
            # Between stanzas expat has used everything before its position; what is kept is a
            # few bytes (an incomplete tag), so give back the room a large stanza took.
            self._trim(self._pos())
            self._raw = bytearray(self._raw)
        events, self._events = self._events, []
        return events

    def discard(self) -> None:
        """Parse no more input: the stream failed, and only the peer's closing tag still counts.

        After a stream error the peer's input is read on until it closes its stream too (RFC 6120
        §4.4), and a peer may still be sending a flood. From now on :meth:`feed` only looks for
        ``</stream>`` in the bytes (under any prefix), which costs far less than parsing them,
        and returns :class:`StreamClosed` once it is found. Input held back is looked at too.
        """
        if self._discarding:
            return
        self._discarding = True
        # Expat may hold the start of the closing tag, incomplete: its bytes end the raw input.
        self._pending[:0] = self._raw[-_CLOSE_TAIL:]
        self._parser = _RELEASED
        self._stack.clear()
        self._events.clear()
        self._raw = bytearray()

    def _scan_for_close(self) -> list[Event]:
        if _CLOSE_TAG.search(self._pending):
            self._closed = True
            self._pending.clear()
            return [StreamClosed()]
        del self._pending[:-_CLOSE_TAIL]
        return []

    def buffered(self) -> int:
        """Bytes held back from the parser until more input or a :meth:`flush`."""
        return len(self._pending)

    def only_whitespace_after_last_element(self) -> bool:
        """Whether nothing but whitespace (RFC 6120 §11.7: allowed between top-level elements)
        was fed after the last complete top-level element, parsed or held back; the start of
        another element, or the stream's end, is more."""
        # Parsed whitespace between elements is trimmed from _raw as it comes (_chars), and text
        # there ends the stream; what is left of _raw is the start of an element.
        return not self._raw.strip() and not self._pending.strip()

    def release(self) -> bool:
        """Let go of the expat parser while the stream is between stanzas; True if it was.

        Nothing is lost: only whitespace may follow the last complete stanza (anything else is the
        start of the next one, and then the parser is kept). The next input goes to a new parser
        that first reads the stream header again, so it knows the namespaces the header declared.
        """
        if self._released or self._closed or self._discarding or self._depth != 1 or self._pending or self._raw.strip():
            return False
        self._parser = _RELEASED
        self._raw = bytearray()
        self._raw_base = self._fed
        self._released = True
        return True

    def close(self) -> None:
        """Let go of expat for good: the stream restarted (RFC 6120 §4.3.3) or its connection
        ended. Expat's handlers are this parser's own methods, a reference cycle that would hold
        expat's buffers until the collector's rarer passes came to it."""
        self._closed = True
        self._parser = _RELEASED

    def _rebuild(self) -> None:
        self._parser = self._new_parser()
        self._released = False
        self._depth = 0
        # The header's bytes come before the input fed so far, so that offsets stay the stream's.
        self._shift = self._fed - len(self._header)
        self._replaying = True
        try:
            self._parser.Parse(self._header, False)
        finally:
            self._replaying = False

    def _trim(self, offset: int) -> None:
        """Forget the bytes before stream offset ``offset``: nothing will need them again."""
        drop = offset - self._raw_base
        if drop > 0:
            del self._raw[:drop]
            self._raw_base = offset

    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        super()._ns_decl(prefix, uri)
        if self._depth == 1 and prefix is None:
            self._stanza_ns = uri or None

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        self._depth = depth + 1
        self._nothing_inside = True
        if depth == 0:
            if not self._replaying:
                start = self._pos() - self._raw_base
                tag = _START_TAG.match(self._raw, start)
                self._header = bytes(self._raw[start : tag.end()]) if tag is not None else b""
                self._events.append(StreamOpened(_name(name), _attrs(attrs), self._default_ns))
            return
        if depth == 1:
            self._stanza_start = self._pos()
            self._trim(self._stanza_start)
        elif depth == 2:
            self._child_start = self._pos()
            self._child_plain = not self._open_child(name, attrs, ParsedElement)
            return
        if self._open_child(name, attrs):
            self._child_plain = False

    def _end(self, _name_: str) -> None:
        self._depth -= 1
        depth = self._depth
        if depth == 0:
            self._closed = True
            self._events.append(StreamClosed())
            return
        el = self._stack.pop()
        if depth == 2:
            assert isinstance(el, ParsedElement)
            self._keep_raw(el)
        elif depth == 1:
            self._check_size()
            self._stanza_ns = None
            self._element_end = self._end_of()
            self._trim(self._element_end)
            self._events.append(StanzaReceived(el))
        self._nothing_inside = False

    def _end_of(self) -> int:
        """The input offset just after the element that ends now."""
        raw = self._raw
        # Expat reports the end of an empty element just after its '/>', and any other at its
        # end tag. Only an element with nothing inside can be empty, and then its start tag ends
        # where expat reports the end: in '/>' if it is empty, in '>' after a name, a quote or
        # a space if not.
        at = self._pos() - self._raw_base
        empty = self._nothing_inside and raw[at - 2 : at] == b"/>"
        return self._raw_base + (at if empty else raw.index(b">", at) + 1)

    def _keep_raw(self, el: ParsedElement) -> None:
        """Give a direct child of the stanza the XML it arrived as (see :class:`ParsedElement`)."""
        el.raw_ns = self._stanza_ns or self._default_ns
        if not self._child_plain:
            el.raw = None
            return
        base = self._raw_base
        el.raw = self._raw[self._child_start - base : self._end_of() - base].decode()

    def _chars(self, data: str) -> None:
        self._nothing_inside = False
        if self._depth == 1:
            # Between stanzas only whitespace (keepalives) may appear (RFC 6120 §11.7).
            if data.strip():
                raise StreamError("bad-format", "text is not allowed between stanzas")
            self._trim(self._pos())
            return
        _add_text(self._stack, data)


# Stands in for the expat parser of a released StreamParser: its byte index is never asked for.
_RELEASED = expat.ParserCreate()


class _FrameParser(_Restricted):
    def __init__(self, max_stanza_bytes: int) -> None:
        super().__init__(max_stanza_bytes)
        self.root: Element | None = None

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if self.root is not None and self._depth == 0:
            raise StreamError("not-well-formed", "more than one element in a frame")
        self._depth += 1
        self._open_child(name, attrs)
        if self.root is None:
            self.root = self._stack[0]

    def _end(self, _name_: str) -> None:
        self._depth -= 1
        self._stack.pop()


def parse_frame(data: bytes, max_stanza_bytes: int) -> Element:
    """Parse one WebSocket text frame holding exactly one element (RFC 7395 §3.3.3)."""
    if len(data) > max_stanza_bytes:
        raise StreamError("policy-violation", f"stanza larger than {max_stanza_bytes} bytes")
    fp = _FrameParser(max_stanza_bytes)
    try:
        fp._parser.Parse(data, True)
    except expat.ExpatError as err:
        raise _expat_error(err) from None
    if fp.root is None:
        raise StreamError("not-well-formed", "empty frame")
    return fp.root
