"""Incoming server-to-server streams (RFC 6120 §4-§5, §8; XEP-0220 dialback).

Another server connects to ``listen.s2s`` and opens a ``jabber:server`` stream to one of our
domains (a host, or a service domain such as the group chat service; else ``host-unknown``).
STARTTLS is required (§5): before it only the STARTTLS feature is offered, and dialback
verification requests, which reveal nothing, are the only other thing answered. After TLS
the peer authenticates its domain:

- with SASL EXTERNAL (§6, XEP-0178), offered when its certificate verified (:mod:`.certs`)
  and names the domain of its stream header, unless that is one of ours; the authorization
  identity, if given, must be that domain. Success restarts the stream.
- with dialback (XEP-0220), always offered, with dialback errors (§2.4.1): ``<db:result/>``
  is checked by asking that domain's authoritative server (:func:`.outbound.verify_key`)
  while the stream goes on, and answered valid, invalid (which ends the stream: a spoofing
  attempt, §2.1.2) or with an error (§2.4: the authoritative server could not be asked, or
  answered with an error). The initiating peer cannot advertise error handling on its own
  stream; §2.4 has the error sent to it anyway, since one that does not understand it at worst
  closes the stream. One stream may authenticate several pairs of domains this way (§4.5), with a
  few requests checked at once: each costs a connection to another server, and more end the
  stream with ``policy-violation``.

``<db:verify/>`` requests for keys we made (we are the authoritative server) are answered on
any stream.

Stanzas: each must carry a 'to' and a 'from' (§8.1.1.1, §8.1.2.2: else ``improper-addressing``)
that are addresses (§4.9.3.12: else ``improper-addressing``, ``invalid-from`` for the 'from'),
whose domains form an authenticated pair (else ``invalid-from``, or ``host-unknown`` for a
'to' we do not serve). They are then routed like the stanzas of local clients to their
recipients, in ``jabber:client`` inside the server.

Stream management (XEP-0198 §3-§4): offered after TLS, enabled (without resumption) once a
domain is authenticated. ``<a h='…'/>`` counts a stanza only after the router returned from it,
so whatever routing stored for it (offline storage, the archive) is written before the peer can
drop it from its queue; a last ``<a/>`` goes out whenever we close the stream.

Our side of an open stream gets a whitespace keepalive after ``limits.keepalive_interval``
without writing (§4.6.1), as outgoing streams do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import ssl
import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from cryptography import x509

from ...xmpp import ns
from ...xmpp.errors import StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import StanzaReceived, StreamClosed, StreamOpened
from ...xmpp.payloads.sm import ACK as SM_ACK
from ...xmpp.payloads.sm import ENABLE as SM_ENABLE
from ...xmpp.payloads.sm import FEATURE as SM_FEATURE
from ...xmpp.payloads.sm import MODULUS, Ack, Enable, Enabled, Failed, HandledCountError, SmError
from ...xmpp.payloads.sm import REQUEST as SM_REQUEST
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize, sub
from ..background import Background
from . import dialback
from .certs import names_domain, verified_peer
from .outbound import CLOSE_WAIT, Unreachable, verify_key
from .wire import Wire, header, to_client_namespace

if TYPE_CHECKING:
    from . import S2S

log = logging.getLogger(__name__)

_STREAM = qname(ns.STREAMS, "stream")
_STREAM_ERROR = qname(ns.STREAMS, "error")
_STARTTLS = qname(ns.TLS, "starttls")
_AUTH = qname(ns.SASL, "auth")
_STANZA_TAGS = frozenset(qname(ns.SERVER, kind) for kind in ("message", "presence", "iq"))
# Dialback requests of one stream checked at once: each opens a connection to another server.
_MAX_CHECKS = 32


def _domain(value: str | None) -> str | None:
    """The domain named by a stream or dialback attribute, if it names a bare domain."""
    if not value:
        return None
    try:
        jid = JID.parse(value)
    except JIDError:
        return None
    return jid.domain if jid.local is None and jid.resource is None else None


class IncomingStream:
    """One connection from another server: negotiation, dialback, then its stanzas."""

    def __init__(self, s2s: S2S, wire: Wire) -> None:
        self.s2s = s2s
        self.wire = wire
        self.id = ""
        self.local: str | None = None
        self.remote: str | None = None
        self.started = time.monotonic()
        # (their domain, our domain) pairs proven on this stream, and how (XEP-0220 §4.5: several).
        self.authenticated: dict[tuple[str, str], str] = {}
        # The peer's certificate, if it verified (SASL EXTERNAL is offered for the names in it).
        self.certificate: x509.Certificate | None = None
        self._checks = Background(log, "checking a dialback key failed")
        # XEP-0198 §4: the peer's stanzas handled since it enabled stream management; None: not enabled.
        self.handled: int | None = None

    async def run(self) -> None:
        """Serve the connection until either side closes it.

        While our stream is open, after ``limits.keepalive_interval`` without writing it gets a
        whitespace keepalive (RFC 6120 §4.6.1), as an outgoing stream does: a peer that sends
        nothing for a while would otherwise leave a dead connection unnoticed until
        ``limits.idle_timeout``, and NATs and firewalls on the way may forget a live one.
        Keepalives are output only: the peer's silence still ends the stream.
        """
        wire = self.wire
        limits = self.s2s.server.config.limits
        try:
            while not wire.closing:
                now = time.monotonic()
                if self.authenticated:
                    wait = wire.last_read + limits.idle_timeout - now
                else:
                    wait = self.started + limits.auth_timeout - now
                if self.id:
                    # Only once our header went: nothing may come before its XML declaration.
                    quiet = wire.last_write + limits.keepalive_interval - now
                    if quiet <= 0:
                        wire.write(" ")
                        continue
                    wait = min(wait, quiet)
                try:
                    event = await wire.next_event(max(wait, 0))
                except TimeoutError:
                    now = time.monotonic()
                    if not self.authenticated:
                        if self.started + limits.auth_timeout > now:
                            continue  # a keepalive is due
                        raise StreamError("connection-timeout", "authentication took too long") from None
                    if wire.last_read + limits.idle_timeout > now:
                        # A keepalive is due, or authenticated while it waited: idle counts
                        # from the last read.
                        continue
                    log.info("closing idle s2s stream from %s (%s)", self.remote, wire.peer)
                    self.close(StreamError("connection-timeout", "no traffic for too long"))
                    await self._until_closed()
                    return
                if event is None:
                    return
                if isinstance(event, StreamClosed):
                    self.close()
                    return
                if isinstance(event, StreamOpened):
                    self._open(event.name, event.attrs, event.default_ns)
                else:
                    await self._element(event.element)
        except StreamError as err:
            log.info("closing s2s stream from %s (%s): %s", self.remote, wire.peer, err)
            self._header_if_needed()
            self.close(err)
        except (ConnectionError, ssl.SSLError, OSError) as err:
            log.info("s2s connection from %s (%s) lost: %s", self.remote, wire.peer, err)
        finally:
            self._checks.cancel()
            await wire.aclose()

    def close(self, error: StreamError | None = None) -> None:
        """Close our stream (RFC 6120 §4.4, with ``error`` if given); with stream management on,
        an ack of what was handled goes first (XEP-0198 §4), so that the peer does not send that
        again on a new stream, and learns that what it sent after it was not taken."""
        if self.handled is not None and not self.wire.closing:
            self.wire.send(Ack(self.handled).to_xml())
        self.wire.close_with(error)

    async def _until_closed(self) -> None:
        """XEP-0190, RFC 6120 §4.4: after our close, handle the stanzas the peer sent before it
        saw it, until its own close (or :data:`.outbound.CLOSE_WAIT`), so that none is lost."""
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                while isinstance(event := await self.wire.next_event(CLOSE_WAIT), StanzaReceived | StreamOpened):
                    if isinstance(event, StanzaReceived) and event.element.tag in _STANZA_TAGS:
                        await self._stanza(event.element)
        except TimeoutError:
            log.info("s2s peer %s (%s) did not close its stream", self.remote, self.wire.peer)

    def _header_if_needed(self) -> None:
        """RFC 6120 §4.9.1.1: a stream error before our header goes after a header of ours."""
        if not self.id:
            self.id = secrets.token_urlsafe(16)
            self.wire.write(header(self.local or self.s2s.server.config.domains[0], None, self.id))

    def _open(self, name: str, attrs: dict[str, str], default_ns: str | None) -> None:
        """RFC 6120 §4.7: check the header, answer with ours and the features (§4.3.2)."""
        if name != _STREAM:
            raise StreamError("invalid-namespace", "expected <stream:stream> in the streams namespace")
        if default_ns != ns.SERVER:
            raise StreamError("invalid-namespace", "a server-to-server stream's default namespace is jabber:server")
        local = _domain(attrs.get("to"))
        if local is None or local not in self.s2s.local_domains():
            raise StreamError("host-unknown", f"this server does not serve {attrs.get('to')!r}")
        self.local = local
        self.remote = _domain(attrs.get("from")) or self.remote
        if not attrs.get("version", "").startswith("1."):
            # Without stream features there is no STARTTLS, and TLS is required.
            raise StreamError("unsupported-version", "this server speaks XMPP 1.0 with TLS only")
        # §4.7.3: every stream, the one after TLS too, gets an id of its own.
        self.id = secrets.token_urlsafe(16)
        self.wire.write(header(local, self.remote, self.id))
        features = element(qname(ns.STREAMS, "features"))
        if not self.wire.secure:
            sub(sub(features, _STARTTLS), qname(ns.TLS, "required"))
        else:
            if self._external_for() is not None:
                sub(sub(features, qname(ns.SASL, "mechanisms")), qname(ns.SASL, "mechanism"), text="EXTERNAL")
            # XEP-0220 §2.4.1: we send and understand dialback errors.
            sub(sub(features, qname(dialback.FEATURE, "dialback")), qname(dialback.FEATURE, "errors"))
            # XEP-0198: enabled once a domain is authenticated (dialback sends no new features).
            sub(features, SM_FEATURE)
        self.wire.send(features)

    def _external_for(self) -> str | None:
        """The domain SASL EXTERNAL would authenticate: the header's, if the certificate names it,
        nothing authenticated it yet (§6.4.6: no SASL after SASL success) and it is not one of
        ours (a certificate naming it, a wildcard or a web server's, makes no peer us; dialback
        refuses our domains too)."""
        remote, local = self.remote, self.local
        if self.certificate is None or remote is None or local is None or self.authenticated:
            return None
        if remote in self.s2s.local_domains():
            return None
        return remote if names_domain(self.certificate, remote) else None

    async def _element(self, el: Element) -> None:
        tag = el.tag
        if tag == _STREAM_ERROR:
            log.info("s2s peer %s sent a stream error: %s", self.remote, serialize(el))
            self.wire.close_with()
        elif not self.id:
            raise StreamError("not-authorized", "open the stream first")
        elif tag == _STARTTLS:
            await self._starttls()
        elif tag == dialback.VERIFY:
            self._answer_verify(el)
        elif not self.wire.secure:
            raise StreamError("policy-violation", "STARTTLS is required before anything else")
        elif tag == dialback.RESULT:
            self._dialback(el)
        elif tag == _AUTH:
            self._sasl_external(el)
        elif tag in _STANZA_TAGS:
            await self._stanza(el)
            if self.handled is not None:
                # Counted only now that routing (and whatever it stored) is done.
                self.handled = (self.handled + 1) % MODULUS
        elif tag in (SM_ENABLE, SM_REQUEST, SM_ACK):
            self._stream_management(el)
        elif tag.startswith(f"{{{ns.SASL}}}"):
            raise StreamError("unsupported-feature", "only SASL EXTERNAL in one <auth/> is offered here")
        else:
            raise StreamError("unsupported-stanza-type", f"unexpected element {tag}")

    async def _starttls(self) -> None:
        """RFC 6120 §5.4.2: proceed, then TLS; the peer opens a new stream."""
        if self.wire.secure:
            raise StreamError("unsupported-feature", "TLS is in place already")
        self.wire.write(f"<proceed xmlns='{ns.TLS}'/>")
        context = self.s2s.server_context
        await self.wire.start_tls(context)
        if self.s2s.peer_certificates:
            self.certificate = verified_peer(self.wire.writer.get_extra_info("ssl_object"), context)
        self.id = ""

    def _sasl_external(self, el: Element) -> None:
        """RFC 6120 §6.4, XEP-0178 §3: the certificate proves the domain; the stream restarts."""
        domain = self._external_for()
        if el.get("mechanism") != "EXTERNAL" or domain is None:
            self._sasl_failure("invalid-mechanism")
            return
        text = (el.text or "").strip()
        try:
            authzid = base64.b64decode(text, validate=True).decode() if text not in ("", "=") else ""
        except (binascii.Error, UnicodeDecodeError):
            self._sasl_failure("incorrect-encoding")
            return
        if authzid not in ("", domain):
            self._sasl_failure("invalid-authzid")
            return
        assert self.local is not None
        self.wire.send(element(qname(ns.SASL, "success")))
        self._authenticated(domain, self.local, "SASL EXTERNAL")
        # §6.4.6: a new stream follows, on a new parser; nothing read after <success/> counts.
        self.wire.restart()
        self.id = ""

    def _sasl_failure(self, condition: str) -> None:
        failure = element(qname(ns.SASL, "failure"))
        sub(failure, qname(ns.SASL, condition))
        self.wire.send(failure)

    def _authenticated(self, remote: str, local: str, method: str) -> None:
        self.authenticated[(remote, local)] = method
        self.wire.set_stanza_limit(self.s2s.server.config.limits.max_stanza_size)
        log.info("s2s %s -> %s authenticated by %s (%s)", remote, local, method, self.wire.peer)

    def _stream_management(self, el: Element) -> None:
        """XEP-0198 §3-§4 for the peer's stanzas: enable (without resumption), answer ``<r/>``."""
        if el.tag == SM_ENABLE:
            if not self.authenticated or self.handled is not None:
                self.wire.send(Failed("unexpected-request").to_xml())
                return
            try:
                Enable.from_xml(el)
            except SmError:
                self.wire.send(Failed("bad-request").to_xml())
                return
            # §5: resumption is not offered between servers; a broken link's sender sends again.
            self.handled = 0
            self.wire.send(Enabled().to_xml())
        elif self.handled is None:
            raise StreamError("unsupported-stanza-type", "stream management is not enabled on this stream")
        elif el.tag == SM_REQUEST:
            self.wire.send(Ack(self.handled).to_xml())
        else:
            try:
                h = Ack.from_xml(el).h
            except SmError as err:
                raise StreamError("bad-format", str(err)) from None
            if h != 0:
                # Nothing is sent to the peer on its stream, so nothing can be acknowledged.
                raise HandledCountError(h, 0)

    def _answer_verify(self, el: Element) -> None:
        """XEP-0220 §2.1.4: we are the authoritative server; is the key one of ours?"""
        receiving, originating, stream_id = _domain(el.get("from")), _domain(el.get("to")), el.get("id")
        if receiving is None or originating is None or not stream_id:
            raise StreamError("improper-addressing", "db:verify needs 'from', 'to' and 'id'")
        valid = originating in self.s2s.local_domains() and dialback.key_matches(
            self.s2s.secret, receiving, originating, stream_id, el.text or ""
        )
        self.wire.send(dialback.verify(originating, receiving, stream_id, type_="valid" if valid else "invalid"))

    def _dialback(self, el: Element) -> None:
        """XEP-0220 §2.1.2: the peer claims a domain; its authoritative server decides meanwhile."""
        remote, local, key = _domain(el.get("from")), _domain(el.get("to")), (el.text or "").strip()
        if remote is None or local is None:
            raise StreamError("improper-addressing", "db:result needs 'from' and 'to' domains")
        if local not in self.s2s.local_domains():
            self.wire.send(dialback.error_result(local, remote, "item-not-found"))
            return
        if not key or remote in self.s2s.local_domains():
            self._refuse(local, remote)
            return
        if len(self._checks) >= _MAX_CHECKS:
            raise StreamError("policy-violation", f"at most {_MAX_CHECKS} dialback requests may wait at once")
        self._checks.spawn(self._check(remote, local, key, self.id))

    async def _check(self, remote: str, local: str, key: str, stream_id: str) -> None:
        try:
            valid = await verify_key(self.s2s, local, remote, stream_id, key)
        except Unreachable as err:
            log.info("dialback for %s -> %s: cannot ask %s: %s", remote, local, remote, err)
            self.wire.send(dialback.error_result(local, remote, "remote-server-not-found"))
            return
        if stream_id != self.id:
            return  # the stream restarted meanwhile: the key was for one that is gone
        if not valid:
            self._refuse(local, remote)
            # Wake the reading loop, which may wait long for the peer's next byte.
            await self.wire.aclose()
            return
        self._authenticated(remote, local, "dialback")
        self.wire.send(dialback.result(local, remote, type_="valid"))

    def _refuse(self, local: str, remote: str) -> None:
        """XEP-0220 §2.1.2: a key that is not the authoritative server's is an attempt to pose
        as its domain; it is answered 'invalid' and the stream ends."""
        log.info("s2s %s -> %s: dialback key invalid (%s); closing", remote, local, self.wire.peer)
        self.wire.send(dialback.result(local, remote, type_="invalid"))
        self.close()

    async def _stanza(self, el: Element) -> None:
        """RFC 6120 §8.1.1.2, §8.1.2.2, §13.1: addresses of an authenticated pair, then route."""
        from_, to = el.get("from"), el.get("to")
        if not from_ or not to:
            raise StreamError("improper-addressing", "a stanza between servers names its 'from' and 'to'")
        try:
            sender = JID.parse(from_)
        except JIDError:
            raise StreamError("invalid-from", f"{from_!r} is not an address") from None
        try:
            recipient = JID.parse(to)
        except JIDError:
            raise StreamError("improper-addressing", f"{to!r} is not an address") from None
        if (sender.domain, recipient.domain) not in self.authenticated:
            if recipient.domain not in self.s2s.local_domains():
                raise StreamError("host-unknown", f"this server does not serve {recipient.domain}")
            raise StreamError("invalid-from", f"{sender.domain} is not authenticated on this stream")
        to_client_namespace(el)
        # A bad address has ended the stream above (§4.9.3.12), so the addresses need no second
        # parse and no stanza error answers one.
        stanza = Stanza(el, recipient, sender)
        shape = stanza.shape_error()
        if shape is not None:
            if not stanza.is_response:
                await self.s2s.server.router.send(stanza.error(shape))
            return
        await self.s2s.server.router.route(stanza, None)


async def serve_s2s(s2s: S2S, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Run one incoming server-to-server connection until it closes."""
    wire = Wire(reader, writer, s2s.server.config.limits)
    # Until a domain is authenticated, stanzas are bounded as on an unauthenticated client stream.
    wire.set_stanza_limit(s2s.server.config.limits.max_stanza_size_unauthenticated)
    stream = IncomingStream(s2s, wire)
    s2s.incoming.add(stream)
    try:
        await stream.run()
    except Exception:
        log.exception("unexpected failure on s2s connection %s", wire.peer)
    finally:
        s2s.incoming.discard(stream)
