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
  and received, and the test compares them. An error reply that comes after the acknowledgement
  (the server holds a session's messages, error replies too, behind the stored ones it is
  delivering, as after a Redis outage, while the XEP-0198 answer does not wait) is a refusal,
  as the client library takes it: it marks the message failed, and the chatter sends it again.
- :class:`GroupSeat`: each chatter is also a member of one group (:data:`ROOM`) and sends numbered
  messages there, doing what real group chat clients do: it enters the room after every login,
  pings itself in the room (XEP-0410) and enters again when the room no longer knows it (or
  refuses a message with not-acceptable), reads the room's archive (XEP-0313) after the last
  stanza-id it saw, and shows each message once per stanza-id (XEP-0359).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import asyncpg

from bench.ports import free_port
from schnack.client import Client, Disconnected, XmppError
from schnack.client.errors import ClientError
from schnack.server import admin as admin_channel
from schnack.server.cluster.sentinel import open_redis
from schnack.server.modules.muc.room import RoomState
from schnack.server.storage import open_storage
from schnack.server.storage.base import RoomAffiliation
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.mam import FIN, RESULT, Filter, Fin, MamError, Query, Result
from schnack.xmpp.payloads.rsm import ResultSet
from schnack.xmpp.payloads.sid import STANZA_ID
from schnack.xmpp.sasl import derive_credentials
from schnack.xmpp.xml import element, qname

from .test_restart import SCHNACK

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "correct horse battery staple"
# Generous bounds for a loaded machine; the tests end as soon as the ledger balances.
SETTLE = 60.0
# The group every chatter is a member of.
ROOM = JID("ledger", "groups.localhost")
_MUC = "http://jabber.org/protocol/muc"
_MUC_USER = qname(f"{_MUC}#user", "x")
_BODY = qname(ns.CLIENT, "body")
# How often a group client checks that it is still in the room (XEP-0410).
SELF_PING = 1.0


async def add_accounts(storage_url: str, usernames: Iterable[str]) -> None:
    """Create the accounts (password :data:`PASSWORD`) in the cluster's storage."""
    storage = await open_storage(storage_url)
    try:
        for username in usernames:
            await storage.accounts.create("localhost", username, derive_credentials(PASSWORD))
    finally:
        await storage.close()


async def add_group(storage_url: str, owner: str, members: Iterable[str]) -> None:
    """Create :data:`ROOM`, a private group (the service's default configuration) of ``owner`` and ``members``."""
    storage = await open_storage(storage_url)
    try:
        assert ROOM.local is not None
        await storage.muc.save_room(ROOM.domain, ROOM.local, RoomState().to_json())
        await storage.muc.set_affiliation(ROOM.domain, ROOM.local, RoomAffiliation(f"{owner}@localhost", "owner"))
        for member in members:
            await storage.muc.set_affiliation(ROOM.domain, ROOM.local,
                                              RoomAffiliation(f"{member}@localhost", "member"))
    finally:
        await storage.close()


async def room_owner(redis_url: str, prefix: str) -> str | None:
    """The node that owns :data:`ROOM` (its claim in Redis), if any does."""
    client = open_redis(redis_url, 2.0)
    try:
        owner = await client.get(f"{prefix}claim:room:{ROOM}")
    finally:
        await client.aclose()
    return owner.decode() if isinstance(owner, bytes) else owner


async def clear_prefix(redis_url: str, prefix: str) -> None:
    """Remove a cluster's keys from a Redis that outlives it."""
    client = open_redis(redis_url, 2.0)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class Node:
    """One ``schnack serve`` process of a cluster."""

    def __init__(self, workdir: Path, name: str, storage_url: str, redis_url: str, prefix: str, *,
                 http: bool = False, extra: str = "") -> None:
        """``http``: also a plain HTTP listener (on :attr:`http_port`); ``extra``: more TOML, after the rest."""
        self.name = name
        self.port = free_port()
        self.http_port = free_port() if http else None
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        http_listen = f'"127.0.0.1:{self.http_port}"' if http else ""
        self.config.write_text(
            f'domains = ["localhost"]\ndata_dir = "state-{name}"\nlog_level = "warning"\n'
            f'[listen]\nc2s = ["127.0.0.1:{self.port}"]\nc2s_tls = []\nhttp = [{http_listen}]\nhttps = []\n'
            f'[storage]\nurl = "{storage_url}"\n'
            f'[cluster]\nredis_url = "{redis_url}"\nnode_name = "{name}"\nkey_prefix = "{prefix}"\n'
            f'heartbeat_interval = 0.3\nnode_ttl = 1.5\npublic_address = "127.0.0.1:{self.port}"\n'
            # The load is plaintext: OMEMO is not what these tests are about.
            '[modules.e2e]\npolicy = "optional"\n' + extra
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
    """Round robin over the nodes' ports, skipping nodes that refuse the connection; with a
    :attr:`header`, each connection to a node starts with it, as HAProxy's ``send-proxy`` starts
    it with a PROXY header (proxy-protocol.txt)."""

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = list(ports)
        self.port = 0
        self.header = b""
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
            upstream.write(self.header)
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
    # Group messages: every member but the sender shows each one.
    members: set[str] = field(default_factory=set)
    group_sent: set[str] = field(default_factory=set)

    def missing(self) -> list[tuple[str, str]]:
        """Acknowledged messages a recipient has not shown (yet): (recipient, id)."""
        missing: list[tuple[str, str]] = []
        for i in self.acked:
            sender, to = self.sent[i]
            recipients = self.members - {sender} if i in self.group_sent else {to}
            missing.extend((recipient, i) for recipient in recipients if (recipient, i) not in self.received)
        return sorted(missing)

    def duplicated(self) -> list[tuple[str, str]]:
        """Messages a recipient showed more than once."""
        return sorted(key for key, count in self.received.items() if count > 1)

    def pending(self) -> list[str]:
        """Messages neither acknowledged nor refused (yet)."""
        return sorted(i for i in self.sent if i not in self.acked and i not in self.refused)

    def summary(self) -> str:
        missing = self.missing()
        return (f"{len(self.sent)} sent ({len(self.group_sent)} to the group), {len(self.acked)} acknowledged, "
                f"{len(self.refused)} refused "
                f"({', '.join(sorted(set(self.refused.values()))) or 'none'}), {sum(self.received.values())} shown, "
                f"{len(self.pending())} pending, {len(missing)} missing "
                f"({sum(i in self.group_sent for _, i in missing)} of group messages), "
                f"{len(self.duplicated())} duplicated")


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
        self._closing = False
        # What each message sent here said, and the error replies that came for them.
        self._texts: dict[str, tuple[str, bool]] = {}
        self._errors: dict[str, XmppError] = {}
        self.group = GroupSeat(self)
        self.client.on_message(self._on_error)

    async def start(self) -> None:
        await self.client.connect()
        self._spawn(self._read())
        self._spawn(self._watch())
        await self.group.start()

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

    async def send_to_group(self) -> None:
        """Send the next numbered message to the group."""
        self._count += 1
        await self._send(f"ledger {self.account} {self._count}", group=True)

    async def _send(self, text: str, *, group: bool = False) -> None:
        if group:
            message = element(qname(ns.CLIENT, "message"), {"type": "groupchat", "to": str(ROOM)},
                              children=[element(_BODY, text=text)])
            message_id = self.client.outbox.send(message, ROOM, text, encrypted=False)
            self.ledger.group_sent.add(message_id)
        else:
            message_id = await self.client.send(self.peer, text, encrypted=False)
        self.ledger.sent[message_id] = (self.account, str(ROOM) if group else self.peer)
        self._texts[message_id] = (text, group)
        self._spawn(self._track(message_id))

    async def _track(self, message_id: str) -> None:
        try:
            await self.client.acknowledged(message_id, timeout=SETTLE)
        except XmppError as err:
            await self._refused(message_id, err)
            return
        except ClientError:
            return
        late = self._errors.get(message_id)
        if late is not None:
            await self._refused(message_id, late)
            return
        self.ledger.acked.add(message_id)

    def _on_error(self, el: Element) -> None:
        """An error reply to a message sent here; after the acknowledgement, it turns it into a refusal."""
        message_id = el.get("id")
        if el.get("type") != "error" or message_id is None or message_id not in self._texts:
            return
        self._errors[message_id] = XmppError.from_stanza(el)
        if message_id in self.ledger.acked:
            self.ledger.acked.discard(message_id)
            self._spawn(self._refused(message_id, self._errors[message_id]))

    async def _refused(self, message_id: str, err: XmppError) -> None:
        self.ledger.refused[message_id] = f"{err.condition}/{err.type}"
        text, group = self._texts[message_id]
        if err.type == "wait":
            await asyncio.sleep(0.5)
            await self._send(text, group=group)
        elif group and err.condition == "not-acceptable":
            # §7.4: the room no longer knows us (its node died): enter again, then resend.
            await self.group.rejoin()
            await self._send(text, group=group)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        await self.client.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class GroupSeat:
    """A chatter's place in :data:`ROOM`, kept as real group chat clients keep theirs (see the
    module docstring); what it shows goes into the ledger by message id."""

    def __init__(self, chatter: Chatter) -> None:
        self.chatter = chatter
        self.client = chatter.client
        self.nick = chatter.account.partition("@")[0]
        self.occupant = JID(ROOM.local, ROOM.domain, self.nick)
        # The room's stanza-ids shown, and the last one seen live or in the archive.
        self.seen: set[str] = set()
        self.position: str | None = None
        self.joined = asyncio.Event()
        self._entering: asyncio.Future[Element] | None = None
        self._rejoining: asyncio.Task[None] | None = None
        self._queries: dict[str, list[Result]] = {}
        self.client.on_message(self._on_message)
        self.client.on_presence(self._on_presence)
        self.client.on_connect(self._on_connect)

    async def start(self) -> None:
        self.chatter.ledger.members.add(self.chatter.account)
        self.chatter._spawn(self._watch())
        await self.rejoin()
        self.chatter._spawn(self._self_ping())

    async def _watch(self) -> None:
        """Out of the room with the link: what arrives after a reconnect is no sign of having seen
        everything before it (the archive after the last stanza-id seen tells)."""
        async for event in self.client.events():
            if isinstance(event, Disconnected):
                self.joined.clear()

    async def _on_connect(self) -> None:
        self.joined.clear()
        self.rejoin()

    def rejoin(self) -> asyncio.Task[None]:
        """Enter the room and read what it archived meanwhile (one such task at a time)."""
        if self._rejoining is None or self._rejoining.done():
            self.joined.clear()
            self._rejoining = asyncio.ensure_future(self._enter())
            self.chatter._tasks.add(self._rejoining)
            self._rejoining.add_done_callback(self.chatter._tasks.discard)
        return self._rejoining

    async def _enter(self) -> None:
        while not self.chatter._closing:
            self._entering = asyncio.get_running_loop().create_future()
            presence = element(qname(ns.CLIENT, "presence"), {"to": str(self.occupant)}, children=[
                element(qname(_MUC, "x"), children=[element(qname(_MUC, "history"), {"maxstanzas": "0"})])])
            try:
                await self.client.send_element(presence, timeout=SETTLE)
                async with asyncio.timeout(5):
                    answer = await self._entering
                if answer.get("type") != "error":
                    await self._catch_up()
                    self.joined.set()
                    return
            except (ClientError, TimeoutError, MamError):
                pass
            await asyncio.sleep(0.3)

    def _on_presence(self, el: Element) -> None:
        if el.get("from") == str(self.occupant) and el.get("type") == "unavailable" and self.joined.is_set():
            self.rejoin()  # the room let us go (§7.14): enter again and catch up
            return
        entering = self._entering
        # The answer to entering is an error or our presence in the room; an unavailable one is the
        # room letting an earlier presence of ours go, which may come after we asked to enter.
        if (el.get("from") == str(self.occupant) and entering is not None and not entering.done()
                and (el.get("type") == "error" or (el.get("type") != "unavailable" and el.find(_MUC_USER) is not None))):
            entering.set_result(el)

    async def _self_ping(self) -> None:
        """XEP-0410 §3: still in the room? If not (not-acceptable, or the room forgot us), enter again."""
        while not self.chatter._closing:
            await asyncio.sleep(SELF_PING)
            if not self.joined.is_set() or not self.client.connected:
                continue
            ping = element(qname(ns.CLIENT, "iq"), {"type": "get", "to": str(self.occupant)},
                           children=[element(qname("urn:xmpp:ping", "ping"))])
            try:
                await self.client.iq(ping, timeout=5)
            except XmppError as err:
                if err.condition in ("not-acceptable", "item-not-found"):
                    self.rejoin()
            except ClientError:
                pass

    def _on_message(self, el: Element) -> None:
        if JID.parse(el.get("from") or "").bare != ROOM:
            return
        result = el.find(RESULT)
        if result is not None:
            with contextlib.suppress(MamError):
                found = Result.from_xml(result)
                self._queries.get(found.queryid or "", []).append(found)
            return
        if el.get("type") == "groupchat":
            stanza_id = next((s.get("id") for s in el.iter(STANZA_ID) if s.get("by") == str(ROOM)), None)
            if stanza_id is not None and self.joined.is_set():
                self.position = stanza_id
            self._show(el, stanza_id)

    def _show(self, el: Element, stanza_id: str | None) -> None:
        """Show a group message once per stanza-id; our own come back too and are not counted."""
        if stanza_id is None or stanza_id in self.seen:
            return
        self.seen.add(stanza_id)
        text = el.findtext(_BODY) or ""
        sender = JID.parse(el.get("from") or "").resource
        if text.startswith("ledger ") and sender != self.nick and el.get("id"):
            self.chatter.ledger.received[(self.chatter.account, el.get("id", ""))] += 1

    async def _catch_up(self) -> None:
        """XEP-0313 §5 on the room: page through what came after the last stanza-id seen."""
        after = self.position
        while True:
            queryid = secrets.token_hex(6)
            start = None if after is not None else datetime.now(UTC) - timedelta(hours=1)
            query = Query(queryid, Filter(start=start), ResultSet(max=100, after=after))
            results: list[Result] = []
            self._queries[queryid] = results
            try:
                reply = await self.client.iq(element(qname(ns.CLIENT, "iq"), {"type": "set", "to": str(ROOM)},
                                                     children=[query.to_xml()]), timeout=15)
            finally:
                self._queries.pop(queryid, None)
            fin_el = reply.find(FIN)
            if fin_el is None:
                raise MamError("bad-request", "no <fin/>")
            fin = Fin.from_xml(fin_el)
            for result in results:
                self._show(result.forwarded.stanza, result.id)
            last = results[-1].id if results else fin.rsm.last
            if last is not None:
                after = self.position = last
            if fin.complete or not results:
                return


async def chat(chatters: list[Chatter], stop: asyncio.Event, interval: float, group_every: int = 3) -> None:
    """Every chatter sends a message every ``interval`` seconds until ``stop`` is set, and one to
    the group every ``group_every`` rounds."""
    rounds = 0
    while not stop.is_set():
        rounds += 1
        for chatter in chatters:
            await chatter.send_one()
            if rounds % group_every == 0:
                await chatter.send_to_group()
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
