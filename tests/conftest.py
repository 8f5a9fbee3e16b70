"""Shared fixtures: a started server with in-memory clients, or listening on real sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
import uvloop

from schnack.client import Client
from schnack.server.app import Server

from .harness import running

# Where the code under test runs in production: `schnack serve` runs on uvloop, the client
# commands on asyncio's own loop. The tests with other apps drive them through pseudo-terminals
# and browsers as those apps' users do, and stay on asyncio's loop with the client's.
_CLIENT_SIDE = ("tests/client/", "tests/cli/", "tests/interop/")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item,
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop each test runs on: the client's and the other apps' tests on asyncio's, all
    others on uvloop."""
    if item.path.relative_to(config.rootpath).as_posix().startswith(_CLIENT_SIDE):
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


def require_service(available: bool, reason: str) -> None:
    """Skip when a service a test needs is missing, but fail in CI where it must be there."""
    if not available:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A started server with default modules, not listening: drive it with harness.connect()."""
    async with running(tmp_path) as srv:
        yield srv


@pytest.fixture
async def live_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A started server listening on 127.0.0.1 ephemeral ports (see ``server.bound``)."""
    async with running(tmp_path, listen=True) as srv:
        yield srv


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Our clients to close when the test ends (tests that drive slixmpp define their own)."""
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()
