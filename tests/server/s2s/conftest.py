"""What several s2s test files share: our server with another that vouches for a peer's domain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.app import Server

from ...harness import make_config


@pytest.fixture
async def receiving(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    """Our server, and a second one that is the authoritative server of the raw peer's domain."""
    secret = "the other domain's dialback secret"
    authority = Server(make_config(tmp_path / "b", domains=["b.example"], listen={"s2s": ["127.0.0.1:0"]},
                                   s2s={"enabled": True, "dialback_secret": secret}))
    await authority.start()
    host, port = authority.bound["s2s"][0]
    server = Server(make_config(tmp_path / "a", listen={"s2s": ["127.0.0.1:0"]},
                                s2s={"enabled": True, "hosts": {"b.example": f"{host}:{port}"}}))
    await server.start()
    try:
        yield server, secret
    finally:
        await server.stop()
        await authority.stop()
