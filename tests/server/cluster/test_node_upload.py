"""XEP-0363 on a cluster: nodes on one PostgreSQL database, sharing one upload directory, take
PUTs for the same slots."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from schnack.server.app import Server
from schnack.server.blobs import LocalBlobStore
from schnack.server.cluster import LocalBus
from schnack.server.cluster.local import LocalHub
from schnack.server.modules.upload import Upload
from schnack.xmpp.payloads.upload import NS, Slot

from ...harness import add_user, connect, make_config
from ..storage.conftest import postgres_schema
from .conftest import eventually


def _target(server: Server, url: str) -> str:
    """The slot's URL on the node's plain HTTP listener."""
    host, port = server.bound["http"][0]
    parts = urlsplit(url)
    return f"http://{host}:{port}{parts.path}?{parts.query}"


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
                await client.send(f"<iq type='get' id='s' to='upload.localhost'><request xmlns='{NS}' "
                                  "filename='f.bin' size='2000' content-type='application/octet-stream'/></iq>")
                (reply,) = await client.expect()
                element = reply.find(f"{{{NS}}}slot")
                assert element is not None
                slot = Slot.from_xml(element)
                first, second = os.urandom(2000), os.urandom(2000)
                upload = a.modules["upload"]
                assert isinstance(upload, Upload)
                blobs = upload.blobs
                assert isinstance(blobs, LocalBlobStore)
                # The first PUT sends half its body to node a, which is then storing it.
                host, port = a.bound["http"][0]
                reader, writer = await asyncio.open_connection(host, port)
                parts = urlsplit(slot.put)
                writer.write(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: localhost\r\n"
                             "Content-Type: application/octet-stream\r\nContent-Length: 2000\r\n\r\n".encode()
                             + first[:1000])
                await eventually(lambda: asyncio.to_thread(blobs.partial_files), bool)
                async with aiohttp.ClientSession() as http:
                    headers = {"Content-Type": "application/octet-stream"}
                    async with http.put(_target(b, slot.put), data=second, headers=headers) as response:
                        assert response.status == 409, await response.text()
                    writer.write(first[1000:])
                    status_line = await asyncio.wait_for(reader.readline(), 30)
                    writer.close()
                    assert status_line.split()[1] == b"201", status_line
                    async with http.get(_target(b, slot.get)) as got:
                        assert got.status == 200 and await got.read() == first
            finally:
                await b.stop()
        finally:
            await a.stop()
