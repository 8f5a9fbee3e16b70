"""Router dispatch (RFC 6120 §10): a stanza from a bound session through the route keys, the
modules' handlers and into the recipient's output, on an in-memory server with default modules."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from xml.etree.ElementTree import Element

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.stanza import Stanza
from tests.harness import Client, add_user, connect, make_config

from .conftest import DOMAIN, OMEMO

T = TypeVar("T")


class Bench:
    """A started server with alice and bob bound, driven from a private event loop (the
    benchmark fixture is synchronous)."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = Server(make_config(tmp_path))
        self.run(self.server.start(listen=False))
        self.run(add_user(self.server, "alice"))
        self.run(add_user(self.server, "bob"))
        self.alice: Client = self.run(connect(self.server, f"alice@{DOMAIN}/phone"))
        self.bob: Client = self.run(connect(self.server, f"bob@{DOMAIN}/phone"))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.close()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    yield b
    b.close()


def _stanza(xml: str) -> Element:
    head, sep, rest = xml.partition(">")
    return parse_frame(f"{head} xmlns='{ns.CLIENT}'{sep}{rest}".encode(), 10**6)


def test_route_omemo_message_to_a_full_jid(bench: Bench, benchmark: BenchmarkFixture) -> None:
    """Includes what the default modules do per message: the archive write above all."""
    session = bench.alice.stream.session
    assert session is not None

    def route() -> None:
        stanza = Stanza.parse(_stanza(OMEMO))
        stanza.set_from(session.jid)
        bench.run(bench.server.router.route(stanza, session))

    benchmark(route)
    assert any(el.tag == f"{{{ns.CLIENT}}}message" for el in bench.bob.take())


def test_route_ping_to_the_host(bench: Bench, benchmark: BenchmarkFixture) -> None:
    """Dispatch alone: an IQ answered by one handler, nothing stored."""
    session = bench.alice.stream.session
    assert session is not None
    ping = f"<iq type='get' id='p' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"

    def route() -> None:
        stanza = Stanza.parse(_stanza(ping))
        stanza.set_from(session.jid)
        bench.run(bench.server.router.route(stanza, session))

    benchmark(route)
    answers = bench.alice.take()
    assert answers and all(el.get("type") == "result" for el in answers)
