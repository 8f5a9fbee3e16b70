"""A store that fails under the server: the client's stanza gets a stanza error that says to try
again (internal-server-error, RFC 6120 §8.3.3.6, of type 'wait', §8.3.2), and the server goes on serving it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from schnack.server.app import Server
from schnack.server.storage.base import STORAGE_DOWN
from schnack.xmpp import ns

from ..harness import add_user, running
from ..server.storage.conftest import write_locked
from .slix import PASSWORD, SlixClient

pytestmark = pytest.mark.asyncio

NOTE = "<query xmlns='jabber:iq:private'><note xmlns='urn:example:notes'>{}</note></query>"


@pytest.fixture
async def alice(tmp_path: Path) -> AsyncIterator[tuple[Server, SlixClient]]:
    async with running(tmp_path, listen=True) as server:
        await add_user(server, "alice", PASSWORD)
        client = SlixClient(server, "alice@localhost/phone")
        assert await client.start()
        try:
            yield server, client
        finally:
            await client.stop()


async def test_a_write_that_sqlite_refuses_is_answered_try_again_and_the_server_goes_on(
        alice: tuple[Server, SlixClient]) -> None:
    """SQLite gives up on its write lock after its busy timeout ('database is locked'): the client
    is told internal-server-error of type 'wait', as when PostgreSQL is away, not a 'cancel' that
    says never to try again; once the lock is gone the same request is stored."""
    server, client = alice
    assert server.config.storage_url.startswith("sqlite:///")
    with write_locked(server.config.storage_url.removeprefix("sqlite://")), pytest.raises(IqError) as refused:
        await client.xmpp.make_iq_set(ET.fromstring(NOTE.format("first"))).send(timeout=60)
    error = refused.value.iq["error"]
    assert (error["condition"], error["type"], error["text"]) == ("internal-server-error", "wait", STORAGE_DOWN)
    await client.sync()
    await client.xmpp.make_iq_set(ET.fromstring(NOTE.format("again"))).send(timeout=60)
    ask = client.xmpp.make_iq_get()
    ask.append(ET.fromstring(NOTE.format("")))
    stored = await ask.send(timeout=60)
    assert stored.xml.findtext(f"{{{ns.PRIVATE}}}query/{{urn:example:notes}}note") == "again"
