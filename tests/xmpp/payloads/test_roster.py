"""RFC 6121 §2.1 roster query payload: parsing, building and round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.roster import RosterError, RosterItem, RosterQuery
from schnack.xmpp.xml import serialize

RESULT = b"""<query xmlns='jabber:iq:roster' ver='ver11'>
  <item jid='romeo@example.net' name='Romeo' subscription='both'><group>Friends</group></item>
  <item jid='mercutio@example.com' name='Mercutio' subscription='from'/>
  <item jid='benvolio@example.net' subscription='none' ask='subscribe' approved='true'>
    <group>Friends</group><group>Verona</group><group/>
  </item>
</query>"""


def parse(data: bytes) -> RosterQuery:
    return RosterQuery.from_xml(parse_frame(data, 10**6))


def test_parse_result() -> None:
    query = parse(RESULT)
    assert query.ver == "ver11"
    assert query.items == (
        RosterItem(JID.parse("romeo@example.net"), "Romeo", "both", groups=("Friends",)),
        RosterItem(JID.parse("mercutio@example.com"), "Mercutio", "from"),
        RosterItem(JID.parse("benvolio@example.net"), None, "none", True, True, ("Friends", "Verona", "")),
    )


def test_round_trip() -> None:
    query = parse(RESULT)
    assert parse(serialize(query.to_xml()).encode()) == query
    built = RosterQuery((RosterItem(JID.parse("juliet@example.com"), subscription="remove"),))
    assert parse(serialize(built.to_xml()).encode()) == built
    assert parse(serialize(RosterQuery(ver="").to_xml()).encode()) == RosterQuery(ver="")


def test_written_form() -> None:
    item = RosterItem(JID.parse("nurse@example.com"), "Nurse", ask=True, groups=("Servants",))
    assert serialize(RosterQuery((item,), "v2").to_xml()) == (
        '<query xmlns="jabber:iq:roster" ver="v2"><item jid="nurse@example.com" name="Nurse" '
        'subscription="none" ask="subscribe"><group>Servants</group></item></query>'
    )


def test_unknown_subscription_reads_as_none() -> None:
    (item,) = parse(
        b"<query xmlns='jabber:iq:roster'><item jid='a@b' subscription='sometimes'/></query>"
    ).items
    assert item.subscription == "none"


def test_address_is_normalised() -> None:
    (item,) = parse(b"<query xmlns='jabber:iq:roster'><item jid='Romeo@Example.NET'/></query>").items
    assert str(item.jid) == "romeo@example.net"


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<query xmlns='jabber:iq:roster'><item name='x'/></query>", "bad-request"),
        (b"<query xmlns='jabber:iq:roster'><item jid='a@b@c'/></query>", "jid-malformed"),
        (b"<query xmlns='jabber:iq:private'/>", "bad-request"),
    ],
)
def test_errors(data: bytes, condition: str) -> None:
    with pytest.raises(RosterError) as err:
        parse(data)
    assert err.value.condition == condition
