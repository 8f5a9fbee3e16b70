"""Several senders' bursts to an offline account, the server killed mid-burst (DESIGN.md, Delivery
guarantee; XEP-0160, XEP-0198 §4).

The archive appends of messages in flight from several streams share commits (SQLite: those of
one event-loop turn; PostgreSQL: those waiting for one archive's lock). Whatever is shared, a
sender's ``<a h=.../>`` may count a message only once its offline copy and its archive copies are
committed. So after a SIGKILL, every message a sender saw acknowledged is in the recipient's
offline store and archive and in the sender's archive, once, in the order it was sent; of the
messages not acknowledged, those that made it follow them in order; and the stores' counts are
those of their items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from schnack.server.modules.mam import STORE as MAM
from schnack.server.modules.offline import STORE as OFFLINE
from schnack.server.storage import Storage, open_storage
from schnack.xmpp.parser import parse_frame

from ..server.storage.conftest import storage_url
from .slix import PASSWORD
from .test_durability import ServeProcess, SmClient, message
from .test_restart import admin, served_config

__all__ = ["storage_url"]

pytestmark = pytest.mark.asyncio

SENDERS = ("alice", "carol", "dave")
PER_SENDER = 400
# Each sender stops sending once the server acknowledged this many of its messages; the server
# is killed when all of them have, with up to IN_FLIGHT more of each on their way.
KILL_AT = 150
IN_FLIGHT = 100


@pytest.fixture
def process(tmp_path: Path, storage_url: str) -> Iterator[ServeProcess]:
    config = served_config(tmp_path, storage_url)
    for user in SENDERS[1:]:
        admin(config, "user", "add", "--password-stdin", f"{user}@localhost", stdin=f"{PASSWORD}\n")
    served = ServeProcess(config)
    try:
        yield served
    finally:
        served.stop()


def ids_of(sender: str) -> list[str]:
    return [f"{sender}-{i:04d}" for i in range(PER_SENDER)]


async def send_until_acknowledged(client: SmClient, sender: str) -> None:
    """Send to Bob's bare JID ten at a time, asking for an ack after each ten and keeping at most
    IN_FLIGHT unacknowledged, until the server acknowledged KILL_AT."""
    ids = ids_of(sender)
    for first in range(0, PER_SENDER, 10):
        await client.read(lambda: client.sent - client.server_h < IN_FLIGHT)
        if client.server_h >= KILL_AT:
            return
        for id in ids[first:first + 10]:
            client.send(message("bob@localhost", id))
        client.request()
    await client.read(lambda: client.server_h >= KILL_AT)


async def stored(storage: Storage, user: str, store: str) -> list[tuple[str, str]]:
    """(with, message id) of every item of the archive, in its order."""
    page = await storage.archive.query("localhost", user, store)
    assert page.complete
    return [(item.with_jid, parse_frame(item.payload, 10**7).get("id", "")) for item in page.items]


async def test_killed_server_has_stored_every_acknowledged_message_of_every_sender(
    process: ServeProcess, storage_url: str
) -> None:
    process.start()
    clients = {sender: await SmClient.login(process, sender, "desk") for sender in SENDERS}
    try:
        for client in clients.values():
            await client.enable()
        await asyncio.gather(*(send_until_acknowledged(clients[s], s) for s in SENDERS))
        acknowledged = {sender: client.server_h for sender, client in clients.items()}
        process.kill()
    finally:
        for client in clients.values():
            client.close()
    assert all(KILL_AT <= h < PER_SENDER for h in acknowledged.values()), acknowledged

    storage = await open_storage(storage_url)
    try:
        offline = await stored(storage, "bob", OFFLINE)
        archived = await stored(storage, "bob", MAM)
        for sender in SENDERS:
            jid = f"{sender}@localhost"
            for items in (offline, archived, await stored(storage, sender, MAM)):
                mine = [id for with_jid, id in items if with_jid in (jid, "bob@localhost") and id.startswith(sender)]
                assert mine == ids_of(sender)[:len(mine)], sender
                assert len(mine) >= acknowledged[sender], (sender, len(mine), acknowledged[sender])
        assert len(offline) == len({id for _, id in offline})
        assert await storage.archive.count("localhost", "bob", OFFLINE) == len(offline)
        assert await storage.archive.count("localhost", "bob", MAM) == len(archived)
    finally:
        await storage.close()
