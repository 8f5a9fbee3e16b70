"""Element building and the namespace-aware serializer (RFC 6120 §4.8, §11)."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from hypothesis import given
from hypothesis import strategies as st

from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.xml import child, element, qname, serialize, split, sub, text_of


def test_default_namespace_only_where_it_changes() -> None:
    msg = element(qname(ns.CLIENT, "message"), {"to": "a@b", "type": None})
    sub(msg, qname(ns.CLIENT, "body"), text="hi")
    receipt = sub(msg, qname("urn:xmpp:receipts", "request"))
    sub(receipt, qname("urn:xmpp:receipts", "inner"))
    assert serialize(msg, ns.CLIENT) == (
        '<message to="a@b"><body>hi</body><request xmlns="urn:xmpp:receipts"><inner/></request></message>'
    )
    assert serialize(msg).startswith(f'<message xmlns="{ns.CLIENT}" to="a@b">')


def test_escaping_text_and_attributes() -> None:
    el = element("{x}a", {"q": "\"<&>'\n\t"}, text="<&>\"'")
    assert serialize(el) == '<a xmlns="x" q="&quot;&lt;&amp;&gt;\'&#10;&#9;">&lt;&amp;&gt;"\'</a>'
    back = parse_frame(serialize(el).encode(), 1000)
    assert back.get("q") == "\"<&>'\n\t"
    assert back.text == "<&>\"'"


def test_namespaced_and_xml_lang_attributes() -> None:
    el = element("{x}a", {qname(ns.XML, "lang"): "de", "{urn:other}flag": "1"})
    text = serialize(el)
    assert 'xml:lang="de"' in text
    back = parse_frame(text.encode(), 1000)
    assert back.get(qname(ns.XML, "lang")) == "de"
    assert back.get("{urn:other}flag") == "1"


def test_mixed_content_keeps_tails() -> None:
    el = parse_frame(b"<p xmlns='x'>a<b/>c<i>d</i>e</p>", 1000)
    assert serialize(el) == '<p xmlns="x">a<b/>c<i>d</i>e</p>'


def test_helpers() -> None:
    assert split("{urn:a}b") == ("urn:a", "b")
    assert split("plain") == (None, "plain")
    parent = element("{x}p", children=[element("{x}c", text=""), element("{x}d", text="t")])
    assert text_of(parent, "{x}c") == ""
    assert text_of(parent, "{x}d") == "t"
    assert text_of(parent, "{x}missing") is None
    assert child(parent, "{x}d") is parent[1]


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
namespaces = st.sampled_from(["jabber:client", "urn:xmpp:a", "urn:xmpp:b"])


@st.composite
def trees(draw: st.DrawFn, depth: int = 3) -> Element:
    el = element(qname(draw(namespaces), draw(names)), {draw(names): draw(st.text(max_size=10, alphabet="ab<&\"'"))})
    if depth:
        el.extend(draw(st.lists(trees(depth - 1), max_size=3)))
    return el


@given(trees())
def test_serialize_parse_round_trip(tree: Element) -> None:
    text = serialize(tree)
    assert serialize(parse_frame(text.encode(), 10**6)) == text
