"""Contact discovery by phone number (Quicksy's phone book) from the client, against the real
server: verified numbers are found, the answer is kept, and a repeat costs an empty result."""

from __future__ import annotations

from pathlib import Path

import pytest

from schnack.client import Client
from schnack.client.features.phone_book import DiscoveryError
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.phone_book import PHONE_BOOK, Entry, PhoneBook, answer_hash
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname

from ...harness import add_user, running
from ..conftest import PASSWORD, make_client
from ..phone import phone_server, sign_up

ANNA = "+4915123456789"
BEN = "+4915123456780"
NOBODY = "+4915123456781"


def requests_seen(server: Server) -> list[str | None]:
    """The ``ver`` of each phone book request the server gets, in order."""
    seen: list[str | None] = []

    async def watch(stanza: Stanza, _origin: object) -> None:
        payload = stanza.el.find(PHONE_BOOK)
        if payload is not None:
            seen.append(payload.get("ver"))

    server.hooks.add("pre-iq/host", watch)
    return seen


async def test_discovery_finds_verified_numbers_and_keeps_the_answer(tmp_path: Path) -> None:
    async with phone_server(tmp_path) as (server, hook):
        anna = await sign_up(server, hook, ANNA)
        await sign_up(server, hook, BEN)
        # An account the operator named by a number is not verified: not found.
        await add_user(server, NOBODY, PASSWORD)
        seen = requests_seen(server)
        client = make_client(server, f"{ANNA}@localhost", password=anna, reconnect=False, available=False,
                             data_dir=tmp_path / "anna")
        await client.connect()
        try:
            found = await client.discover([BEN, NOBODY, ANNA, BEN])
            expected = {BEN: (JID.parse(f"{BEN}@localhost"),), ANNA: (JID.parse(f"{ANNA}@localhost"),)}
            assert found == expected
            assert seen == [None]
            # The same question again: the server hears the ver of the answer kept, and the
            # answer is the same.
            ver = answer_hash(Entry(number, jids) for number, jids in expected.items())
            assert await client.discover([ANNA, BEN, NOBODY]) == expected
            assert seen == [None, ver]
            # That ver makes the server's result empty.
            request = PhoneBook((Entry(BEN), Entry(ANNA), Entry(NOBODY)), ver).to_xml()
            reply = await client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": "localhost"},
                                            children=[request]))
            assert len(reply) == 0
            # Another question has another answer, which replaces the one kept.
            assert await client.discover([NOBODY]) == {}
        finally:
            await client.close()
        # The answer outlives the client: the next one, on the same store, sends its ver.
        again = make_client(server, f"{ANNA}@localhost", password=anna, reconnect=False, available=False,
                            data_dir=tmp_path / "anna")
        await again.connect()
        try:
            assert await again.discover([NOBODY]) == {}
            assert seen[-1] == answer_hash(())
        finally:
            await again.close()


async def test_a_server_without_discovery(tmp_path: Path, clients: list[Client]) -> None:
    async with running(tmp_path, listen=True) as server:
        await add_user(server, "alice", PASSWORD)
        client = make_client(server, "alice@localhost", reconnect=False, available=False)
        await client.connect()
        clients.append(client)
        with pytest.raises(DiscoveryError, match=r"^localhost does not offer contact discovery by phone number$"):
            await client.discover([ANNA])
        with pytest.raises(ValueError, match=r"E.164"):
            await client.discover(["0151 23456789"])


async def test_the_daily_limit(tmp_path: Path, clients: list[Client]) -> None:
    async with phone_server(tmp_path, discovery_limit=2) as (server, hook):
        anna = await sign_up(server, hook, ANNA)
        client = make_client(server, f"{ANNA}@localhost", password=anna, reconnect=False, available=False)
        await client.connect()
        clients.append(client)
        assert await client.discover([BEN, NOBODY]) == {}
        with pytest.raises(DiscoveryError, match=r"^localhost refused the contact discovery: .*try again in \d+ s"):
            await client.discover([ANNA])
