"""Server-to-server federation (RFC 6120): our users talk to other servers' users and services.

:class:`S2S` is the server's side: when ``[s2s] enabled``, it takes every stanza the router
finds addressed to a domain not served here (route keys ``message/remote``,
``presence/remote`` and ``iq/remote``, at the lowest priority so that modules see them first)
and hands it to the :class:`.outbound.Route` of its pair of domains, and it listens on
``listen.s2s`` for other servers (:mod:`.inbound`). Stanzas that arrive from other servers are
routed to local recipients like those of local clients. While disabled, the router answers
such stanzas with ``remote-server-not-found``.

Files: :mod:`.resolve` finds a domain's server, :mod:`.wire` is one connection,
:mod:`.outbound` and :mod:`.inbound` the two directions, :mod:`.dialback` the XEP-0220 keys,
:mod:`.certs` the certificates of incoming peers, :mod:`.sm` XEP-0198 acks on outgoing streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, serialize
from ..config import parse_address
from ..hooks import HANDLED, Handled
from .certs import request_peer_certificates
from .dialback import load_secret
from .inbound import IncomingStream, serve_s2s
from .outbound import Route
from .wire import starttls_context

if TYPE_CHECKING:
    from ..app import Server
    from ..sessions import Session

log = logging.getLogger(__name__)

_KINDS = ("message", "presence", "iq")
_ALPN = ["xmpp-server"]
# How long a shutdown lets routes connect and send what waits before it cuts them.
_SHUTDOWN_GRACE = 5.0


class S2S:
    """Outgoing routes per pair of domains, incoming streams, and the dialback secret."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = server.config.s2s
        self.routes: dict[tuple[str, str], Route] = {}
        self.incoming: set[IncomingStream] = set()
        self.secret = ""
        self._stopped = False
        self._servers: list[asyncio.Server] = []
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self._server_context: ssl.SSLContext | None = None
        # Whether incoming peers' certificates are checked (for SASL EXTERNAL); see certs.py.
        self.peer_certificates = False
        if self.config.enabled:
            for kind in _KINDS:
                server.hooks.add(f"{kind}/remote", self.outbound, -1000)

    def local_domains(self) -> set[str]:
        """The domains other servers may address here: hosts, module services, components."""
        return {*self.server.hosts, *self.server.services}

    @property
    def server_context(self) -> ssl.SSLContext:
        """TLS for incoming streams, with the server's certificate; with ``verify`` it asks
        peers for theirs, checked against the system's CAs and ``ca_file``."""
        if self._server_context is None:
            tls = self.server.tls
            ctx = starttls_context(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls.cert_path, tls.key_path)
            ctx.set_alpn_protocols(_ALPN)
            if self.config.verify:
                if self.config.ca_file is not None:
                    ctx.load_verify_locations(self.config.ca_file)
                self.peer_certificates = request_peer_certificates(ctx)
            self._server_context = ctx
        return self._server_context

    def client_context(self, verify: bool) -> ssl.SSLContext:
        """TLS for outgoing streams; it shows our certificate, so that peers may accept SASL
        EXTERNAL. ``verify`` checks the peer's certificate for its domain (RFC 6125)."""
        ctx = self._contexts.get(verify)
        if ctx is None:
            tls = self.server.tls
            ctx = starttls_context(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if verify:
                if self.config.ca_file is not None:
                    ctx.load_verify_locations(self.config.ca_file)
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(tls.cert_path, tls.key_path)
            ctx.set_alpn_protocols(_ALPN)
            self._contexts[verify] = ctx
        return ctx

    async def start(self, *, listen: bool) -> None:
        """Load the dialback secret and listen on ``listen.s2s`` (when enabled)."""
        if not self.config.enabled:
            return
        self.secret = await load_secret(self.config.dialback_secret, self.server.storage, self.server.config.domains[0])
        if not listen:
            return
        for i, address in enumerate(self.server.config.listen.s2s):
            host, port = parse_address(f"listen.s2s[{i}]", address)

            async def on_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                await serve_s2s(self, r, w)

            srv = await asyncio.start_server(on_server, host, port, reuse_address=True, limit=65536)
            self._servers.append(srv)
            self.server.bound.setdefault("s2s", []).extend(s.getsockname()[:2] for s in srv.sockets)

    async def outbound(self, stanza: Stanza, _origin: Session | None) -> Handled:
        """Send a stanza to another server over the route of its pair of domains."""
        assert stanza.to is not None
        if stanza.from_ is None or stanza.from_.domain not in self.local_domains():
            # Only our own domains' stanzas leave here: no relaying for anyone else.
            raise StanzaError("forbidden", "only stanzas from this server's domains go to other servers")
        if self._stopped:
            raise StanzaError("remote-server-timeout", "the server is shutting down")
        pair = (stanza.from_.domain, stanza.to.domain)
        limit = self.server.config.limits.max_stanza_size
        if len(serialize(stanza.el, ns.CLIENT).encode()) > limit:
            # RFC 6120 §13.12: a client's stanza within the limit grows here (its 'from'); a peer
            # with our limit would end the stream over it, and stream management would send it
            # again on every new connection, holding up what waits behind it.
            refusal = StanzaError("policy-violation", f"larger than the {limit} bytes a stanza to another server may have")
            if not (stanza.kind == "iq" and stanza.type == "result"):
                raise refusal
            # §8.2.3: the requester waits for a response; an error goes in the result's place.
            answer = element(stanza.el.tag, {"type": "error", "id": stanza.id, "from": stanza.el.get("from"),
                                             "to": stanza.el.get("to")})
            answer.append(refusal.to_xml())
            stanza = Stanza(answer, stanza.to, stanza.from_)
        route = self.routes.get(pair)
        if route is None or route.done:
            route = self.routes[pair] = Route(self, *pair)
        route.send(stanza)
        return HANDLED

    def forget(self, route: Route) -> None:
        """A route ended; the next stanza for its pair starts a new one."""
        if self.routes.get((route.local, route.remote)) is route:
            del self.routes[(route.local, route.remote)]

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down: routes send what waits, then close."""
        return self._stopped

    async def stop(self) -> None:
        """Let the routes send what waits, then stop listening and end every stream (the server
        is shutting down).

        The sessions that just ended sent unavailable presence (RFC 6121 §4.5.2, §4.6.3), often
        on routes that are still connecting: each route with stanzas to send or unacknowledged
        gets up to :data:`_SHUTDOWN_GRACE` to send them, have them acknowledged and close. The
        listener stays open meanwhile, since a peer checks our dialback key by connecting to us
        (XEP-0220 §2.1.3).
        """
        self._stopped = True
        shutdown = StreamError("system-shutdown", "the server is shutting down")
        for route in list(self.routes.values()):
            route.shut_down(shutdown)
        delivering = [route.task for route in self.routes.values() if route.pending]
        if delivering:
            await asyncio.wait(delivering, timeout=_SHUTDOWN_GRACE)
        for srv in self._servers:
            srv.close()
        for stream in list(self.incoming):
            stream.close(shutdown)
        for route in list(self.routes.values()):
            if route.wire is not None:
                route.wire.close_with(shutdown)
            route.task.cancel()
        tasks = [route.task for route in self.routes.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for stream in list(self.incoming):
            await stream.wire.aclose()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 5)
