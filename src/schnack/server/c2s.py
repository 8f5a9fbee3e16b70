"""Client-to-server streams: negotiation and stanza intake (RFC 6120 §4-§8, RFC 7395).

One :class:`C2SStream` per connection, on TCP (STARTTLS or direct TLS) or WebSocket. It drives
the negotiation (STARTTLS, SASL, resource binding; SASL2 with Bind 2 in :mod:`.sasl2`), checks
each stanza a client sends (RFC 6120 §8.1.2.1: the 'from' must be the client's own JID) and
hands it to the router. While a stanza's routing waits for writes its handlers deferred (the
archive's commit), the stream routes the next ones; it counts them as handled (XEP-0198) in the
order they came, and answers an ``<r/>`` only after the stanzas before it. The connection below it
only moves bytes; the parsing and XML rules live in the sans-IO core.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from typing import TYPE_CHECKING, Protocol
from xml.etree.ElementTree import Element

from ..xmpp import ns, sasl
from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.payloads import sasl2 as sasl2_payload
from ..xmpp.stanza import Stanza
from ..xmpp.xml import element, qname, serialize, sub
from .hooks import Unanswered
from .router import Finish
from .sasl2 import LoginKeys, Sasl2, fingerprint, still_current, stored_credentials
from .sasl2 import localpart as _localpart
from .sessions import Session

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger(__name__)

_STANZA_TAGS = frozenset(qname(ns.CLIENT, kind) for kind in ("message", "presence", "iq"))
_STARTTLS = qname(ns.TLS, "starttls")
_AUTH = qname(ns.SASL, "auth")
_RESPONSE = qname(ns.SASL, "response")
_ABORT = qname(ns.SASL, "abort")
_BIND = qname(ns.BIND, "bind")
_IQ = qname(ns.CLIENT, "iq")
_SESSION = qname(ns.SESSION, "session")
_STREAM_ERROR = qname(ns.STREAMS, "error")
_OPEN = qname(ns.FRAMING, "open")
_STREAM = qname(ns.STREAMS, "stream")
# RFC 6120 §6.4.5: allow a reasonable number of retries (2 to 5), then end the stream.
_MAX_SASL_FAILURES = 5
# Stanzas a stream reads on past one whose writes are not done (XEP-0198 counts them later).
UNFINISHED_MAX = 64


class Connection(Protocol):
    """The transport under a stream: bytes out, TLS facts, closing."""

    peer: str
    secure: bool
    websocket: bool
    can_starttls: bool

    def write(self, data: str) -> None: ...

    def close_transport(self) -> None: ...

    def channel_binding(self, kind: str) -> bytes | None: ...


class C2SStream:
    """The stream state of one client connection; the session's transport once bound."""

    def __init__(self, server: Server, conn: Connection) -> None:
        self.server = server
        self.conn = conn
        self.id = secrets.token_urlsafe(12)
        self.host: str | None = None
        self.header_sent = False
        self.username: str | None = None
        self.session: Session | None = None
        self.closed = False
        # Set by negotiation; the connection acts on them before reading further.
        self.want_tls = False
        self.want_restart = False
        self.started = time.monotonic()
        self._sasl: sasl.SaslServer | None = None
        self._sasl_mechanism = ""
        # The account the SASL name maps to, once the mechanism named one.
        self._sasl_account: str | None = None
        # The fingerprint of the account's stored keys the login was checked against, for the
        # session (LoginKeys).
        self.login_keys: str | None = None
        self._sasl_failures = 0
        # XEP-0388 negotiation, offered next to RFC 6120 SASL on encrypted streams: made when first
        # needed and let go once the stream has its session, as nothing of it is used after that.
        self._sasl2: Sasl2 | None = None
        self._stanza_ns = None if conn.websocket else ns.CLIENT
        # Stanzas from the client whose routing has finished (XEP-0198 §4 counts only those).
        self.stanzas_handled = 0
        # Stanzas whose routing waits for deferred writes (Router.begin), with those read after
        # them, in order; and the task that finishes and counts them. Made only when needed.
        self._unfinished: collections.deque[Finish | None] | None = None
        self._finisher: asyncio.Task[None] | None = None
        # A stanza is between being read and being counted (or queued to be); and, made only for
        # let_go, what tells it that stanza is done.
        self._handling = False
        self._handled_one: asyncio.Event | None = None

    @property
    def authenticated(self) -> bool:
        """Whether SASL succeeded on this stream."""
        return self.username is not None

    @property
    def sasl2(self) -> Sasl2:
        """The XEP-0388 side of this stream's negotiation."""
        if self._sasl2 is None:
            self._sasl2 = Sasl2(self)
        return self._sasl2

    @property
    def max_stanza_bytes(self) -> int:
        """The stanza size limit in force (RFC 6120 §13.12)."""
        limits = self.server.config.limits
        return limits.max_stanza_size if self.authenticated else limits.max_stanza_size_unauthenticated

    # Output ---------------------------------------------------------------------------------

    def send(self, el: Element) -> None:
        """Send one top-level element to the client."""
        if self.closed:
            return
        if self.conn.websocket:
            self.conn.write(serialize(el))
        else:
            self.conn.write(serialize(el, ns.CLIENT))

    def _send_header(self) -> None:
        host = self.host or self.server.config.domains[0]
        if self.conn.websocket:
            self.conn.write(
                serialize(
                    element(
                        _OPEN,
                        {"from": host, "id": self.id, "version": "1.0", qname(ns.XML, "lang"): "en"},
                    )
                )
            )
        else:
            self.conn.write(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                f"xmlns:stream='{ns.STREAMS}' id='{self.id}' from='{host}' version='1.0' xml:lang='en'>"
            )
        self.header_sent = True

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream, with a stream error if given (RFC 6120 §4.4, §4.9.1)."""
        if self.closed:
            return
        if error is not None and not self.header_sent:
            self._send_header()
        if error is not None:
            if error.condition not in ("conflict", "system-shutdown", "connection-timeout", "see-other-host"):
                log.info("closing stream %s from %s: %s", self.id, self.conn.peer, error)
            self.send(error.to_xml())
        if self.conn.websocket:
            self.conn.write(serialize(element(qname(ns.FRAMING, "close"))))
        elif self.header_sent:
            self.conn.write("</stream:stream>")
        self.closed = True
        if self.session is not None:
            self.session.closed = True
        self.conn.close_transport()

    async def time_out(self, reason: str) -> None:
        """Close the stream of a client that went silent with connection-timeout (RFC 6120 §4.6).

        The client did not end its stream: most often its network went away, the case XEP-0198 §5
        resumption is for. So the event ``c2s/connection-lost`` asks at once, as when a connection
        drops, whether a module keeps the session for a later resumption (the connection itself
        may take a while to go, and the session must not end with it then).
        """
        self.close(StreamError("connection-timeout", reason))
        session = self.session
        if session is None:
            return
        # Counted before anything reads the count (a resumption's 'h').
        await self.finished()
        if self.session is session and await self.server.hooks.fire("c2s/connection-lost", self) is not None:
            # Kept: the module that keeps it owns its end, and the connection's end leaves it alone.
            session.closed = False
            self.session = None

    # Input ----------------------------------------------------------------------------------

    async def on_open(self, name: str, attrs: dict[str, str], default_ns: str | None) -> None:
        """A stream header (RFC 6120 §4.7) or WebSocket ``<open/>`` (RFC 7395 §3.4) arrived."""
        if self.conn.websocket:
            if name != _OPEN:
                raise StreamError("invalid-namespace", "expected <open/> in the framing namespace")
        else:
            if name != _STREAM:
                raise StreamError("invalid-namespace", "expected <stream:stream> in the streams namespace")
            if default_ns != ns.CLIENT:
                raise StreamError("invalid-namespace", "the stream's default namespace must be jabber:client")
        to = attrs.get("to")
        host = self._check_host(to)
        if self.host is not None and host != self.host:
            raise StreamError("host-unknown", "the stream restart changed the domain")
        self.host = host
        version = attrs.get("version", "0.9")
        major, _, minor = version.partition(".")
        if not (major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()):
            raise StreamError("unsupported-version", f"malformed version {version!r}")
        if int(major) != 1:
            # RFC 6120 §4.7.5: only the minor version may differ between entities that interoperate.
            raise StreamError("unsupported-version", "this server speaks XMPP 1.0")
        self._send_header()
        self.send(await self._features())

    def _check_host(self, to: str | None) -> str:
        if to is None:
            return self.server.config.domains[0]
        try:
            jid = JID.parse(to)
        except JIDError:
            raise StreamError("host-unknown", f"{to!r} is not a domain") from None
        if jid.local is not None or jid.resource is not None or jid.domain not in self.server.hosts:
            self.host = None
            raise StreamError("host-unknown", f"this server does not serve {to}")
        return jid.domain

    async def _features(self) -> Element:
        features = element(qname(ns.STREAMS, "features"))
        tls_required = self.server.config.tls.require_c2s
        if not self.authenticated:
            if self.conn.can_starttls and not self.conn.secure:
                starttls = sub(features, _STARTTLS)
                if tls_required:
                    sub(starttls, qname(ns.TLS, "required"))
                    return features
            bindings = [kind for kind in sasl.CHANNEL_BINDINGS
                        if self.conn.secure and self.conn.channel_binding(kind) is not None]
            mechanisms = sub(features, qname(ns.SASL, "mechanisms"))
            for mechanism in sasl.server_mechanisms(self.conn.secure, bindings):
                sub(mechanisms, qname(ns.SASL, "mechanism"), text=mechanism)
            if bindings:
                # XEP-0440: which channel-binding types the -PLUS mechanisms accept.
                cb = sub(features, "{urn:xmpp:sasl-cb:0}sasl-channel-binding")
                for kind in bindings:
                    sub(cb, "{urn:xmpp:sasl-cb:0}channel-binding", {"type": kind})
        elif self.session is None:
            # After SASL2 with Bind 2 the stream is bound already: nothing to offer for it.
            sub(features, _BIND)
            sub(sub(features, _SESSION), qname(ns.SESSION, "optional"))
        for extra in await self.server.hooks.fire_all("stream-features", self):
            if extra is not None:
                features.append(extra)
        if not self.authenticated:
            await self.sasl2.offer(features)
        return features

    async def on_element(self, el: Element) -> None:
        """A complete top-level element arrived."""
        tag = el.tag
        if tag == _STREAM_ERROR:
            log.info("client %s sent a stream error: %s", self.conn.peer, serialize(el))
            self.close()
            return
        if self.session is not None:
            if _is_session_request(el):
                # Clients that follow RFC 3921 ask for the session after binding; it is a no-op.
                self.session.send(Stanza(el, None, None).result())
                await self._handled(None)
            elif tag in _STANZA_TAGS:
                self._handling = True
                try:
                    finish = await self._stanza(el, self.session)
                except Unanswered as why:
                    log.info("not counting a stanza from %s: %s", self.conn.peer, why)
                    return
                else:
                    await self._handled(finish)
                finally:
                    self._handling = False
                    if self._handled_one is not None:
                        self._handled_one.set()
            else:
                # In stream order: an <r/> is answered with an 'h' that counts every stanza sent
                # before it (XEP-0198 §4).
                await self.finished()
                await self._nonza(el)
            return
        if not self.authenticated:
            await self._negotiate(el)
        elif _is_session_request(el) or (tag == _IQ and el.get("type") == "set" and len(el) == 1 and el[0].tag == _BIND):
            await self._bind(el)
        elif tag in _STANZA_TAGS:
            raise StreamError("not-authorized", "bind a resource before sending stanzas")
        else:
            await self._nonza(el)

    def on_close(self) -> None:
        """The client closed its stream: close ours (RFC 6120 §4.4)."""
        self.close()

    async def _nonza(self, el: Element) -> None:
        if await self.server.hooks.fire(f"c2s/nonza/{el.tag}", self, el) is None:
            if el.tag.startswith("{jabber:"):
                raise StreamError("invalid-namespace", "stanzas on this stream must be in jabber:client")
            raise StreamError("unsupported-stanza-type", f"unexpected element {el.tag}")

    # Negotiation ----------------------------------------------------------------------------

    async def _negotiate(self, el: Element) -> None:
        tag = el.tag
        if tag == _STARTTLS:
            if not self.conn.can_starttls or self.conn.secure:
                raise StreamError("unsupported-feature", "STARTTLS is not offered on this stream")
            self.conn.write(f"<proceed xmlns='{ns.TLS}'/>")
            self.want_tls = True
            return
        tls_missing = (
            self.conn.can_starttls and not self.conn.secure and self.server.config.tls.require_c2s
        )
        if tag in sasl2_payload.CLIENT_ELEMENTS:
            await self.sasl2.element(el)
            return
        if tag in (_AUTH, _RESPONSE, _ABORT):
            if tls_missing:
                self._sasl_failure(sasl.SaslFailure("encryption-required", "use STARTTLS first"))
                return
            await self._sasl_element(el)
            return
        if tag == qname(ns.CLIENT, "iq") and not tls_missing:
            result = await self.server.hooks.fire("c2s/unauthenticated-iq", self, el)
            if result is not None:
                return
        raise StreamError("not-authorized", "authenticate before sending anything else")

    def _sasl_failure(self, failure: sasl.SaslFailure) -> None:
        out = element(qname(ns.SASL, "failure"))
        sub(out, qname(ns.SASL, failure.condition))
        if failure.text:
            sub(out, qname(ns.SASL, "text"), {qname(ns.XML, "lang"): "en"}, failure.text)
        self.send(out)
        self._sasl_failures += 1
        if self._sasl_failures >= _MAX_SASL_FAILURES:
            raise StreamError("policy-violation", "too many failed authentication attempts")

    async def _sasl_element(self, el: Element) -> None:
        """RFC 6120 §6.4: the SASL exchange; credentials are fetched when the mechanism asks."""
        throttle = self.server.throttle
        ip = self.conn.peer.rpartition(":")[0] or self.conn.peer
        try:
            if el.tag == _ABORT:
                self._sasl = None
                raise sasl.SaslFailure("aborted")
            data = sasl.decode_b64(el.text or "") if (el.text or "").strip() else None
            if el.tag == _AUTH:
                if throttle.blocked_ip(ip):
                    raise sasl.SaslFailure("temporary-auth-failure", "too many failed logins; try later")
                mechanism = el.get("mechanism", "")
                self._sasl_mechanism = mechanism
                # A retry names its account anew; until it does, a failure is the address's alone.
                self._sasl_account = None
                self._sasl = sasl.SaslServer(
                    mechanism,
                    tls=self.conn.secure,
                    channel_binding=self.conn.channel_binding,
                    domain=self.host or self.server.config.domains[0],
                )
                step = self._sasl.start(data)
            else:
                if self._sasl is None:
                    raise sasl.SaslFailure("malformed-request", "no authentication in progress")
                step = self._sasl.respond(data or b"")
            while isinstance(step, sasl.NeedCredentials):
                assert self._sasl is not None
                host = self.host or ""
                self._sasl_account = _localpart(step.username, host)
                if self._sasl_account is not None and throttle.blocked_account(host, self._sasl_account):
                    raise sasl.SaslFailure("temporary-auth-failure", "too many failed logins; try later")
                step = self._sasl.provide_credentials(await stored_credentials(self.server, host, self._sasl_account))
            if isinstance(step, sasl.Challenge):
                self.send(element(qname(ns.SASL, "challenge"), text=sasl.encode_b64(step.data)))
                return
            assert self._sasl is not None and self._sasl_account is not None
            await still_current(self.server, self.host or "", self._sasl_account, self._sasl.credentials)
            assert self._sasl.credentials is not None
            self.login_keys = fingerprint(self._sasl.credentials)
            self._sasl = None
            throttle.success(self.host or "", self._sasl_account)
            self.username = self._sasl_account
            self.send(element(qname(ns.SASL, "success"), text=sasl.encode_b64(step.data) if step.data else None))
            log.info("%s@%s authenticated from %s with %s", self.username, self.host, self.conn.peer, self._sasl_mechanism)
            self.want_restart = True
        except sasl.SaslFailure as failure:
            user = self._sasl_account if self._sasl is not None else None
            self._sasl = None
            if failure.condition == "not-authorized":
                throttle.failure(self.host or "", user, ip)
            self._sasl_failure(failure)

    async def _bind(self, el: Element) -> None:
        """RFC 6120 §7: bind a resource; the legacy session request (RFC 3921 §3) is acknowledged."""
        stanza = Stanza(el, None, None)
        if el[0].tag == _SESSION:
            self.send(stanza.result())
            return
        requested = (el[0].findtext(qname(ns.BIND, "resource")) or "").strip()
        try:
            session = self.new_session(requested or secrets.token_hex(6))
        except StanzaError as err:
            self.send(stanza.error(err))
            return
        reply = element(_BIND)
        sub(reply, qname(ns.BIND, "jid"), text=str(session.jid))
        # The result goes out before the session is reachable: a stanza routed to it (a late reply
        # to the session it replaces) must not reach the client while it waits for the result.
        self.send(stanza.result(reply))
        log.info("bound %s from %s", session.jid, self.conn.peer)
        await self.register(session)

    def new_session(self, resource: str) -> Session:
        """RFC 6120 §7: this stream's session as ``resource`` (raises StanzaError); nothing is
        routed to it before :meth:`register`."""
        assert self.username is not None and self.host is not None
        try:
            jid = JID.parse(f"{self.username}@{self.host}/{resource}")
        except JIDError as err:
            raise StanzaError("bad-request", f"invalid resource: {err}") from None
        registry = self.server.sessions
        if registry.get(jid) is None and len(registry.resources(jid.bare)) >= self.server.config.limits.max_resources:
            raise StanzaError("resource-constraint", "too many sessions for this account")
        self.session = Session(jid, self, id=self.id, secure=self.conn.secure, peer=self.conn.peer)
        self.session.slot(LoginKeys).keys = self.login_keys
        self._sasl2 = None
        return self.session

    async def register(self, session: Session) -> None:
        """Make ``session`` reachable, once the client was told it is bound.

        RFC 6120 §7.7.2.2: the newer session wins; the one it replaces is unregistered, told why
        it goes, and as its own connection_lost() then won't announce the end, that is done
        here, before ``session-bound``. That comes before the session is reachable, so the output
        stages modules add there (stream management's count) see everything routed to it.
        """
        registry = self.server.sessions
        conflict = StreamError("conflict", "replaced by a new session with the same resource")
        while (old := registry.get(session.jid)) is not None and old is not session:
            registry.remove(old)
            old.close(conflict)
            await self.server.hooks.fire_all("session-closed", old)
        await self.server.hooks.fire_all("session-bound", session)
        # Another stream may have bound the resource while the handlers ran: the newest wins.
        old = registry.add(session)
        if old is not None and old is not session:
            old.close(conflict)
            await self.server.hooks.fire_all("session-closed", old)

    # Stanzas --------------------------------------------------------------------------------

    async def _handled(self, finish: Finish | None) -> None:
        """Count a stanza as handled once it, and every one read before it, finished (XEP-0198 §4).

        A stanza whose handlers deferred writes finishes later; the stream reads on meanwhile
        (the next message is routed while the last one's archive commit is under way), up to
        UNFINISHED_MAX stanzas, and then waits for storage to catch up.
        """
        if finish is None and self._unfinished is None:
            self.stanzas_handled += 1
            return
        if self._unfinished is None:
            self._unfinished = collections.deque()
            self._finisher = asyncio.ensure_future(self._finish_in_order(self._unfinished))
        self._unfinished.append(finish)
        if len(self._unfinished) > UNFINISHED_MAX:
            await self.finished()

    async def finished(self) -> None:
        """Wait until every stanza read so far finished routing and is counted as handled."""
        if self._finisher is not None:
            await asyncio.shield(self._finisher)

    async def _finish_in_order(self, unfinished: collections.deque[Finish | None]) -> None:
        try:
            while unfinished:
                finish = unfinished[0]
                if finish is not None:
                    try:
                        await finish()
                    except Unanswered as why:
                        log.info("not counting a stanza from %s: %s", self.conn.peer, why)
                        unfinished.popleft()
                        continue
                unfinished.popleft()
                self.stanzas_handled += 1
        finally:
            self._unfinished = None
            self._finisher = None

    async def _stanza(self, el: Element, session: Session) -> Finish | None:
        """RFC 6120 §8.1: check the addresses and the basic shape, stamp 'from', route; what
        finishes the routing, when it waits for writes (Router.begin)."""
        from_ = el.get("from")
        if from_ is not None and from_ != str(session.jid):
            try:
                claimed = JID.parse(from_)
            except JIDError:
                claimed = None
            if claimed is None or (claimed not in (session.jid, session.jid.bare)):
                raise StreamError("invalid-from", "'from' must be your own address")
        try:
            stanza = Stanza.parse(el)
        except StanzaError as err:
            el.set("from", str(session.jid))
            if el.get("type") != "error":
                session.send(Stanza(el, None, session.jid).error(err))
            return None
        stanza.set_from(session.jid)
        shape = stanza.shape_error()
        if shape is not None:
            if stanza.type != "error":
                session.send(stanza.error(shape))
            return None
        return await self.server.router.begin(stanza, session)

    # Resumption and teardown ----------------------------------------------------------------

    async def let_go(self) -> None:
        """End this stream because its session is resumed on another (XEP-0198 §5: the old stream
        SHOULD be terminated), with conflict, once the stanzas it read finished routing: they are
        counted in the 'h' the resumption reports, so the client does not send them again."""
        self.session = None
        self.close(StreamError("conflict", "the session was resumed on another connection"))
        if self._handling:
            self._handled_one = asyncio.Event()
            await self._handled_one.wait()
        await self.finished()

    def resume(self, session: Session) -> None:
        """Carry ``session`` on in this stream, with its JID, presence and module state
        (XEP-0198 §5); the stream it was on has let go of it (:meth:`let_go`)."""
        session.transport = self
        session.secure = self.conn.secure
        session.peer = self.conn.peer
        session.closed = False
        self.session = session
        self._sasl2 = None

    async def connection_lost(self) -> None:
        """The transport is gone: unregister the session and let modules react (e.g. unavailable presence).

        When neither side closed the stream, the event ``c2s/connection-lost`` (stream) asks first
        whether a module keeps the session for a later resumption: a handler that does returns
        HANDLED and then owns its end.
        """
        unfinished = not self.closed
        self.closed = True
        # Counted before anything reads the count (a resumption's 'h').
        await self.finished()
        session = self.session
        if session is None:
            return
        if unfinished and await self.server.hooks.fire("c2s/connection-lost", self) is not None:
            return
        session.closed = True
        if self.server.sessions.remove(session):
            await self.server.hooks.fire_all("session-closed", session)


def _is_session_request(el: Element) -> bool:
    """The RFC 3921 §3 session establishment request, kept optional for old clients."""
    return el.tag == _IQ and el.get("type") == "set" and len(el) == 1 and el[0].tag == _SESSION
