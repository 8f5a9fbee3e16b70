"""The stream parser: events, the restricted XML subset and input bounds (RFC 6120 §4, §11)."""

from __future__ import annotations

from typing import Any
from xml.parsers.expat import XMLParserType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import (
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
    parse_frame,
)
from schnack.xmpp.xml import serialize

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>"
)


def opened(limit: int = 10_000) -> StreamParser:
    p = StreamParser(limit)
    (event,) = p.feed(HEADER)
    assert isinstance(event, StreamOpened)
    return p


def condition(p: StreamParser, data: bytes) -> str:
    with pytest.raises(StreamError) as info:
        p.feed(data)
        p.flush()
    return info.value.condition


def test_header_stanza_close() -> None:
    p = StreamParser()
    (event,) = p.feed(HEADER)
    assert isinstance(event, StreamOpened)
    assert event.name == f"{{{ns.STREAMS}}}stream"
    assert event.default_ns == ns.CLIENT
    assert event.attrs["to"] == "localhost"
    assert event.attrs[f"{{{ns.XML}}}lang"] == "en"
    events = p.feed(b"<message to='a@b' type='chat'><body>hi &amp; bye</body></message></stream:stream>")
    assert isinstance(events[0], StanzaReceived)
    assert serialize(events[0].element, ns.CLIENT) == (
        '<message to="a@b" type="chat"><body>hi &amp; bye</body></message>'
    )
    assert isinstance(events[1], StreamClosed)


def test_stanza_split_anywhere_is_the_same() -> None:
    stanza = "<message to='a@b'><body>grüße &lt;3</body><x xmlns='urn:x' a='1'/></message>".encode()
    whole = opened().feed(stanza)
    for cut in range(1, len(stanza)):
        p = opened()
        events = p.feed(stanza[:cut]) + p.feed(stanza[cut:]) + p.flush()
        assert len(events) == 1
        assert serialize(events[0].element) == serialize(whole[0].element)  # type: ignore[union-attr]


def test_whitespace_keepalive_between_stanzas() -> None:
    p = opened()
    assert p.feed(b"  \n ") == []
    assert len(p.feed(b"<presence/> <presence/>")) == 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<!-- hi -->", "restricted-xml"),
        (b"<?php x?>", "restricted-xml"),
        (b"<message><body>a</message>", "not-well-formed"),
        (b"<message><body>\xff\xfe</body></message>", "not-well-formed"),
        (b"<x:message/>", "bad-namespace-prefix"),
        (b"<message>&undefined;</message>", "not-well-formed"),
        (b"some text<presence/>", "bad-format"),
    ],
)
def test_bad_input(data: bytes, expected: str) -> None:
    assert condition(opened(), data) == expected


def test_doctype_is_restricted() -> None:
    p = StreamParser()
    assert condition(p, b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><x/>") == "restricted-xml"


def test_other_encoding_is_refused() -> None:
    assert condition(StreamParser(), b"<?xml version='1.0' encoding='ISO-8859-1'?><a>") == "unsupported-encoding"


def test_stanza_size_limit() -> None:
    p = opened(limit=1000)
    assert condition(p, b"<message><body>" + b"x" * 2000 + b"</body></message>") == "policy-violation"


def test_size_limit_counts_a_stanza_arriving_in_pieces() -> None:
    p = opened(limit=1000)
    p.feed(b"<message><body>")
    with pytest.raises(StreamError) as info:
        for _ in range(20):
            p.feed(b"y" * 100 + b"<b/>")
    assert info.value.condition == "policy-violation"


def test_many_stanzas_read_at_once_may_together_exceed_the_limit() -> None:
    """A reader that fell behind a fast sender gets many stanzas in one read: the limit is per
    stanza, not per read."""
    p = opened(limit=1000)
    stanza = b"<message><body>" + b"x" * 200 + b"</body></message>"
    events = p.feed(stanza * 20)
    assert [type(e) for e in events] == [StanzaReceived] * 20
    # A stanza left open at the end of such a read still counts whole.
    with pytest.raises(StreamError) as info:
        p.feed(stanza * 5 + b"<message><body>" + b"x" * 2000)
    assert info.value.condition == "policy-violation"


def test_a_discarding_parser_parses_nothing_and_finds_the_close() -> None:
    """RFC 6120 §4.4: after a stream error only the peer's closing tag counts."""
    p = opened()
    p.feed(b"<message><body>held")
    p.discard()
    assert p.feed(b"</body></message><presence/>" * 1000) == []
    assert p.flush() == []
    assert not p.release()
    assert p.feed(b"<iq/></stream:str") == []
    assert p.feed(b"eam >") == [StreamClosed()]
    assert p.feed(b"<presence/>") == []


@pytest.mark.parametrize("close", [b"</stream>", b"</s:stream>", b"</stream:stream\n>"])
def test_a_discarding_parser_finds_the_close_under_any_prefix(close: bytes) -> None:
    p = opened()
    p.discard()
    assert p.feed(b"<presence/>" + close) == [StreamClosed()]


def test_a_discarding_parser_looks_at_input_held_back() -> None:
    p = opened()
    p.feed(b"<presence/></stream:stream")
    p.discard()
    assert p.feed(b">") == [StreamClosed()]


def test_a_parser_that_failed_can_discard() -> None:
    p = opened()
    assert condition(p, b"<a><b></a>") == "not-well-formed"
    p.discard()
    assert p.feed(b"</b></a></stream:stream>") == [StreamClosed()]


def test_limit_can_grow_after_authentication() -> None:
    p = opened(limit=1000)
    p.max_stanza_bytes = 100_000
    (event,) = p.feed(b"<message><body>" + b"x" * 50_000 + b"</body></message>")
    assert isinstance(event, StanzaReceived)


def test_nesting_depth_is_bounded() -> None:
    assert condition(opened(), b"<a>" * 100) == "policy-violation"


class CountingExpat:
    """An expat parser that counts the bytes it scans: the partial token it holds from the calls
    before, and what each call hands it."""

    def __init__(self, parser: XMLParserType) -> None:
        self._parser = parser
        self._given = 0
        self.scanned = 0

    def Parse(self, data: bytes, final: bool = False) -> int:
        self.scanned += self._given - self._parser.CurrentByteIndex + len(data)
        self._given += len(data)
        return self._parser.Parse(data, final)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def test_huge_token_in_tiny_chunks_is_not_quadratic() -> None:
    """Expat re-scans a partial token on every parse call; the parser must not call it per chunk.

    Counted, not timed: the bytes expat scans (the partial token it holds plus what is handed
    to it) summed over every parse call must stay linear in the input. The parser's own expat
    is wrapped, as the parser may be compiled (setup.py), whose methods cannot be replaced.
    """
    p = opened(limit=2_000_000)
    counting = CountingExpat(p._parser)
    counting._given = p._fed
    p._parser = counting  # type: ignore[assignment]
    p.feed(b"<message a='")
    size = 1_000_000
    for _ in range(size // 128):
        p.feed(b"x" * 127 + b">")
    events = p.feed(b"'/>") + p.flush()
    assert [type(e) for e in events] == [StanzaReceived]
    assert counting.scanned < 4 * size


def test_held_input_is_released_by_flush() -> None:
    p = opened(limit=2_000_000)
    p.feed(b"<message a='" + b"x" * 10_000)
    assert p.feed(b"'>") == [] or p.buffered() == 0
    events = p.feed(b"</message>") + p.flush()
    assert [type(e) for e in events] == [StanzaReceived]


def test_input_after_the_last_element_is_told_from_whitespace_whether_parsed_or_held() -> None:
    p = opened()
    (event,) = p.feed(b"<starttls/>")
    assert isinstance(event, StanzaReceived) and p.only_whitespace_after_last_element()
    p.feed(b" ")
    assert p.only_whitespace_after_last_element()
    p.flush()
    p.feed(b"\r\n\t")
    assert p.only_whitespace_after_last_element()
    p.flush()
    assert p.only_whitespace_after_last_element()
    p.feed(b"<mess")
    assert not p.only_whitespace_after_last_element()
    p.flush()
    assert not p.only_whitespace_after_last_element()


def test_input_after_the_first_element_behind_the_header_is_told_from_whitespace() -> None:
    p = StreamParser()
    events = p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                    b"version='1.0'><starttls/> \n")
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]
    assert p.only_whitespace_after_last_element()
    p.feed(b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/>")
    assert not p.only_whitespace_after_last_element()


def test_frame() -> None:
    el = parse_frame(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>", 1000)
    assert el.tag == f"{{{ns.FRAMING}}}open"
    with pytest.raises(StreamError) as info:
        parse_frame(b"<a/><b/>", 1000)
    assert info.value.condition == "not-well-formed"
    with pytest.raises(StreamError) as info:
        parse_frame(b"<a>" + b"x" * 2000 + b"</a>", 1000)
    assert info.value.condition == "policy-violation"
    with pytest.raises(StreamError) as info:
        parse_frame(b"<!--x--><a/>", 1000)
    assert info.value.condition == "restricted-xml"


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=200))
def test_text_round_trips(text: str) -> None:
    # XML 1.0 cannot carry most control characters; those must fail cleanly, never crash.
    from schnack.xmpp.xml import element

    el = element("{jabber:client}message", {"id": text}, text=text)
    data = serialize(el).encode()
    try:
        back = parse_frame(data, 10**6)
    except StreamError as err:
        assert err.condition == "not-well-formed"
        return
    assert back.get("id") == text.replace("\r\n", "\n").replace("\r", "\n") or back.get("id") == text
    assert (back.text or "") == text.replace("\r\n", "\n").replace("\r", "\n")


def test_element_names_beyond_what_is_kept_of_them_parse_alike() -> None:
    """Converted names are kept in a bounded table: past its size, and for names too long for it,
    every name still comes out right, prefixed or not."""
    p = opened(10**6)
    long_ns = "urn:" + "n" * 400
    for i in range(5000):
        data = (f"<message><x{i} xmlns='urn:a:{i}'/><p:y xmlns:p='urn:b:{i}'/><z xmlns='{long_ns}'/>"
                f"<p:z xmlns:p='{long_ns}'/></message>").encode()
        (event,) = [e for e in p.feed(data) + p.flush() if isinstance(e, StanzaReceived)]
        tags = [child.tag for child in event.element]
        assert tags == [f"{{urn:a:{i}}}x{i}", f"{{urn:b:{i}}}y", f"{{{long_ns}}}z", f"{{{long_ns}}}z"]
        assert [getattr(child, "raw", None) is not None for child in event.element] == [True, False, True, False]
