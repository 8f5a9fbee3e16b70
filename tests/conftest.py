"""Shared fixtures: a started server with in-memory clients, or listening on real sockets."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.client import Client
from schnack.server.app import Server

from .harness import running


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
