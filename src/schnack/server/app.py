"""The server: configuration, storage, router, modules and listeners put together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from aiohttp import web

from ..xmpp.errors import StreamError
from ..xmpp.jid import JID
from ..xmpp.sasl import ScramCredential
from . import modules as builtin_modules
from . import net, proxy_protocol, websocket
from .admin import SOCKET_NAME, AdminChannel
from .background import Background
from .c2s import C2SStream
from .cluster import ClusterBus, open_bus
from .cluster.bus import ACCOUNTS
from .cluster.drain import Drained, drain
from .cluster.node import ClusterNode
from .cluster.recovery import BusRecovery
from .component import Components, serve_component
from .config import Config, ConfigError, parse_address, parse_section
from .deletion import Deletions
from .hooks import Hooks
from .link import Link
from .module import Module
from .router import Router
from .s2s import S2S
from .sessions import SessionRegistry
from .storage import Storage, open_storage
from .throttle import LoginThrottle
from .tls import TlsConfig

log = logging.getLogger(__name__)

_WATCHDOG_PERIOD = 5.0
# At shutdown, how long the connections may take to end (once closed, or cut after their grace)
# with their session-closed handlers, before modules and storage stop regardless.
_TEARDOWN_LIMIT = 15.0
# How long HTTP requests still running at shutdown (uploads) may take to finish.
_HTTP_SHUTDOWN = 5.0


class _Watched(Protocol):
    last_read: float
    last_write: float
    stream: C2SStream | None

    def keepalive(self) -> None: ...

    def close_now(self) -> None: ...

    def abort(self) -> None: ...


def build_modules(server: Server, config: Config) -> dict[str, Module[Any]]:
    """Instantiate every enabled module with its checked options, in dependency order."""
    classes = {name: builtin_modules.load(name) for name in config.modules}
    for name, cls in classes.items():
        for dep in cls.depends:
            if dep not in classes:
                raise ConfigError(f"modules.{name}", f"needs module {dep!r}, which is not enabled")
    ordered: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in trail:
            raise ConfigError(f"modules.{name}", "circular module dependency")
        for dep in classes[name].depends:
            visit(dep, (*trail, name))
        ordered.append(name)

    for name in classes:
        visit(name, ())
    return {
        name: classes[name](server, parse_section(classes[name].Options, config.modules[name], f"modules.{name}"))
        for name in ordered
    }


class Server:
    """One schnack node."""

    def __init__(self, config: Config, *, bus: ClusterBus | None = None) -> None:
        self.config = config
        self.hosts = frozenset(config.domains)
        # Domains served by a module (XEP-0030 items of a host), claimed in Module.setup().
        self.services: dict[str, str] = {}
        self.hooks = Hooks()
        self.sessions = SessionRegistry()
        self.router = Router(self)
        # The cluster bus of config.cluster; a caller may pass one (nodes sharing an in-process hub).
        self.cluster = ClusterNode(self, bus if bus is not None else open_bus(config.cluster))
        # Offline storage reaches online sessions again after a bus outage (cluster/recovery.py).
        self.bus_recovery = BusRecovery(self)
        limits = config.limits
        self.throttle = LoginThrottle(limits.failed_logins_per_account, limits.failed_logins_per_ip)
        self.connections: set[Any] = set()
        self.connections_ended = 0
        # Component domains are claimed first, so a module claiming one of them fails to start.
        self.components = Components(self)
        # Other servers (RFC 6120 s2s): takes the remote route keys when [s2s] enabled.
        self.s2s = S2S(self)
        self.modules = build_modules(self, config)
        self.http_app = web.Application()
        self.http_app[websocket.SERVER_KEY] = self
        self.http_app.router.add_get(websocket.PATH, websocket.handle)
        self._storage: Storage | None = None
        self._tls: TlsConfig | None = None
        self._servers: list[asyncio.Server] = []
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._admin = AdminChannel(self, config.data_dir / SOCKET_NAME)
        self.bound: dict[str, list[tuple[str, int]]] = {}
        # A drain (cluster/drain.py) is under way; ``drained`` is set once it is over and the
        # process may stop.
        self.draining = False
        self.drained = asyncio.Event()
        self._tasks = Background(log, "ending the sessions of a deleted account failed")
        self.deletions = Deletions(self)
        bus = self.cluster.bus
        bus.on_changed(self._account_changed)
        # Deletions may have been announced while the subscription was broken.
        bus.on_resubscribed(self._deletions_missed)
        for module in self.modules.values():
            module.setup()

    @property
    def storage(self) -> Storage:
        """The open storage backend."""
        assert self._storage is not None, "server not started"
        return self._storage

    @property
    def tls(self) -> TlsConfig:
        """Certificate and TLS contexts."""
        assert self._tls is not None, "server not started"
        return self._tls

    async def delete_account(self, host: str, username: str) -> bool:
        """Delete an account and all its data (XEP-0077 §3.2 for every way an account goes).

        Modules hear ``user-deleting`` while the data still exists (the roster tells the
        contacts), then storage forgets the account, then ``user-deleted`` lets modules drop
        what they keep elsewhere; a deletion left pending by a stopped process is finished
        (deletion.py). Sessions here are left to the caller, which answers first
        (:meth:`end_account_sessions`); the other nodes of a cluster hear of the deletion and end
        theirs. False if there was no such account.
        """
        return await self.deletions.delete(host, username)

    async def create_account(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> None:
        """Create an account (AlreadyExists if the name is taken), once a deletion of the name
        left pending is finished: the new account starts with nothing of the old one's."""
        await self.deletions.settle(host, username)
        await self.storage.accounts.create(host, username, credentials)

    def end_account_sessions(self, host: str, username: str) -> None:
        """XEP-0077 §3.2: every session of a deleted account on this node ends, not-authorized."""
        for session in self.sessions.resources(JID(username, host)):
            session.close(StreamError("not-authorized", "the account was deleted"))

    def _account_changed(self, store: str, account: str) -> None:
        """Another node deleted an account: its sessions here end too."""
        if store != ACCOUNTS:
            return
        jid = JID.parse(account)
        if self.sessions.resources(jid):
            self._tasks.spawn(self._end_if_deleted(jid))

    def _deletions_missed(self) -> None:
        """The subscription broke, and the news of a deletion may have been lost with it: every
        account with sessions here is looked up once."""
        accounts = {session.jid.bare for session in self.sessions}
        if accounts:
            self._tasks.spawn(self._end_deleted(accounts))

    async def _end_deleted(self, accounts: set[JID]) -> None:
        for jid in accounts:
            await self._end_if_deleted(jid)

    async def _end_if_deleted(self, jid: JID) -> None:
        assert jid.local is not None
        # News that comes late must not end the sessions of a new account of that name.
        if await self.storage.accounts.get(jid.domain, jid.local) is None:
            self.end_account_sessions(jid.domain, jid.local)

    async def start(self, *, listen: bool = True) -> None:
        """Open storage, start modules, then listen (tests of modules alone skip listening)."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._tls = TlsConfig.for_domains(config.domains, config.data_dir, config.tls.cert, config.tls.key)
        self._storage = await open_storage(config.storage_url)
        for module in self.modules.values():
            await module.start()
        await self.cluster.start()
        # Before anyone logs in: a deletion left pending by a stopped process is finished.
        await self.deletions.sweep()
        await self.s2s.start(listen=listen)
        if listen:
            await self._listen()
            await self._admin.start()
        self._watchdog = asyncio.create_task(self._watch())

    async def _listen(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        # A balancer in front (docs/deploy.md) names each client in a PROXY header.
        proxies = proxy_protocol.networks(config.listen.proxy_from)
        for name, direct_tls in (("c2s", False), ("c2s_tls", True)):
            for i, address in enumerate(getattr(config.listen, name)):
                host, port = parse_address(f"listen.{name}[{i}]", address)

                serve = partial(net.serve_tcp, self, direct_tls=direct_tls)
                tls = self.tls.context if direct_tls else None
                link = partial(Link, serve, tls, config.limits.auth_timeout)
                srv = await loop.create_server(proxy_protocol.accepting(link, proxies, config.limits.auth_timeout),
                                               host, port, reuse_address=True)
                self._servers.append(srv)
                self.bound.setdefault(name, []).extend(s.getsockname()[:2] for s in srv.sockets)
        for i, address in enumerate(config.listen.component):
            host, port = parse_address(f"listen.component[{i}]", address)

            srv = await loop.create_server(partial(Link, partial(serve_component, self)), host, port,
                                           reuse_address=True)
            self._servers.append(srv)
            self.bound.setdefault("component", []).extend(s.getsockname()[:2] for s in srv.sockets)
        self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False,
                                     shutdown_timeout=_HTTP_SHUTDOWN)
        await self._runner.setup()
        for name, ctx in (("http", None), ("https", self.tls.http_context)):
            for i, address in enumerate(getattr(config.listen, name)):
                host, port = parse_address(f"listen.{name}[{i}]", address)
                site: web.BaseSite
                if proxies:
                    site = proxy_protocol.ProxiedSite(self._runner, host, port, tls=ctx, proxies=proxies,
                                                      timeout=config.limits.auth_timeout)
                else:
                    site = web.TCPSite(self._runner, host, port, ssl_context=ctx, reuse_address=True)
                await site.start()
                # aiohttp keeps its listening server private; asyncio's and uvloop's both have .sockets.
                sockets = getattr(site._server, "sockets", ())
                self.bound.setdefault(name, []).extend(s.getsockname()[:2] for s in sockets)

    async def _watch(self) -> None:
        """Keepalives, idle and authentication timeouts (RFC 6120 §4.6)."""
        limits = self.config.limits
        while True:
            await asyncio.sleep(_WATCHDOG_PERIOD)
            now = time.monotonic()
            conn: _Watched
            for conn in list(self.connections):
                stream = conn.stream
                if stream is None or stream.closed:
                    continue
                if now - conn.last_read > limits.idle_timeout:
                    await stream.time_out("no traffic for too long")
                elif stream.session is None and now - stream.started > limits.auth_timeout:
                    stream.close(StreamError("connection-timeout", "authentication took too long"))
                elif now - conn.last_write > limits.keepalive_interval and stream.header_sent:
                    conn.keepalive()

    async def stop(self) -> None:
        """Stop listening, end every stream and session, then stop modules and close storage.

        Streams are closed with system-shutdown without waiting for the clients to close theirs
        (RFC 6120 §4.4); a connection that does not go at once is cut after its grace
        (:data:`.net.SHUTDOWN_GRACE`). Every session, those waiting to be resumed too, has ended
        before the modules stop, so its ``session-closed`` handlers (unavailable presence, stream
        management handing what was not acknowledged to offline storage) run with storage open.
        """
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self._admin.stop()
        await self.stop_listening()
        shutdown = StreamError("system-shutdown", "the server is shutting down")
        await self.end_connections(lambda: shutdown)
        await self.end_sessions(shutdown)
        # After the sessions, whose unavailable presence may still go to other servers.
        await self.s2s.stop()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 5)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.cluster.stop()
        # The bus is closed: no deletion is heard from now on; those heard finish with storage open.
        await self._tasks.wait()
        for module in reversed(list(self.modules.values())):
            await module.stop()
        await self.router.withdrawn()
        if self._storage is not None:
            await self._storage.close()
            self._storage = None

    async def drain(self) -> Drained:
        """Send every client to another node and leave the cluster, for a rolling restart
        (cluster/drain.py); :meth:`stop` follows."""
        self.draining = True
        return await drain(self)

    async def stop_listening(self) -> None:
        """Take no new connections (client, WebSocket, HTTP, components); the admin channel stays."""
        for srv in self._servers:
            srv.close()
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
        await self.components.stop()

    def connection_ended(self, conn: Any) -> None:
        """``conn`` (a client's TCP or WebSocket connection) is gone."""
        self.connections.discard(conn)
        self.connections_ended += 1

    async def end_connections(self, error: Callable[[], StreamError]) -> None:
        """Close every client stream with a stream error from ``error`` (called once per stream)
        and wait until each connection ended, its session with it; cut those that linger."""
        conn: _Watched
        for conn in list(self.connections):
            if conn.stream is not None:
                conn.stream.close(error())
            conn.close_now()
        if not await self._connections_ended(net.SHUTDOWN_GRACE + 1):
            for conn in list(self.connections):
                conn.abort()
            if not await self._connections_ended(_TEARDOWN_LIMIT):
                log.warning("%d connections did not end in time", len(self.connections))

    async def _connections_ended(self, limit: float) -> bool:
        """Wait up to ``limit`` seconds for every connection to end, its session with it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.connections:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def end_sessions(self, error: StreamError) -> None:
        """End the sessions no connection ended: hibernating ones (XEP-0198 §5), and those whose
        connection did not finish in time."""
        for session in list(self.sessions):
            session.close(error)
            if self.sessions.remove(session):
                try:
                    await self.hooks.fire_all("session-closed", session)
                except Exception:
                    log.exception("ending the session %s at shutdown failed", session.jid)
