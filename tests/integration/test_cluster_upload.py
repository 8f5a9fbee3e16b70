"""XEP-0363 §6 in a cluster of real processes: a slot takes one file, and a node killed during a
PUT does not keep the slot from the client's retry on another node.

Two ``schnack serve`` processes on the local PostgreSQL and Redis share one upload directory. A
PUT claims its slot in storage; the claim names the node and when it started, so that the claim
of a node the cluster knows to be dead (its heartbeat is gone) is taken over by the next PUT,
while that of a live node still refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from schnack.server.blobs import LocalBlobStore
from schnack.server.cluster.sentinel import open_redis
from schnack.xmpp.payloads.upload import NS, Slot

from ..conftest import require_service
from ..server.cluster.conftest import REDIS_URL, eventually, redis_available
from ..server.storage.conftest import postgres_schema
from .cluster_harness import Node, add_accounts, clear_prefix
from .test_cluster_sm import login

SIZE = 200_000
TYPE = "application/octet-stream"


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, str]]:
    """Nodes a and b with HTTP listeners and one upload directory, the account alice; the prefix
    of the cluster's keys in Redis."""
    reason = await redis_available(REDIS_URL)
    require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    prefix = f"schnack-upload-{secrets.token_hex(4)}:"
    extra = f'[modules.upload]\ndirectory = "{tmp_path / "uploads"}"\n'
    async with postgres_schema() as (storage_url, _, _):
        await add_accounts(storage_url, ["alice"])
        a, b = (Node(tmp_path, name, storage_url, REDIS_URL, prefix, http=True, extra=extra) for name in ("a", "b"))
        try:
            await a.start()
            await b.start()
            yield a, b, prefix
        finally:
            await a.stop()
            await b.stop()
            await clear_prefix(REDIS_URL, prefix)


async def slot(node: Node) -> Slot:
    """A slot for a file of :data:`SIZE` bytes, asked for by alice on ``node``."""
    wire = await login(node, "alice")
    try:
        await wire.bind("phone")
        wire.send(f"<iq type='get' id='s' to='upload.localhost'><request xmlns='{NS}' filename='f.bin' "
                  f"size='{SIZE}' content-type='{TYPE}'/></iq>")
        reply = await wire.next()
        assert reply is not None and reply.get("id") == "s", reply
        element = reply.find(f"{{{NS}}}slot")
        assert element is not None, reply
        return Slot.from_xml(element)
    finally:
        wire.close()


def on(node: Node, url: str) -> str:
    """The slot's URL on ``node``'s HTTP listener."""
    parts = urlsplit(url)
    return f"http://127.0.0.1:{node.http_port}{parts.path}?{parts.query}"


async def put(http: aiohttp.ClientSession, node: Node, url: str, body: bytes) -> int:
    async with http.put(on(node, url), data=body, headers={"Content-Type": TYPE}) as response:
        return response.status


async def half_put(node: Node, url: str, body: bytes, blobs: LocalBlobStore) -> asyncio.StreamWriter:
    """A PUT to ``node`` that sends half its body and waits; returns once the node is storing it."""
    assert node.http_port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    parts = urlsplit(url)
    writer.write(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {TYPE}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    await eventually(lambda: asyncio.to_thread(blobs.partial_files), bool, timeout=30)
    return writer


async def dead(prefix: str, node: Node) -> None:
    """Wait until the cluster knows ``node`` is dead: its heartbeat expired in Redis."""
    client = open_redis(REDIS_URL, 2.0)
    try:
        await eventually(lambda: client.exists(f"{prefix}hb:{node.name}"), lambda found: not found, timeout=30)
    finally:
        await client.aclose()


async def test_a_retry_after_the_node_storing_a_put_was_killed_stores_on_another(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b, prefix):
        target = await slot(a)
        blobs = LocalBlobStore(tmp_path / "uploads")
        body = os.urandom(SIZE)
        writer = await half_put(a, target.put, body, blobs)
        async with aiohttp.ClientSession() as http:
            # Node a lives and stores the first PUT: the slot takes no second one.
            assert await put(http, b, target.put, body) == 409
            await a.kill()
            writer.close()
            await dead(prefix, a)
            # Nothing was stored; the client tries again, on node b, and may.
            assert await put(http, b, target.put, body) == 201
            async with http.get(on(b, target.get)) as got:
                assert got.status == 200 and await got.read() == body
            assert await put(http, b, target.put, body) == 409


async def test_a_retry_on_the_killed_node_started_again_stores(tmp_path: Path) -> None:
    """A node back under its name after a crash is another process: its old claim is dead too."""
    async with two_nodes(tmp_path) as (a, b, _prefix):
        target = await slot(a)
        body = os.urandom(SIZE)
        writer = await half_put(a, target.put, body, LocalBlobStore(tmp_path / "uploads"))
        await a.kill()
        writer.close()
        await a.start()
        async with aiohttp.ClientSession() as http:
            assert await put(http, a, target.put, body) == 201
            async with http.get(on(b, target.get)) as got:
                assert got.status == 200 and await got.read() == body
