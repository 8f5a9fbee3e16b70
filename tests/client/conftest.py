"""Fixtures for the client tests: the real server on real sockets, accounts, clients to close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from schnack.client import Client
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname

from ..harness import add_user, running

PASSWORD = "correct horse battery staple"
WAIT = 30

T = TypeVar("T")


@pytest.fixture
async def chat_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server that lets plaintext through (e2e policy "optional"), with alice and bob."""
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


def make_client(server: Server, jid: str, *, listener: str = "c2s", password: str = PASSWORD, **kwargs: Any) -> Client:
    """A client for ``jid`` on one of the server's listeners; certificates unchecked unless told."""
    host, port = server.bound[listener][0]
    kwargs.setdefault("verify", False)
    return Client(jid, password, host=host, port=port, direct_tls=listener == "c2s_tls", **kwargs)


async def online(server: Server, clients: list[Client], jid: str, **kwargs: Any) -> Client:
    """A connected client, closed at the end of the test."""
    client = make_client(server, jid, **kwargs)
    await client.connect()
    clients.append(client)
    return client


async def ping(client: Client) -> None:
    """XEP-0199: ping the server; its answer is the last stanza it sent the client so far."""
    await client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": client.account.domain},
                            children=[element(qname(ns.PING, "ping"))]))


async def next_of(items: AsyncIterator[T], check: Callable[[T], bool] = lambda _: True) -> T:
    """The next item that passes ``check``; the ones before it are skipped."""
    async with asyncio.timeout(WAIT):
        async for item in items:
            if check(item):
                return item
    raise AssertionError("the iteration ended")


def hold_catch_up(server: Server) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the server hold the archive queries (XEP-0313) it gets until the second event is set;
    the first is set once one is held."""
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(stanza: Stanza, _origin: object) -> None:
        if stanza.el.find("{urn:xmpp:mam:2}query") is not None and not release.is_set():
            held.set()
            await release.wait()

    server.hooks.add("pre-iq/self", hold, priority=1000)
    return held, release
