"""XEP-0114: Jabber Component Protocol (v1.6): external components, such as push app servers, on their own domain.

Every domain in the ``[components]`` table is claimed as a service domain when the server is
built (route target ``service/{domain}``), so it is never mistaken for a remote server. While
no component is connected for it, a message to it bounces with service-unavailable, an IQ too
(from the router), and presence is dropped. Addresses at domains that are neither served here
nor configured as components go to other servers (the s2s package) or, without federation,
get remote-server-not-found from the router.

A component connects to a ``listen.component`` address (plain TCP: bind it to the loopback or
a private network) and opens a stream in ``jabber:component:accept`` naming its domain in 'to'
(§3); an unconfigured domain ends the stream with host-unknown. The server answers with its
header and a fresh stream id; the component sends ``<handshake/>`` holding the hex SHA-1 of the
stream id followed by the secret (§3). A wrong handshake, or anything else first, ends the
stream with not-authorized; a domain that already has a connected component ends it with
conflict. A component that does not complete the handshake within ``limits.auth_timeout``
gets connection-timeout; so does one silent for ``limits.idle_timeout`` (a component whose host
vanished would otherwise hold its domain for ever). The server writes a whitespace keepalive
after each ``limits.keepalive_interval`` without input (RFC 6120 §4.6.1).

Once authenticated, the stanza routes of the domain (``message``, ``presence`` and ``iq`` on
``*/service/{domain}``) are registered to forward everything addressed there to the component,
and removed when it leaves. Stanzas from the component are routed as the server's own, in
``jabber:client`` like every stanza inside the server; each must name a 'to' and a 'from' at the
component's domain (§3: else the stream ends with improper-addressing or invalid-from).

In a cluster the component is reached from every node (cluster/components.py): the handshake
succeeds once the directory names this node for the domain, and the other nodes send what they
route there across the bus. The one-component-per-domain rule holds per node: a component may
connect to several nodes, and each node then uses its own link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol
from xml.etree.ElementTree import Element

from ..xmpp import ns
from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from ..xmpp.stanza import Stanza
from ..xmpp.xml import qname, serialize
from .config import ConfigError
from .hooks import HANDLED, Handled, Handler
from .link import Link
from .net import TcpConnection

if TYPE_CHECKING:
    from .app import Server
    from .sessions import Session

log = logging.getLogger(__name__)

ACCEPT = "jabber:component:accept"
_STREAM = qname(ns.STREAMS, "stream")
_HANDSHAKE = qname(ACCEPT, "handshake")
_STREAM_ERROR = qname(ns.STREAMS, "error")
_KINDS = ("message", "presence", "iq")
_STANZA_TAGS = {qname(ACCEPT, kind): kind for kind in _KINDS}
# How long a stream the server closed waits for the component to close its own (RFC 6120 §4.4).
_LINGER = 2.0
SERVICE_OWNER = "component"
_NOT_CONNECTED = "that service is not connected"


class Connection(Protocol):
    """The transport under a component stream."""

    peer: str

    def write(self, data: str) -> None: ...

    def close_transport(self) -> None: ...


def handshake_digest(stream_id: str, secret: str) -> str:
    """§3: the handshake value, hex SHA-1 of the stream id followed by the shared secret."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


def _to_client_namespace(el: Element) -> None:
    """Stanzas inside the server are in jabber:client; so are the component's, once read."""
    prefix = f"{{{ACCEPT}}}"
    for each in el.iter():
        if each.tag.startswith(prefix):
            each.tag = f"{{{ns.CLIENT}}}{each.tag[len(prefix):]}"


class ComponentStream:
    """One component connection: header, handshake, then stanzas both ways (§3)."""

    def __init__(self, server: Server, components: Components, conn: Connection) -> None:
        self.server = server
        self.components = components
        self.conn = conn
        self.id = secrets.token_hex(16)
        self.domain: str | None = None
        self.authenticated = False
        self.header_sent = False
        self.closed = False

    def send(self, el: Element) -> None:
        """Write a stanza; written in jabber:client without xmlns, it is read in the stream's namespace."""
        if not self.closed:
            self.conn.write(serialize(el, ns.CLIENT))

    def _send_header(self) -> None:
        self.conn.write(
            f"<?xml version='1.0'?><stream:stream xmlns='{ACCEPT}' xmlns:stream='{ns.STREAMS}' "
            f"id='{self.id}' from='{self.domain or self.server.config.domains[0]}'>"
        )
        self.header_sent = True

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream, with a stream error if given (RFC 6120 §4.9)."""
        if self.closed:
            return
        if error is not None:
            if not self.header_sent:
                self._send_header()
            log.info("closing component stream of %s from %s: %s", self.domain, self.conn.peer, error)
            self.conn.write(serialize(error.to_xml(), ACCEPT))
        if self.header_sent:
            self.conn.write("</stream:stream>")
        self.closed = True
        self.components.detach(self)
        self.conn.close_transport()

    async def on_open(self, name: str, attrs: dict[str, str], default_ns: str | None) -> None:
        """§3: the component's header names its domain."""
        if name != _STREAM:
            raise StreamError("invalid-namespace", "expected <stream:stream> in the streams namespace")
        if default_ns != ACCEPT:
            raise StreamError("invalid-namespace", f"a component stream's default namespace is {ACCEPT}")
        to = attrs.get("to")
        if not to:
            raise StreamError("host-unknown", "name the component's domain in 'to'")
        try:
            jid = JID.parse(to)
        except JIDError:
            raise StreamError("host-unknown", f"{to!r} is not a domain") from None
        if jid.local is not None or jid.resource is not None or jid.domain not in self.components.secrets:
            raise StreamError("host-unknown", f"no component is configured for {to}")
        self.domain = jid.domain
        self._send_header()

    async def on_element(self, el: Element) -> None:
        """A top-level element arrived."""
        if el.tag == _STREAM_ERROR:
            log.info("component %s sent a stream error: %s", self.domain, serialize(el))
            self.close()
            return
        if not self.authenticated:
            await self._handshake(el)
            return
        kind = _STANZA_TAGS.get(el.tag)
        if kind is None:
            raise StreamError("unsupported-stanza-type", f"unexpected element {el.tag}")
        await self._stanza(el)

    def on_close(self) -> None:
        """The component closed its stream: close ours."""
        self.close()

    async def _handshake(self, el: Element) -> None:
        """§3: compare the digest in constant time; the domain may have one component at a time
        here. The component hears that it succeeded once every node of a cluster can reach it."""
        assert self.domain is not None
        if el.tag != _HANDSHAKE:
            raise StreamError("not-authorized", "send the handshake first")
        expected = handshake_digest(self.id, self.components.secrets[self.domain])
        given = (el.text or "").strip().lower()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise StreamError("not-authorized", "wrong handshake")
        if self.domain in self.components.connected:
            raise StreamError("conflict", f"a component for {self.domain} is already connected")
        self.authenticated = True
        self.components.attach(self)
        await self.server.cluster.components.attached(self.domain)
        if self.closed:
            return
        self.conn.write(f"<handshake xmlns='{ACCEPT}'/>")
        log.info("component %s connected from %s", self.domain, self.conn.peer)

    async def _stanza(self, el: Element) -> None:
        """§3: check the addresses, then route it as the server's own."""
        assert self.domain is not None
        _to_client_namespace(el)
        from_, to = el.get("from"), el.get("to")
        try:
            sender = JID.parse(from_) if from_ else None
        except JIDError:
            sender = None
        if sender is None or sender.domain != self.domain:
            raise StreamError("invalid-from", f"'from' must be an address at {self.domain}")
        if not to:
            raise StreamError("improper-addressing", "a stanza from a component must name its 'to'")
        try:
            stanza = Stanza.parse(el)
        except StanzaError as err:
            if el.get("type") != "error":
                self.send(Stanza(el, None, sender).error(err))
            return
        shape = stanza.shape_error()
        if shape is not None:
            if stanza.type != "error":
                self.send(stanza.error(shape))
            return
        await self.server.router.route(stanza, None)


class Components:
    """The configured component domains, and the component connected for each."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.secrets = {domain: component.secret for domain, component in server.config.components.items()}
        self.connected: dict[str, ComponentStream] = {}
        # Streams on sockets, with their connection and the task serving them.
        self.serving: dict[ComponentStream, tuple[TcpConnection, asyncio.Task[Any]]] = {}
        self._routes: dict[str, list[tuple[str, Handler]]] = {}
        hooks = server.hooks
        for domain in self.secrets:
            if domain in server.hosts:
                raise ConfigError(f"components.{domain}", "is one of the server's domains")
            server.services[domain] = SERVICE_OWNER
            # Lowest priority: they answer only while no component takes the domain's stanzas.
            hooks.add(f"message/service/{domain}", self._unreachable, -1000)
            hooks.add(f"presence/service/{domain}", self._drop, -1000)
        if self.secrets:
            hooks.add("disco-items/host", self._items)

    def attach(self, stream: ComponentStream) -> None:
        """Route the domain's stanzas to ``stream`` (it completed the handshake)."""
        domain = stream.domain
        assert domain is not None and domain not in self.connected
        self.connected[domain] = stream

        async def forward(stanza: Stanza, _origin: Session | None) -> Handled:
            stream.send(stanza.el)
            return HANDLED

        routes: list[tuple[str, Handler]] = [(f"{kind}/service/{domain}", forward) for kind in _KINDS]
        for key, handler in routes:
            self._server.hooks.add(key, handler)
        self._routes[domain] = routes

    def detach(self, stream: ComponentStream) -> None:
        """Stop routing to ``stream``, if it was the domain's connected component."""
        domain = stream.domain
        if domain is None or self.connected.get(domain) is not stream:
            return
        del self.connected[domain]
        for key, handler in self._routes.pop(domain, ()):
            self._server.hooks.remove(key, handler)
        self._server.cluster.components.detached(domain)
        log.info("component %s disconnected", domain)

    async def _unreachable(self, stanza: Stanza, _origin: Session | None) -> Handled:
        if stanza.type == "error":
            return HANDLED
        raise StanzaError("service-unavailable", _NOT_CONNECTED)

    async def unreachable(self, stanza: Stanza) -> None:
        """Answer ``stanza`` as one to a domain without a component (RFC 6120 §8.3.3.19), when
        the router does not: another node passed it here for a component that has gone."""
        if stanza.kind != "presence" and not stanza.is_response:
            await self._server.router.send(stanza.error(StanzaError("service-unavailable", _NOT_CONNECTED)))

    async def _drop(self, _stanza: Stanza, _origin: Session | None) -> Handled:
        return HANDLED

    async def _items(self, host: str) -> Iterable[tuple[str, None]]:
        """XEP-0030 §4.1: the components at subdomains of ``host`` connected to any node."""
        cluster = self._server.cluster.components
        return [(domain, None) for domain in sorted(self.secrets)
                if domain.endswith(f".{host}") and (domain in self.connected or await cluster.linked(domain))]

    async def stop(self) -> None:
        """Close every component stream and its connection (the server is shutting down)."""
        serving = list(self.serving.items())
        for stream, (conn, _task) in serving:
            stream.close(StreamError("system-shutdown", "the server is shutting down"))
            # Waiting for each component to close its stream too (RFC 6120 §4.4) would hold shutdown up.
            conn.close_now()
        tasks = [task for _stream, (_conn, task) in serving]
        if tasks:
            await asyncio.wait(tasks, timeout=5)


async def serve_component(server: Server, link: Link) -> None:
    """Run one component connection until it closes."""
    conn = TcpConnection(server, link, direct_tls=False)
    conn.can_starttls = False
    components = server.components
    stream = ComponentStream(server, components, conn)
    task = asyncio.current_task()
    assert task is not None
    components.serving[stream] = (conn, task)
    limits = server.config.limits
    parser = StreamParser(limits.max_stanza_size_unauthenticated)
    deadline = time.monotonic() + limits.auth_timeout
    peer_closed = False
    try:
        while not stream.closed:
            now = time.monotonic()
            if stream.authenticated:
                wait = min(limits.keepalive_interval, conn.last_read + limits.idle_timeout - now)
            else:
                wait = deadline - now
            data = await link.read(max(wait, 0))
            if data is None:
                if not stream.authenticated:
                    stream.close(StreamError("connection-timeout", "the handshake took too long"))
                    break
                if time.monotonic() - conn.last_read >= limits.idle_timeout:
                    # A component whose host vanished would keep its domain taken (conflict) forever.
                    stream.close(StreamError("connection-timeout", "no traffic for too long"))
                    break
                conn.write(" ")  # RFC 6120 §4.6.1: a whitespace keepalive finds a dead connection
                continue
            if not data:
                peer_closed = True
                break
            conn.last_read = time.monotonic()
            try:
                for event in parser.feed(data) + parser.flush():
                    if isinstance(event, StreamClosed):
                        peer_closed = True
                        stream.on_close()
                    elif stream.closed:
                        continue
                    elif isinstance(event, StanzaReceived):
                        await stream.on_element(event.element)
                        if stream.authenticated:
                            parser.max_stanza_bytes = limits.max_stanza_size
                    elif isinstance(event, StreamOpened):
                        await stream.on_open(event.name, event.attrs, event.default_ns)
            except StreamError as err:
                stream.close(err)
        if not peer_closed:
            # RFC 6120 §4.4: read on until the component closes too (the linger timer ends the wait).
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(_LINGER):
                    while await link.read():
                        pass
    except (ConnectionError, ssl.SSLError, OSError) as err:
        log.debug("component connection %s lost: %s", conn.peer, err)
    except Exception:
        log.exception("unexpected failure on component connection %s", conn.peer)
        stream.close(StreamError("internal-server-error"))
    finally:
        components.serving.pop(stream, None)
        stream.closed = True
        components.detach(stream)
        conn.close_now()
        with contextlib.suppress(Exception):
            await link.wait_closed()
