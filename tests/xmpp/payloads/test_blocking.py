"""XEP-0191 blocking payloads: parsing, building, round trips, and the JID matching rules."""

from __future__ import annotations

import pytest

from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.blocking import (
    Block,
    BlockingError,
    Blocklist,
    Unblock,
    blocked_condition,
    blocks,
)
from schnack.xmpp.xml import serialize

RESULT = b"""<blocklist xmlns='urn:xmpp:blocking'>
  <item jid='romeo@montague.net'/>
  <item jid='iago@shakespeare.lit/evil'/>
  <item jid='spam.example'/>
</blocklist>"""


def jids(*texts: str) -> tuple[JID, ...]:
    return tuple(JID.parse(text) for text in texts)


def test_parse_blocklist_result() -> None:
    parsed = Blocklist.from_xml(parse_frame(RESULT, 10**6))
    assert parsed.items == jids("romeo@montague.net", "iago@shakespeare.lit/evil", "spam.example")


@pytest.mark.parametrize(
    "payload",
    [
        Blocklist(),
        Blocklist(jids("romeo@montague.net", "spam.example")),
        Block(jids("romeo@montague.net")),
        Block(jids("a@b/c", "b", "b/c")),
        Unblock(),
        Unblock(jids("romeo@montague.net")),
    ],
)
def test_round_trip(payload: Blocklist | Block | Unblock) -> None:
    assert type(payload).from_xml(parse_frame(serialize(payload.to_xml()).encode(), 10**6)) == payload


def test_written_form() -> None:
    assert serialize(Block(jids("romeo@montague.net")).to_xml()) == (
        '<block xmlns="urn:xmpp:blocking"><item jid="romeo@montague.net"/></block>'
    )
    assert serialize(Unblock().to_xml()) == '<unblock xmlns="urn:xmpp:blocking"/>'
    assert serialize(blocked_condition()) == '<blocked xmlns="urn:xmpp:blocking:errors"/>'


def test_addresses_are_normalised() -> None:
    parsed = Block.from_xml(parse_frame(b"<block xmlns='urn:xmpp:blocking'><item jid='Romeo@Montague.NET/Home'/></block>", 10**6))
    assert parsed.items == (JID("romeo", "montague.net", "Home"),)


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (b"<block xmlns='urn:xmpp:blocking'/>", "bad-request"),
        (b"<block xmlns='urn:xmpp:blocking'><other/></block>", "bad-request"),
        (b"<block xmlns='urn:xmpp:blocking'><item/></block>", "bad-request"),
        (b"<block xmlns='urn:xmpp:blocking'><item jid='@nobody'/></block>", "jid-malformed"),
        (b"<unblock xmlns='urn:xmpp:blocking'><item jid='a@b/'/></unblock>", "jid-malformed"),
        (b"<block xmlns='urn:xmpp:blocking:other'><item jid='a@b'/></block>", "bad-request"),
    ],
)
def test_malformed(xml: bytes, condition: str) -> None:
    el = parse_frame(xml, 10**6)
    cls = Unblock if el.tag.endswith("unblock") else Block
    with pytest.raises(BlockingError) as caught:
        cls.from_xml(el)
    assert caught.value.condition == condition


def test_unblock_without_items_means_all() -> None:
    assert Unblock.from_xml(parse_frame(b"<unblock xmlns='urn:xmpp:blocking'/>", 10**6)).items == ()


@pytest.mark.parametrize(
    ("entry", "address", "covered"),
    [
        # user@domain/resource: only that resource.
        ("romeo@montague.net/orchard", "romeo@montague.net/orchard", True),
        ("romeo@montague.net/orchard", "romeo@montague.net/garden", False),
        ("romeo@montague.net/orchard", "romeo@montague.net", False),
        # user@domain: any resource, and the bare JID itself.
        ("romeo@montague.net", "romeo@montague.net", True),
        ("romeo@montague.net", "romeo@montague.net/garden", True),
        ("romeo@montague.net", "juliet@montague.net", False),
        ("romeo@montague.net", "montague.net", False),
        # domain/resource: only that resource of the domain.
        ("montague.net/bot", "montague.net/bot", True),
        ("montague.net/bot", "montague.net", False),
        ("montague.net/bot", "romeo@montague.net/bot", False),
        # domain: itself, everyone at it, and its subdomains.
        ("montague.net", "montague.net", True),
        ("montague.net", "romeo@montague.net/garden", True),
        ("montague.net", "montague.net/bot", True),
        ("montague.net", "chat.montague.net", True),
        ("montague.net", "nurse@rooms.chat.montague.net/x", True),
        ("montague.net", "evilmontague.net", False),
        ("montague.net", "montague.net.example", False),
        ("chat.montague.net", "montague.net", False),
    ],
)
def test_matching(entry: str, address: str, covered: bool) -> None:
    assert blocks(frozenset({JID.parse(entry)}), JID.parse(address)) is covered


def test_empty_list_blocks_nothing() -> None:
    assert not blocks(frozenset(), JID.parse("romeo@montague.net"))
