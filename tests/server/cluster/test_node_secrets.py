"""Secrets a node makes on first start and keeps in storage: nodes starting for the first time at
once on one PostgreSQL database all come to use the same one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from schnack.server.app import Server
from schnack.server.cluster import LocalBus
from schnack.server.cluster.local import LocalHub
from schnack.server.modules.upload import Upload

from ...harness import make_config
from ..storage.conftest import postgres_schema


async def test_nodes_starting_together_on_a_fresh_database_share_their_secrets(tmp_path: Path) -> None:
    """A slot URL signed by one node (XEP-0363 §5) must be accepted by the others' HTTP PUT, and a
    dialback key (XEP-0185 §3) made by one must verify on the others: the first secret stored
    wins for every node, whichever stored its own after it."""
    hub = LocalHub()
    async with postgres_schema() as (url, _, _):
        servers = [
            Server(make_config(tmp_path / name, storage={"url": url}, s2s={"enabled": True}, modules={"upload": {}}),
                   bus=LocalBus(name, hub=hub, heartbeat_interval=0.1, node_ttl=0.6))
            for name in ("a", "b", "c")
        ]
        started = await asyncio.gather(*(server.start(listen=False) for server in servers), return_exceptions=True)
        try:
            assert started == [None] * len(servers), started
            uploads = [server.modules["upload"] for server in servers]
            assert all(isinstance(upload, Upload) for upload in uploads)
            signatures = {upload.sign("localhost", "slot", "a.txt", 3, None, 2_000_000_000)
                          for upload in uploads if isinstance(upload, Upload)}
            assert len(signatures) == 1, signatures
            assert len({server.s2s.secret for server in servers}) == 1
        finally:
            for server, outcome in zip(servers, started, strict=True):
                if outcome is None:
                    await server.stop()
