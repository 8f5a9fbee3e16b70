"""Stanza parsing and replies (RFC 6120 §8)."""

from __future__ import annotations

import pytest

from schnack.xmpp import ns
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import qname


def stanza(text: str) -> Stanza:
    return Stanza.parse(parse_frame(text.encode(), 10_000))


def test_routing_attributes() -> None:
    s = stanza("<iq xmlns='jabber:client' type='get' id='1' to='Localhost' from='a@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (s.kind, s.type, s.id, s.namespace) == ("iq", "get", "1", ns.CLIENT)
    assert s.to == JID.parse("localhost")
    assert s.from_ == JID.parse("a@localhost/r")
    assert s.payload is not None and s.payload.tag == qname(ns.PING, "ping")


def test_bad_address_is_jid_malformed() -> None:
    with pytest.raises(StanzaError) as err:
        stanza("<message xmlns='jabber:client' to='a@@b'/>")
    assert err.value.condition == "jid-malformed"


def test_result_swaps_addresses() -> None:
    s = stanza("<iq xmlns='jabber:client' type='get' id='7' to='localhost' from='a@localhost/r'><q xmlns='x'/></iq>")
    reply = s.result()
    assert reply.attrib == {"type": "result", "id": "7", "to": "a@localhost/r", "from": "localhost"}
    assert len(reply) == 0


def test_iq_error_keeps_the_payload_other_errors_do_not() -> None:
    iq = stanza("<iq xmlns='jabber:client' type='set' id='1' from='a@localhost/r'><q xmlns='x'/></iq>")
    reply = iq.error(StanzaError("bad-request"))
    assert [c.tag for c in reply] == ["{x}q", qname(ns.CLIENT, "error")]
    msg = stanza("<message xmlns='jabber:client' id='2' from='a@localhost/r' to='b@localhost'><body>secret</body></message>")
    reply = msg.error(StanzaError("service-unavailable"))
    assert reply.get("type") == "error" and reply.get("to") == "a@localhost/r"
    assert [c.tag for c in reply] == [qname(ns.CLIENT, "error")]


def test_set_addresses() -> None:
    s = stanza("<message xmlns='jabber:client'/>")
    s.set_from(JID.parse("a@localhost/r"))
    s.set_to(JID.parse("b@localhost"))
    assert s.el.get("from") == "a@localhost/r" and s.el.get("to") == "b@localhost"


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        ("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>", "an iq needs an id"),
        ("<iq id='1' type='fetch'><ping xmlns='urn:xmpp:ping'/></iq>", "iq type must be"),
        ("<iq id='1' type='set'/>", "exactly one child"),
        ("<iq id='1' type='get'><a xmlns='x'/><b xmlns='x'/></iq>", "exactly one child"),
        ("<presence type='away'/>", "unknown presence type 'away'"),
        ("<iq id='1' type='result'/>", None),
        ("<presence type='unsubscribed'/>", None),
        ("<message type='whatever'/>", None),
    ],
)
def test_shape_error(xml: str, problem: str | None) -> None:
    """RFC 6120 §8.2.3, RFC 6121 §4.7.1: malformed IQs and presence are bad-request, the rest pass."""
    error = stanza(xml.replace(" ", " xmlns='jabber:client' ", 1)).shape_error()
    if problem is None:
        assert error is None
    else:
        assert error is not None and error.condition == "bad-request" and problem in (error.text or "")
