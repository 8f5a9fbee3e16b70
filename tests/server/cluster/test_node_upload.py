"""XEP-0363 on a cluster: nodes on one PostgreSQL database, sharing one upload directory, take
PUTs for the same slots."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from schnack.server.app import Server
from schnack.server.blobs import LocalBlobStore
from schnack.server.cluster import LocalBus, RedisBus
from schnack.server.cluster.local import LocalHub
from schnack.server.modules.upload import Upload
from schnack.xmpp.payloads.upload import NS, Slot

from ...client.proxy import Proxy
from ...conftest import require_service
from ...harness import Client, add_user, connect, make_config
from ..storage.conftest import postgres_schema
from .conftest import Cluster, eventually, redis_available, through


def _target(server: Server, url: str) -> str:
    """The slot's URL on the node's plain HTTP listener."""
    host, port = server.bound["http"][0]
    parts = urlsplit(url)
    return f"http://{host}:{port}{parts.path}?{parts.query}"


async def _slot(client: Client, name: str) -> Slot:
    await client.send(f"<iq type='get' id='{name}' to='upload.localhost'><request xmlns='{NS}' "
                      f"filename='{name}' size='2000' content-type='application/octet-stream'/></iq>")
    (reply,) = await client.expect()
    element = reply.find(f"{{{NS}}}slot")
    assert element is not None, reply
    return Slot.from_xml(element)


async def _put(server: Server, url: str, body: bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.put(
            _target(server, url), data=body, headers={"Content-Type": "application/octet-stream"}) as response:
        return response.status, response.headers.get("Retry-After", "")


async def _half_put(server: Server, url: str, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A PUT to ``server`` that sends half its body and waits; returns once the node is storing it."""
    upload = server.modules["upload"]
    assert isinstance(upload, Upload)
    blobs = upload.blobs
    assert isinstance(blobs, LocalBlobStore)
    host, port = server.bound["http"][0]
    reader, writer = await asyncio.open_connection(host, port)
    parts = urlsplit(url)
    writer.write(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: localhost\r\n"
                 f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body[: len(body) // 2])
    await eventually(lambda: asyncio.to_thread(blobs.partial_files), bool)
    return reader, writer


async def _rest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> bytes:
    """Send the rest of a :func:`_half_put`; the status code it gets."""
    writer.write(body[len(body) // 2:])
    status_line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    return status_line.split()[1]


async def test_two_puts_to_one_slot_on_two_nodes_store_one_file(tmp_path: Path) -> None:
    """§6: a slot is for one file. While node a stores the first PUT, a second PUT of the same
    slot on node b gets 409, as it would on node a, and the URL serves the first file."""
    hub = LocalHub()
    shared = tmp_path / "uploads"
    async with postgres_schema() as (url, _, _):
        a, b = (
            Server(make_config(tmp_path / name, storage={"url": url}, modules={"upload": {"directory": str(shared)}}),
                   bus=LocalBus(name, hub=hub, heartbeat_interval=0.1, node_ttl=0.6))
            for name in ("a", "b")
        )  # fmt: skip
        await a.start(listen=True)
        try:
            await b.start(listen=True)
            try:
                await add_user(a, "alice")
                client = await connect(a, "alice@localhost/phone")
                slot = await _slot(client, "f.bin")
                first, second = os.urandom(2000), os.urandom(2000)
                # The first PUT sends half its body to node a, which is then storing it.
                reader, writer = await _half_put(a, slot.put, first)
                assert (await _put(b, slot.put, second))[0] == 409
                assert await _rest(reader, writer, first) == b"201"
                async with aiohttp.ClientSession() as http, http.get(_target(b, slot.get)) as got:
                    assert got.status == 200 and await got.read() == first
            finally:
                await b.stop()
        finally:
            await a.stop()


@contextlib.asynccontextmanager
async def one_cut_off(tmp_path: Path, proxy: Proxy, modules: dict[str, Any]) -> AsyncIterator[tuple[Server, Server]]:
    """Started servers a and b with ``modules`` on Redis and one PostgreSQL schema; a reaches
    Redis through ``proxy``, so that the test can cut it off from the cluster."""
    cluster = Cluster("redis")
    reason = await redis_available(cluster.url)
    require_service(reason is None, f"Redis not reachable at {cluster.url}: {reason}")
    async with postgres_schema() as (url, _, _):
        a, b = (
            Server(make_config(tmp_path / name, storage={"url": url}, modules=modules),
                   bus=RedisBus(redis_url, name, prefix=cluster.prefix, heartbeat_interval=0.1, node_ttl=1.0,
                                op_timeout=0.5))
            for name, redis_url in (("a", through(proxy)), ("b", cluster.url))
        )  # fmt: skip
        try:
            await a.start(listen=True)
            await b.start(listen=True)
            yield a, b
        finally:
            await b.stop()
            await a.stop()
            await cluster.close()


async def cut_off(proxy: Proxy, a: Server, b: Server) -> None:
    """Cut ``a`` off from Redis (through ``proxy``) until ``b`` declares it dead."""
    proxy.refusing = True
    proxy.cut()
    await eventually(b.cluster.bus.nodes, lambda live: a.cluster.bus.node not in live)


async def test_a_node_cut_off_from_the_cluster_neither_starts_nor_finishes_a_put(
        tmp_path: Path, redis_proxy: Proxy) -> None:
    """Node a stores a PUT when Redis goes out of its reach; node b declares it dead and stores
    the client's retry of the slot. The body's end then reaches node a: a stores nothing over b's
    file but answers 503, as it does to a PUT that comes while it cannot tell whether it is still a
    member of the cluster. Back in the cluster, as another process, it stores again."""
    modules = {"upload": {"directory": str(tmp_path / "uploads")}}
    async with one_cut_off(tmp_path, redis_proxy, modules) as (a, b):
        await add_user(a, "alice")
        client = await connect(a, "alice@localhost/phone")
        first_slot, second_slot = await _slot(client, "f.bin"), await _slot(client, "g.bin")
        first, second = os.urandom(2000), os.urandom(2000)
        reader, writer = await _half_put(a, first_slot.put, first)
        await cut_off(redis_proxy, a, b)
        status, retry_after = await _put(a, second_slot.put, second)
        assert status == 503 and retry_after, status
        assert await _put(b, first_slot.put, second) == (201, "")
        assert await _rest(reader, writer, first) == b"503"
        async with aiohttp.ClientSession() as http, http.get(_target(b, first_slot.get)) as got:
            assert got.status == 200 and await got.read() == second
        redis_proxy.refusing = False
        await eventually(lambda: _put(a, second_slot.put, second), lambda outcome: outcome[0] == 201)
