"""Forwarding a stanza's payload as it arrived: the parser keeps each direct child's XML and the
serializer writes it again (schnack.xmpp.xml.ParsedElement), with the stanza's own attributes
written afresh (RFC 6120 §8.1.2.1: 'from' stamped by the server)."""

from __future__ import annotations

import copy
from xml.etree.ElementTree import Element

from hypothesis import given
from hypothesis import strategies as st

from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import StanzaReceived, StreamParser, parse_frame
from schnack.xmpp.xml import ParsedElement, element, qname, serialize

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    b"to='localhost' version='1.0'>"
)


def stanzas(data: bytes, chunk: int | None = None) -> list[Element]:
    """Parse ``data`` after a stream header, fed in pieces of ``chunk`` bytes (all at once if None)."""
    p = StreamParser(10**6)
    p.feed(HEADER)
    step = chunk or len(data)
    events = []
    for i in range(0, len(data), step):
        events += p.feed(data[i : i + step])
    events += p.flush()
    return [event.element for event in events if isinstance(event, StanzaReceived)]


def same_tree(a: Element, b: Element) -> bool:
    return (
        a.tag == b.tag
        and a.attrib == b.attrib
        and (a.text or "") == (b.text or "")
        and (a.tail or "") == (b.tail or "")
        and len(a) == len(b)
        and all(same_tree(x, y) for x, y in zip(a, b, strict=True))
    )


MESSAGE = (
    b"<message to='bob@localhost/phone' type='chat' id='m1'>"
    b"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='7'><key rid='9'>a2V5</key>"
    b"<iv>aXY=</iv></header><payload>cGF5</payload></encrypted>"
    b"<body>a &amp; b &lt; c &gt; d \xc3\xa4 &#x1F600; &apos;q&quot;</body>"
    b"<x a='1 &gt; 0' b=\"it's\"/>\n  <store xmlns='urn:xmpp:hints'/></message>"
)


def test_children_are_written_as_they_arrived() -> None:
    for chunk in (None, 1, 7, 64):
        (msg,) = stanzas(MESSAGE, chunk)
        assert all(type(child) is ParsedElement for child in msg)
        out = serialize(msg, ns.CLIENT)
        # Byte for byte what the client sent, escapes and quotes included.
        assert out.encode() == MESSAGE.replace(b"'bob@localhost/phone'", b'"bob@localhost/phone"').replace(
            b"type='chat' id='m1'", b'type="chat" id="m1"'
        )


def test_children_empty_or_not_end_where_they_end() -> None:
    """An element with nothing inside, written empty or with an end tag, with a '/' or a '>' in
    an attribute value just before its start tag ends: each child keeps exactly its own XML, and
    the stanzas after it are found."""
    children = [
        b"<a></a>", b"<a/>", b"<a x='/'></a>", b'<a x="b/" ></a>', b"<a x='/>'/>", b"<a x='1' />",
        b"<a><b/></a>", b"<a>t</a>", b"<a> </a>", b"<a><b></b></a>",
    ]
    data = (
        b"<message id='m1'>" + b"".join(children) + b"</message><presence></presence>"
        b"<presence x='/'/><message id='m2'><a/></message>"
    )
    for chunk in (None, 1, 5):
        first, *rest = stanzas(data, chunk)
        assert [child.raw for child in first if isinstance(child, ParsedElement)] == [c.decode() for c in children]
        assert [el.tag for el in rest] == [qname(ns.CLIENT, name) for name in ("presence", "presence", "message")]
        assert isinstance(rest[2][0], ParsedElement) and rest[2][0].raw == "<a/>"


def test_from_is_stamped_and_escaped() -> None:
    (msg,) = stanzas(MESSAGE)
    msg.set("from", "alice@localhost/a&b\"<c>'")
    out = serialize(msg, ns.CLIENT)
    assert out.startswith('<message to="bob@localhost/phone" type="chat" id="m1" from="alice@localhost/a&amp;b&quot;&lt;c&gt;\'">')
    (back,) = stanzas(out.encode())
    assert back.get("from") == "alice@localhost/a&b\"<c>'"
    assert same_tree(back, msg)


def test_changes_to_the_stanza_itself_are_written() -> None:
    (msg,) = stanzas(MESSAGE)
    store = msg.find("{urn:xmpp:hints}store")
    assert store is not None
    msg.remove(store)
    msg.append(element("{urn:xmpp:sid:0}stanza-id", {"id": "x<1", "by": "bob@localhost"}))
    out = serialize(msg, ns.CLIENT)
    assert "<store" not in out
    assert out.endswith('<stanza-id xmlns="urn:xmpp:sid:0" id="x&lt;1" by="bob@localhost"/></message>')
    (back,) = stanzas(out.encode())
    assert same_tree(back, msg)


def test_websocket_framing_declares_the_namespace_the_children_inherit() -> None:
    (msg,) = stanzas(MESSAGE)
    out = serialize(msg)
    assert out.startswith(f'<message xmlns="{ns.CLIENT}"')
    assert same_tree(parse_frame(out.encode(), 10**6), msg)


def test_a_child_under_a_parent_of_another_namespace_is_serialized_again() -> None:
    (msg,) = stanzas(MESSAGE)
    body = msg.find(qname(ns.CLIENT, "body"))
    assert isinstance(body, ParsedElement) and body.raw is not None
    wrapper = element("{urn:example:wrap}wrap", children=[body])
    out = serialize(wrapper)
    # The raw <body> would fall into urn:example:wrap; written again, it names jabber:client.
    assert f'<body xmlns="{ns.CLIENT}">' in out
    assert same_tree(parse_frame(out.encode(), 10**6)[0], body)


def test_forwarded_inside_carbons_keeps_the_payload() -> None:
    (msg,) = stanzas(MESSAGE)
    msg.set("from", "alice@localhost/phone")
    forwarded = element("{urn:xmpp:forward:0}forwarded", children=[msg])
    carbon = element(qname(ns.CLIENT, "message"), {"to": "bob@localhost/desk"},
                     children=[element("{urn:xmpp:carbons:2}received", children=[forwarded])])
    out = serialize(carbon, ns.CLIENT)
    (back,) = stanzas(out.encode())
    assert same_tree(back[0][0][0], msg)


def test_prefixes_declared_outside_a_child_are_never_copied() -> None:
    data = (
        b"<message xmlns:e='urn:example:e' to='a@localhost'><e:x/><y><db:verify/></y>"
        b"<z xmlns:f='urn:example:f'><f:w f:v='1' xml:lang='de'/></z><ok xml:lang='en'/></message>"
    )
    (msg,) = stanzas(data)
    raws = {child.tag: child.raw for child in msg if isinstance(child, ParsedElement)}
    assert raws == {
        "{urn:example:e}x": None,
        qname(ns.CLIENT, "y"): None,
        qname(ns.CLIENT, "z"): None,
        qname(ns.CLIENT, "ok"): "<ok xml:lang='en'/>",
    }
    (back,) = stanzas(serialize(msg, ns.CLIENT).encode())
    assert same_tree(back, msg)
    assert same_tree(parse_frame(serialize(msg).encode(), 10**6), msg)


def test_a_stanza_declaring_another_default_namespace() -> None:
    # Not a client stanza (the stream refuses it), but its children must still be written right.
    (el,) = stanzas(b"<q xmlns='urn:example:q'><item/><item a='1'>t</item></q>")
    assert [child.raw_ns for child in el if isinstance(child, ParsedElement)] == ["urn:example:q"] * 2
    assert same_tree(parse_frame(serialize(el).encode(), 10**6), el)


def test_copies_are_plain_elements() -> None:
    (msg,) = stanzas(MESSAGE)
    body = msg.find(qname(ns.CLIENT, "body"))
    assert type(copy.copy(body)) is Element
    assert type(copy.deepcopy(body)) is Element


def test_what_is_kept_between_stanzas_stays_small() -> None:
    p = StreamParser(10**6)
    p.feed(HEADER)
    p.feed(MESSAGE * 20 + b" " * 50_000)
    p.flush()
    # Nothing of the stanzas that were parsed stays behind; whitespace at most one text buffer's worth.
    assert len(p._raw) <= 4096


def test_a_released_parser_reads_on_with_the_stream_header_it_had() -> None:
    p = StreamParser(10**6)
    p.feed(HEADER)
    assert [type(e) for e in p.feed(MESSAGE + b"  ")] == [StanzaReceived]
    assert p.release()
    assert not p.release()
    # The header declared the prefix db: the new parser knows it.
    events = p.feed(b" <message to='a@localhost'><db:verify id='1'/><body>x</body></message>" + MESSAGE[:50])
    (first,) = [e.element for e in events if isinstance(e, StanzaReceived)]
    assert [c.tag for c in first] == ["{jabber:server:dialback}verify", qname(ns.CLIENT, "body")]
    assert [c.raw for c in first if isinstance(c, ParsedElement)] == [None, "<body>x</body>"]
    # Half a stanza is waiting: the parser is kept.
    assert not p.release()
    events = p.feed(MESSAGE[50:])
    (second,) = [e.element for e in events if isinstance(e, StanzaReceived)]
    assert serialize(second, ns.CLIENT) == serialize(stanzas(MESSAGE)[0], ns.CLIENT)
    assert p.release()
    events = p.feed(b"</stream:stream>")
    assert [type(e).__name__ for e in events] == ["StreamClosed"]
    assert not p.release()


def test_limits_hold_after_a_release() -> None:
    p = StreamParser(200)
    p.feed(HEADER)
    assert p.release()
    try:
        p.feed(b"<message><body>" + b"x" * 300 + b"</body></message>")
        p.flush()
    except StreamError as err:
        assert err.condition == "policy-violation"
    else:
        raise AssertionError("a stanza over the limit was accepted")


_names = st.sampled_from(["a", "b", "body", "x-y"])
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> Element:
    el = element(
        qname(draw(st.sampled_from([ns.CLIENT, "urn:example:a", "urn:example:b"])), draw(_names)),
        draw(st.dictionaries(_names, _text, max_size=2)),
        draw(st.none() | _text),
    )
    if depth < 2:
        for kid in draw(st.lists(_trees(depth + 1), max_size=3)):
            kid.tail = draw(st.none() | st.just(" "))
            el.append(kid)
    return el


@given(st.lists(_trees(1), max_size=4), st.integers(1, 50))
def test_any_payload_comes_back_the_same(children: list[Element], chunk: int) -> None:
    msg = element(qname(ns.CLIENT, "message"), {"to": "a@localhost"}, children=children)
    (parsed,) = stanzas(serialize(msg, ns.CLIENT).encode(), chunk)
    assert same_tree(parsed, msg)
    parsed.set("from", "b@localhost/r")
    msg.set("from", "b@localhost/r")
    (again,) = stanzas(serialize(parsed, ns.CLIENT).encode(), chunk)
    assert same_tree(again, msg)
    assert same_tree(parse_frame(serialize(parsed).encode(), 10**6), msg)
