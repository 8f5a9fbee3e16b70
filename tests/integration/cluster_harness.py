"""A cluster of real ``schnack serve`` processes behind a load balancer, a private PostgreSQL, and
a delivery ledger, for the chaos tests (test_cluster_chaos.py).

- :class:`Node`: one ``schnack serve`` process on a fixed port (so that a restarted node comes
  back where the balancer looks for it), its log in a file of the test's directory.
- :class:`Balancer`: what HAProxy does in front of a cluster (docs/deploy.md): each new client
  connection goes to the next node, round robin, skipping nodes that refuse it (dead, draining).
- :class:`PrivatePostgres`: a PostgreSQL server of the test's own (``initdb`` + ``pg_ctl`` in a
  temporary directory, as the ``postgres`` user when run as root), which can be restarted.
- :class:`Ledger` and :class:`Chatter`: clients (our client library, with stream management,
  reconnection, the persistent outbox and the archive catch-up) send each other numbered
  messages at a steady rate; the ledger writes down every message sent, acknowledged, refused
  and received, and the test compares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from schnack.client import Client, Disconnected, XmppError
from schnack.client.errors import ClientError
from schnack.server import admin as admin_channel
from schnack.server.storage import open_storage
from schnack.xmpp.sasl import derive_credentials

from ..server.cluster.conftest import free_port
from .test_restart import SCHNACK

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "correct horse battery staple"
# Generous bounds for a loaded machine; the tests end as soon as the ledger balances.
SETTLE = 60.0


async def add_accounts(storage_url: str, usernames: Iterable[str]) -> None:
    """Create the accounts (password :data:`PASSWORD`) in the cluster's storage."""
    storage = await open_storage(storage_url)
    try:
        for username in usernames:
            await storage.accounts.create("localhost", username, derive_credentials(PASSWORD))
    finally:
        await storage.close()


async def clear_prefix(redis_url: str, prefix: str) -> None:
    """Remove a cluster's keys from a Redis that outlives it."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class Node:
    """One ``schnack serve`` process of a cluster."""

    def __init__(self, workdir: Path, name: str, storage_url: str, redis_url: str, prefix: str) -> None:
        self.name = name
        self.port = free_port()
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        self.config.write_text(
            f'domains = ["localhost"]\ndata_dir = "state-{name}"\nlog_level = "warning"\n'
            f'[listen]\nc2s = ["127.0.0.1:{self.port}"]\nc2s_tls = []\nhttp = []\nhttps = []\n'
            f'[storage]\nurl = "{storage_url}"\n'
            f'[cluster]\nredis_url = "{redis_url}"\nnode_name = "{name}"\nkey_prefix = "{prefix}"\n'
            f'heartbeat_interval = 0.3\nnode_ttl = 1.5\npublic_address = "127.0.0.1:{self.port}"\n'
            # The load is plaintext: OMEMO is not what these tests are about.
            '[modules.e2e]\npolicy = "optional"\n'
        )
        self.proc: asyncio.subprocess.Process | None = None
        # Where a test's raw connection (wire.py) finds it, as on an in-process Server.
        self.bound = {"c2s": [("127.0.0.1", self.port)]}

    async def start(self) -> None:
        """Start the process and wait until it serves."""
        log = self.log.open("a")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *SCHNACK, "serve", "--config", str(self.config), stdout=asyncio.subprocess.DEVNULL, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()
        started = self.log.stat().st_size if self.log.exists() else 0
        deadline = time.monotonic() + 60
        while "add a user" not in self.log.read_text()[started:]:
            assert self.proc.returncode is None, f"node {self.name} exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"node {self.name} did not start: {self.log.read_text()[-3000:]}"
            await asyncio.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL: no drain, no clean shutdown."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def drain(self, *, cli: bool = True) -> dict[str, Any]:
        """Drain the node with ``schnack admin drain --json`` (or, quicker on a loaded machine, the
        same request on its admin channel); its answer, once the process has exited."""
        if cli:
            reply: dict[str, Any] = json.loads(await admin(self.config, "drain", "--json"))
        else:
            reply = await admin_channel.request(self.config.parent / f"state-{self.name}", "drain")
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), 60)
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]
        return reply

    async def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def admin(config: Path, *args: str, stdin: str | None = None) -> str:
    """Run ``schnack admin ...`` and return its output; it must succeed."""
    proc = await asyncio.create_subprocess_exec(
        *SCHNACK, "admin", *args, "--config", str(config), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 90)
    assert proc.returncode == 0, err.decode()
    return out.decode()


class Balancer:
    """Round robin over the nodes' ports, skipping nodes that refuse the connection."""

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = list(ports)
        self.port = 0
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.ports)):
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            try:
                upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self._writers |= {writer, upstream}
            for pump in (self._pump(reader, upstream), self._pump(upstream_reader, writer)):
                task = asyncio.ensure_future(pump)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # One side ended: so does the other, as a TCP balancer passes a close on.
            self._writers.discard(writer)
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary directory, restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's private tmp_path: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="schnack-pg-"))
        self._user = "postgres" if os.geteuid() == 0 else None

    @staticmethod
    def available() -> str | None:
        """None when initdb and pg_ctl are installed (and a postgres user exists if root), else why not."""
        if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
            return f"PostgreSQL server binaries are not installed in {PG_BIN}"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root, and there is no postgres user to run initdb as"
        return None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [*(["runuser", "-u", self._user, "--"] if self._user else []), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"

    async def init(self) -> None:
        if self._user is not None:
            shutil.chown(self.dir, self._user)
        await asyncio.to_thread(self._run, str(PG_BIN / "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
                                "-D", str(self.dir / "data"))

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        await asyncio.to_thread(self._run, str(PG_BIN / "pg_ctl"), "start", "-w", "-D", str(self.dir / "data"),
                                "-l", str(self.dir / "log"), "-o", options)

    async def stop(self) -> None:
        """Stop it (fast shutdown: connections are cut, as in a restart for maintenance)."""
        await asyncio.to_thread(self._run, str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D",
                                str(self.dir / "data"))

    async def running(self) -> bool:
        try:
            conn = await asyncpg.connect(self.url, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close()
        return True

    async def remove(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Ledger:
    """Every message sent, acknowledged, refused and received, by message id (its origin-id)."""

    sent: dict[str, tuple[str, str]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    received: Counter[tuple[str, str]] = field(default_factory=Counter)

    def missing(self) -> list[tuple[str, str]]:
        """Acknowledged messages their recipient has not shown (yet): (recipient, id)."""
        return sorted((self.sent[i][1], i) for i in self.acked if (self.sent[i][1], i) not in self.received)

    def duplicated(self) -> list[tuple[str, str]]:
        """Messages a recipient showed more than once."""
        return sorted(key for key, count in self.received.items() if count > 1)

    def pending(self) -> list[str]:
        """Messages neither acknowledged nor refused (yet)."""
        return sorted(i for i in self.sent if i not in self.acked and i not in self.refused)

    def summary(self) -> str:
        return (f"{len(self.sent)} sent, {len(self.acked)} acknowledged, {len(self.refused)} refused "
                f"({', '.join(sorted(set(self.refused.values()))) or 'none'}), {sum(self.received.values())} shown, "
                f"{len(self.pending())} pending, {len(self.missing())} missing, {len(self.duplicated())} duplicated")


class Chatter:
    """One account's client: sends numbered messages to a peer, records what it sees."""

    def __init__(self, account: str, peer: str, port: int, ledger: Ledger) -> None:
        self.account = account
        self.peer = peer
        self.ledger = ledger
        self.client = Client(f"{account}/chaos", PASSWORD, host="127.0.0.1", port=port, direct_tls=False,
                             verify=False, backoff=(0.2, 1.0), timeout=15.0, keepalive=5.0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0
        # Why the link went down, each time it did.
        self.disconnects: list[str] = []

    async def start(self) -> None:
        await self.client.connect()
        self._spawn(self._read())
        self._spawn(self._watch())

    async def _watch(self) -> None:
        async for event in self.client.events():
            if isinstance(event, Disconnected):
                self.disconnects.append(event.reason)

    async def _read(self) -> None:
        async for message in self.client.messages():
            if message.outgoing or message.error is not None or message.id is None:
                continue
            if (message.text or "").startswith("ledger "):
                self.ledger.received[(self.account, message.id)] += 1

    async def send_one(self) -> None:
        """Send the next numbered message; a refused one (a temporary error) is sent again, as a
        user would tap "retry", under a new id."""
        self._count += 1
        await self._send(f"ledger {self.account} {self._count}")

    async def _send(self, text: str) -> None:
        message_id = await self.client.send(self.peer, text, encrypted=False)
        self.ledger.sent[message_id] = (self.account, self.peer)
        self._spawn(self._track(message_id, text))

    async def _track(self, message_id: str, text: str) -> None:
        try:
            await self.client.acknowledged(message_id, timeout=SETTLE)
        except XmppError as err:
            self.ledger.refused[message_id] = f"{err.condition}/{err.type}"
            if err.type == "wait":
                await asyncio.sleep(0.5)
                await self._send(text)
            return
        except ClientError:
            return
        self.ledger.acked.add(message_id)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await self.client.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def chat(chatters: list[Chatter], stop: asyncio.Event, interval: float) -> None:
    """Every chatter sends a message every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        for chatter in chatters:
            await chatter.send_one()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def balanced(ledger: Ledger, timeout: float = SETTLE) -> None:
    """Wait until every message was acknowledged or refused, and every acknowledged one shown."""
    deadline = time.monotonic() + timeout
    while ledger.pending() or ledger.missing():
        if time.monotonic() > deadline:
            raise AssertionError(f"the ledger does not balance: {ledger.summary()}; "
                                 f"missing {ledger.missing()[:10]}, pending {ledger.pending()[:10]}")
        await asyncio.sleep(0.2)
