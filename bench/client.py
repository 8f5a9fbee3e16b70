"""A minimal XMPP client connection for load generation: raw asyncio, no XMPP library.

Only what a benchmark needs: STARTTLS (certificates not verified), SASL SCRAM-SHA-256 or
SCRAM-SHA-1 (RFC 5802, RFC 7677), resource binding (RFC 6120 §7), optional initial presence, then
stanzas in and out. The negotiation is sequential, without pipelining, so every server sees the
same conversation. Incoming XML goes through expat incrementally; after login every top-level
stanza is handed to a callback as it is parsed, which keeps the generator cheap next to the
server it loads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import secrets
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from xml.parsers import expat

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

# expat joins namespace and local name with this separator: tags read "jabber:client message".
_SEP = " "
STREAM_FEATURES = f"{NS_STREAM}{_SEP}features"
STREAM_ERROR = f"{NS_STREAM}{_SEP}error"
MESSAGE = f"{NS_CLIENT}{_SEP}message"
IQ = f"{NS_CLIENT}{_SEP}iq"

# Strongest first; the -PLUS variants are left out because the generator does no channel binding.
SCRAM_MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}

# Elements are kept down to this depth (the stream header is 1, a stanza 2): enough for every
# element the generator reads (features/mechanisms/mechanism, iq/bind/jid, message/error/condition),
# and the payloads of the messages it receives are not built into trees for nothing.
_KEEP_DEPTH = 4


class XmppError(Exception):
    """A step of the session failed; ``kind`` groups failures in the report (tcp, tls, auth, ...)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Element:
    """A parsed element: ``tag`` is "namespace local-name", as expat reports it."""

    __slots__ = ("attrs", "children", "tag", "text")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Element] = []
        self.text = ""

    def find(self, tag: str) -> Element | None:
        return next((child for child in self.children if child.tag == tag), None)

    @property
    def local(self) -> str:
        return self.tag.rpartition(_SEP)[2]


def xml_escape(text: str) -> str:
    """Escape for element text and for attribute values in single or double quotes."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )


def insecure_tls_context() -> ssl.SSLContext:
    """No certificate checks: the servers under test run on loopback with self-signed certificates."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Connection(asyncio.Protocol):
    """One client stream. Negotiation awaits elements with :meth:`recv`; afterwards the callback
    given to :meth:`start_handling` gets every stanza as it is parsed."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.jid = ""
        self.mechanism = ""
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_stanza: Callable[[Element], None] | None = None
        self._pending: deque[Element] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: XmppError | None = None
        self._reset_parser()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as exc:
            self._fail(XmppError("xml", str(exc)))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(XmppError("closed", str(exc) if exc else "connection closed by the server"))
        if not self.closed.done():
            self.closed.set_result(None)

    # Parsing

    def _reset_parser(self) -> None:
        """A fresh parser for a new stream (after STARTTLS and after SASL success)."""
        parser = expat.ParserCreate(namespace_separator=_SEP)
        parser.buffer_text = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._chars
        self._parser = parser
        self._stack: list[Element] = []
        self._depth = 0

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if 2 <= self._depth <= _KEEP_DEPTH:
            el = Element(tag, attrs)
            if self._stack:
                self._stack[-1].children.append(el)
            self._stack.append(el)

    def _end(self, _tag: str) -> None:
        depth = self._depth
        self._depth -= 1
        if depth == 1:
            self._fail(XmppError("closed", "the server closed the stream"))
        elif depth <= _KEEP_DEPTH:
            el = self._stack.pop()
            if depth == 2:
                self._dispatch(el)

    def _chars(self, data: str) -> None:
        if 2 <= self._depth <= _KEEP_DEPTH:
            self._stack[-1].text += data

    def _dispatch(self, el: Element) -> None:
        if el.tag == STREAM_ERROR:
            condition = el.children[0].local if el.children else "undefined"
            self._fail(XmppError("stream-error", condition))
        elif self._on_stanza is not None:
            self._on_stanza(el)
        else:
            self._pending.append(el)
            self._wake()

    def _fail(self, failure: XmppError) -> None:
        if self._failure is None:
            self._failure = failure
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # Use

    @property
    def is_open(self) -> bool:
        """Whether the stream is up: no failure, not closed by either side."""
        return self._failure is None and self.transport is not None and not self.transport.is_closing()

    def send(self, data: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data.encode())

    async def recv(self) -> Element:
        """The next top-level element during negotiation (the caller bounds the wait)."""
        while not self._pending:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._pending.popleft()

    async def wait_while_open(self, event: asyncio.Event, timeout: float) -> None:
        """Wait for ``event``; raise the stream's failure at once if it fails first (a stream
        error, say), and TimeoutError after ``timeout`` seconds."""
        waiting = asyncio.ensure_future(event.wait())
        watched: list[asyncio.Future[Any]] = [waiting, self.closed]
        try:
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if event.is_set():
            return
        if self._failure is not None:
            raise self._failure
        raise TimeoutError(f"no answer within {timeout} s")

    def open_stream(self) -> None:
        self._reset_parser()
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{xml_escape(self.domain)}' version='1.0' "
            f"xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'>"
        )

    def start_handling(self, on_stanza: Callable[[Element], None]) -> None:
        """Hand every stanza to ``on_stanza`` from now on, starting with any already received."""
        self._on_stanza = on_stanza
        while self._pending:
            on_stanza(self._pending.popleft())

    async def close(self, grace: float = 5.0) -> None:
        """Close the stream politely (RFC 6120 §4.4), giving the server ``grace`` seconds to close its side."""
        if self.transport is None or self.closed.done():
            return
        if not self.transport.is_closing():
            self.send("</stream:stream>")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), grace)
        if not self.closed.done():
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@functools.lru_cache(maxsize=64)
def _salted_password(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 §3 Hi(). Cached as real clients cache it: without that the generator would spend
    more CPU on PBKDF2 per login than the server spends on the whole SCRAM exchange."""
    return hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)


class Scram:
    """The client side of SCRAM (RFC 5802 §5) without channel binding (GS2 header "n,,")."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.hash = SCRAM_MECHANISMS[mechanism]
        self.password = password
        self.nonce = secrets.token_urlsafe(18)
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={name},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> str:
        return f"n,,{self.first_bare}"

    def final(self, server_first: str) -> str:
        try:
            fields = dict(item.split("=", 1) for item in server_first.split(","))
            nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        except (KeyError, ValueError) as exc:
            raise XmppError("auth", f"bad server-first-message: {exc}") from None
        if not nonce.startswith(self.nonce):
            raise XmppError("auth", "the server changed the client nonce")
        salted = _salted_password(self.hash, self.password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"  # biws = base64("n,,")
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        self.server_signature = hmac.digest(server_key, auth_message, self.hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify(self, server_final: str) -> None:
        expected = f"v={base64.b64encode(self.server_signature).decode()}"
        if not hmac.compare_digest(server_final, expected):
            raise XmppError("auth", "the server signature does not verify")


async def _expect(conn: Connection, tag: str, kind: str) -> Element:
    el = await conn.recv()
    if el.tag != tag:
        raise XmppError(kind, f"expected {tag.rpartition(_SEP)[2]}, got {el.local}")
    return el


def _sasl_failure(el: Element) -> XmppError:
    condition = next((c.local for c in el.children if c.local != "text"), "undefined")
    return XmppError("auth", condition)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _authenticate(conn: Connection, features: Element, username: str, password: str) -> None:
    """RFC 6120 §6.4 with the strongest SCRAM mechanism offered."""
    mechanisms = features.find(f"{NS_SASL}{_SEP}mechanisms")
    offered = {m.text.strip() for m in mechanisms.children} if mechanisms is not None else set()
    mechanism = next((m for m in SCRAM_MECHANISMS if m in offered), None)
    if mechanism is None:
        raise XmppError("auth", f"no SCRAM mechanism offered (offered: {' '.join(sorted(offered))})")
    conn.mechanism = mechanism
    scram = Scram(mechanism, username, password)
    conn.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{_b64(scram.first())}</auth>")
    el = await conn.recv()
    if el.local != "challenge":
        raise _sasl_failure(el)
    conn.send(f"<response xmlns='{NS_SASL}'>{_b64(scram.final(base64.b64decode(el.text).decode()))}</response>")
    el = await conn.recv()
    if el.local == "challenge":  # RFC 6120 §6.3.10 allows server-final in a challenge, then success
        server_final = el.text
        conn.send(f"<response xmlns='{NS_SASL}'/>")
        el = await conn.recv()
    else:
        server_final = el.text
    if el.local != "success":
        raise _sasl_failure(el)
    scram.verify(base64.b64decode(server_final).decode())


async def _negotiate(
    conn: Connection, tls: ssl.SSLContext, username: str, password: str, resource: str, presence: bool
) -> None:
    loop = asyncio.get_running_loop()
    conn.open_stream()
    features = await _expect(conn, STREAM_FEATURES, "stream")
    if features.find(f"{NS_TLS}{_SEP}starttls") is None:
        raise XmppError("tls", "the server does not offer STARTTLS")
    conn.send(f"<starttls xmlns='{NS_TLS}'/>")
    await _expect(conn, f"{NS_TLS}{_SEP}proceed", "tls")
    assert conn.transport is not None
    try:
        secured = await loop.start_tls(conn.transport, conn, tls, server_hostname=conn.domain)
    except (OSError, ssl.SSLError) as exc:
        raise XmppError("tls", str(exc)) from None
    if secured is None:
        raise XmppError("tls", "connection closed during the TLS handshake")
    conn.transport = secured
    conn.open_stream()
    features = await _expect(conn, STREAM_FEATURES, "stream")
    await _authenticate(conn, features, username, password)

    conn.open_stream()
    features = await _expect(conn, STREAM_FEATURES, "stream")
    conn.send(
        f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'>"
        f"<resource>{xml_escape(resource)}</resource></bind></iq>"
    )
    el = await _expect(conn, IQ, "bind")
    bound = el.find(f"{NS_BIND}{_SEP}bind")
    jid = bound.find(f"{NS_BIND}{_SEP}jid") if bound is not None else None
    if el.attrs.get("type") != "result" or jid is None:
        raise XmppError("bind", "resource binding refused")
    conn.jid = jid.text
    # RFC 3921 §3 sessions: only servers that still mark the feature mandatory need the round trip.
    session = features.find(f"{NS_SESSION}{_SEP}session")
    if session is not None and session.find(f"{NS_SESSION}{_SEP}optional") is None:
        conn.send(f"<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>")
        el = await _expect(conn, IQ, "bind")
        if el.attrs.get("type") != "result":
            raise XmppError("bind", "session establishment refused")
    if presence:
        conn.send("<presence/>")


async def login(
    host: str,
    port: int,
    domain: str,
    username: str,
    password: str,
    *,
    resource: str,
    tls: ssl.SSLContext,
    presence: bool = False,
    timeout: float = 30.0,
    local_addr: str | None = None,
) -> Connection:
    """Connect, STARTTLS, authenticate and bind one session within ``timeout`` seconds.

    ``local_addr`` is the source address (any port); None lets the kernel choose. Raises
    :class:`XmppError`; the connection is aborted on any failure.
    """
    loop = asyncio.get_running_loop()
    conn = Connection(domain)
    try:
        async with asyncio.timeout(timeout):
            try:
                await loop.create_connection(
                    lambda: conn, host, port, local_addr=(local_addr, 0) if local_addr else None
                )
            except OSError as exc:
                raise XmppError("tcp", exc.strerror or str(exc)) from None
            await _negotiate(conn, tls, username, password, resource, presence)
    except TimeoutError:
        conn.abort()
        raise XmppError("timeout", f"no session after {timeout:g} s") from None
    except BaseException:
        conn.abort()
        raise
    return conn
