"""A client in a process of its own, for tests that kill it (:func:`held_client` starts one): it
logs in as ``argv[1]`` on the server at ``argv[2]`` port ``argv[3]``, with its state in ``argv[4]``,
and writes ``ready`` once caught up and in the groups ``argv[6:]``, if any. The first time it sets
about what ``argv[5]`` names (``decrypt``: an OMEMO message, chat or group; ``join``: entering a
group, as after an invitation) it stops there until the server asked for an ack (XEP-0198 §4) and
was answered; then it writes ``answered`` and waits to be killed. With ``read`` it marks the
first message that arrives read (XEP-0333), writes ``read`` once that returned, and waits to be
killed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal
from xml.etree.ElementTree import Element

from schnack.client import Client
from schnack.client.features.groups import Groups
from schnack.client.features.sm import StreamManagement
from schnack.client.omemo import Omemo
from schnack.server.app import Server
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.sm import REQUEST

from .conftest import PASSWORD, WAIT, ping


@contextlib.asynccontextmanager
async def held_client(server: Server, jid: str, directory: Path, *groups: JID,
                      hold: Literal["decrypt", "join", "read"] = "decrypt",
                      via: int | None = None) -> AsyncIterator[asyncio.StreamReader]:
    """``jid``'s client in a process of its own, with its state in ``directory``, held at ``hold``,
    once it is ready (and in ``groups``); what it writes from then on. It logs in through the
    relay on 127.0.0.1 port ``via`` (tests/client/proxy.py) if given. It is killed (SIGKILL) at
    the end."""
    host, port = ("127.0.0.1", via) if via is not None else server.bound["c2s"][0]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__, jid, host, str(port), str(directory), hold, *map(str, groups),
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await process.stdout.readline() == b"ready\n"
        yield process.stdout
    finally:
        process.kill()
        await process.wait()


async def main(jid: str, host: str, port: str, directory: str, hold: str, *groups: str) -> None:
    answered = asyncio.Event()
    nonza = StreamManagement.nonza

    def answering(self: StreamManagement, el: Element) -> bool:
        known = nonza(self, el)
        if el.tag == REQUEST:
            answered.set()
        return known

    async def held(*_: Any) -> None:
        answered.clear()
        # The server asks for an ack once what it sent is not acknowledged: the answer to a ping
        # is not, whether or not an <r/> came before this.
        await ping(client)
        await answered.wait()
        print("answered", flush=True)
        await asyncio.Event().wait()

    StreamManagement.nonza = answering  # type: ignore[method-assign]
    if hold != "read":
        setattr(Omemo if hold == "decrypt" else Groups, hold, held)
    client = Client(jid, PASSWORD, host=host, port=int(port), verify=False, direct_tls=False, data_dir=Path(directory))
    inbox = client.messages()
    await client.connect()
    await client.caught_up()
    for group in groups:
        await client.groups.entered(group)
    print("ready", flush=True)
    if hold == "read":
        message = await anext(inbox)
        await client.mark_read(message.sender.bare, message.id or "")
        print("read", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
