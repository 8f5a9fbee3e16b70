"""A real ``schnack serve`` process stopped with SIGTERM while its clients do not answer.

RFC 6120 §4.4 and XEP-0198 §4: at shutdown every stream is closed with system-shutdown. Clients
that never read again (so never answer TLS close_notify, on direct TLS and after STARTTLS) do not
hold the process up: their connections are cut after a short grace. Every session has ended
before storage closes, so nothing logs against a closed store, and the messages those clients did
not acknowledge, like those queued for a session waiting to be resumed, are in offline storage
when the server runs again.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import cast
from xml.etree.ElementTree import Element

from schnack.xmpp import ns
from schnack.xmpp.xml import qname

from .test_restart import admin
from .wire import Wire, insecure_context

SCHNACK = [sys.executable, "-m", "schnack.cli"]
PASSWORD = "correct horse battery staple"
SM = "urn:xmpp:sm:3"
# Generous: Python starting on a busy machine. The grace the server gives a silent client is
# 2 s; before it had one, asyncio's TLS shutdown held each such connection for 30 s.
START_WAIT = 60
EXIT_WAIT = 20


class Serve:
    """``schnack serve`` with its log in a file; the ports it announced."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        """Start the server (its log appended to the file) and wait until it listens."""
        before = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *SCHNACK, "serve", "--config", str(self.config), stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        async with asyncio.timeout(START_WAIT):
            while (match := re.search(r"port (\d+) \(STARTTLS\) or (\d+) \(direct TLS\)",
                                      self.log.read_text()[before:])) is None:
                assert self.proc.returncode is None, self.log.read_text()
                await asyncio.sleep(0.1)
        self.ports = {"c2s": int(match.group(1)), "c2s_tls": int(match.group(2))}

    async def terminate(self) -> int:
        """SIGTERM; the exit status (the wait is generous, see EXIT_WAIT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(EXIT_WAIT):
            return await self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def connect(self, user: str, resource: str, *, direct_tls: bool) -> Wire:
        """A raw client, logged in and bound."""
        port = self.ports["c2s_tls" if direct_tls else "c2s"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=insecure_context() if direct_tls else None)
        wire = Wire(reader, writer)
        features = await wire.open()
        if not direct_tls:
            features = await wire.starttls()
        await wire.login(user, PASSWORD, features)
        await wire.bind(resource)
        return wire


async def enable_sm(wire: Wire, *, resume: bool = False) -> None:
    wire.send(f"<enable xmlns='{SM}' resume='{'true' if resume else 'false'}'/>")
    enabled = await wire.next()
    assert enabled is not None and enabled.tag == qname(SM, "enabled"), enabled


async def body_of_next_message(wire: Wire) -> Element:
    """Skip what is not a message with a body (presence, acks, requests); return that message."""
    while True:
        el = await wire.next(timeout=30)
        assert el is not None, "the stream ended"
        if el.tag == qname(ns.CLIENT, "message") and el.find(qname(ns.CLIENT, "body")) is not None:
            return el


async def test_sigterm_with_silent_tls_clients_exits_and_keeps_their_messages(tmp_path: Path) -> None:
    config = tmp_path / "schnack.toml"
    config.write_text(
        'domains = ["localhost"]\ndata_dir = "state"\n'
        '[listen]\nc2s = ["127.0.0.1:0"]\nc2s_tls = ["127.0.0.1:0"]\nhttp = []\nhttps = []\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "store.db"}"\n'
        '[modules.e2e]\npolicy = "optional"\n'
    )
    for user in ("alice", "bob", "carol", "dave"):
        admin(config, "user", "add", "--password-stdin", f"{user}@localhost", stdin=f"{PASSWORD}\n")
    server = Serve(config, tmp_path / "serve.log")
    wires: list[Wire] = []
    try:
        await server.start()
        silent = [await server.connect("alice", "phone", direct_tls=True),
                  await server.connect("carol", "phone", direct_tls=False)]
        hibernating = await server.connect("dave", "phone", direct_tls=True)
        bob = await server.connect("bob", "desk", direct_tls=True)
        wires += [*silent, hibernating, bob]
        for wire in silent:
            await enable_sm(wire)
            # From now on nothing is read: neither the message, nor the stream's end, nor close_notify.
            # uvloop's transports are none of asyncio's classes, but read the same way.
            transport = cast(asyncio.ReadTransport, wire.writer.transport)
            transport.pause_reading()
        await enable_sm(hibernating, resume=True)
        hibernating.writer.transport.abort()
        for user in ("alice", "carol", "dave"):
            bob.send(f"<message to='{user}@localhost/phone' type='chat' id='for-{user}'><body>hello {user}</body></message>")
        # Bob's stanzas are handled in order: once the ping is answered, the messages were routed.
        bob.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        while (reply := await bob.next()) is not None and reply.get("id") != "sync":
            pass
        assert reply is not None and reply.get("type") == "result"

        assert await server.terminate() == 0
        log = server.log.read_text()
        assert "server not started" not in log
        assert "Traceback" not in log
        assert "ended with 1 stanzas unacknowledged" in log

        await server.start()
        for user in ("alice", "carol", "dave"):
            wire = await server.connect(user, "laptop", direct_tls=True)
            wires.append(wire)
            wire.send("<presence/>")
            message = await body_of_next_message(wire)
            assert message.get("id") == f"for-{user}"
            assert message.findtext(qname(ns.CLIENT, "body")) == f"hello {user}"
            assert message.find(qname(ns.DELAY, "delay")) is not None
        assert "server not started" not in server.log.read_text()
    finally:
        for wire in wires:
            wire.writer.transport.abort()
        server.kill()
        if server.proc is not None:
            await server.proc.wait()
