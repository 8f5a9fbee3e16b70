"""Outgoing server-to-server streams (RFC 6120 §4-§6, XEP-0178, XEP-0220, XEP-0368).

One :class:`Route` per pair of domains (ours, theirs) carries our stanzas to the other server
and is reused while it lasts. It resolves the domain (:mod:`.resolve`), connects, opens a
``jabber:server`` stream, requires STARTTLS (§5: a peer that does not offer it is not used)
and authenticates our domain: with SASL EXTERNAL (§6, XEP-0178) when the peer's certificate
verified for its domain and the peer offers EXTERNAL, else with Server Dialback (XEP-0220).
A certificate that does not verify costs one reconnection without verification; dialback then
proves the domain through DNS, as XEP-0220 intends. Stanzas wait in a queue (at most
``[s2s] max_queue``) while that runs. When it fails, each waiting stanza that is not itself a
response (an error or an IQ result, §8.2.3, §8.3.1) bounces (§8.3.3):
``remote-server-timeout`` if a server of the domain did not answer within ``connect_timeout``
(each one tried, in order, gets that long; all together at most three times it), if
authentication took longer, or if the peer answered dialback with an error or ended the stream
meanwhile (XEP-0220 §2.1.1, §2.4),
``internal-server-error`` if it answered 'invalid', else ``remote-server-not-found``; a stanza
sent while they bounce starts a new route. A stream we wrote nothing on for
``limits.keepalive_interval`` gets a whitespace keepalive (§4.6.1). A route that carried no
stanza for ``idle_timeout`` (keepalives and acks do not count) closes its stream and waits for
the peer's close (§4.4), so that the peer has read everything.

When the peer offers XEP-0198 stream management, the route enables it (:mod:`.sm`): a
connection that ends with stanzas unacknowledged is replaced, and they go first on the new one,
again and again after pauses that grow (1 s doubling to :data:`_MAX_BACKOFF`), until the peer
acknowledges them or ``retry_window`` has passed since the link broke without an ack; then they
bounce, each once, with ``remote-server-timeout``. What the peer acknowledged never goes again;
what it handled and had not acknowledged when the link broke arrives twice (at-least-once;
receivers drop duplicates by id). A stanza the peer ends every stream over (a stream error that blames what
it was sent) is found by sending it alone, and goes back to its sender (with the peer's
condition, or ``not-acceptable``) at once, so that it does not hold up the rest; one it cuts
every connection over without a word, as a flaky network may do too, goes back only when the
retry window has run out (:meth:`Route._refused`). Without stream management a stanza counts as
delivered once written: nothing goes twice, and one written as the link breaks is lost without
a bounce.

At a shutdown (:meth:`.S2S.stop`) a route sends what waits, asks for acks and closes its stream;
it makes no new connection, and what is then left bounces.

:func:`verify_key` is the receiving server's side of dialback: it asks the authoritative
server of a domain, on a connection of its own, whether a key is right (§2.1.3).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import STANZA_CONDITIONS, StanzaError, StreamError
from ...xmpp.parser import Event, StanzaReceived, StreamClosed, StreamOpened
from ...xmpp.payloads.sm import ACK as SM_ACK
from ...xmpp.payloads.sm import ENABLED as SM_ENABLED
from ...xmpp.payloads.sm import FAILED as SM_FAILED
from ...xmpp.payloads.sm import FEATURE as SM_FEATURE
from ...xmpp.payloads.sm import REQUEST as SM_REQUEST
from ...xmpp.payloads.sm import Ack, Enable, SmError
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from . import dialback
from .resolve import Endpoint, NoService, endpoints
from .sm import Unacked
from .wire import Wire, header

if TYPE_CHECKING:
    from . import S2S

log = logging.getLogger(__name__)

_STREAM = qname(ns.STREAMS, "stream")
_FEATURES = qname(ns.STREAMS, "features")
_STREAM_ERROR = qname(ns.STREAMS, "error")
_STREAM_ERROR_TEXT = qname(ns.STREAM_ERRORS, "text")
# Stream errors that speak of the stream or the peer's state, not of anything we sent on it.
_NOT_ABOUT_INPUT = frozenset({"conflict", "connection-timeout", "host-gone", "internal-server-error",
                              "remote-connection-failed", "reset",
                              "resource-constraint", "see-other-host", "system-shutdown", "unsupported-version"})
_STARTTLS = qname(ns.TLS, "starttls")
_PROCEED = qname(ns.TLS, "proceed")
_MECHANISM = f"{{{ns.SASL}}}mechanisms/{{{ns.SASL}}}mechanism"
_SUCCESS = qname(ns.SASL, "success")
_DIALBACK_FEATURE = qname(dialback.FEATURE, "dialback")
# How long a closed stream waits for the peer's close (RFC 6120 §4.4) before the connection goes.
CLOSE_WAIT = 10.0
# Reaching a domain, however many servers it lists, takes at most this many times
# connect_timeout (each server tried may take connect_timeout).
_CONNECT_BOUND = 3
# The longest pause between attempts to reach a peer again after a connection broke.
_MAX_BACKOFF = 30.0


class Unreachable(Exception):
    """The other server could not be reached or would not accept us; ``str()`` says why."""


class Unencodable(Unreachable):
    """The domain is no name DNS can carry (IDNA2008, RFC 5891): no server is found under it."""


class Refused(Unreachable):
    """The peer would not take stanzas from our domain (XEP-0220 §2.1.1); ``condition`` is
    what the waiting stanzas bounce with."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition


class _Untrusted(Exception):
    """The peer's certificate did not verify for its domain."""


@dataclass
class Negotiated:
    """A stream whose TLS is in place: its wire, the id the peer gave it, its features."""

    wire: Wire
    stream_id: str
    features: Element
    verified: bool


def _stream_error(el: Element) -> tuple[str, str | None]:
    """The condition of a peer's ``<stream:error/>`` and its text, if any (RFC 6120 §4.9.2)."""
    conditions = [c for c in el if c.tag.startswith(f"{{{ns.STREAM_ERRORS}}}")]
    condition = next((c.tag.partition("}")[2] for c in conditions if c.tag != _STREAM_ERROR_TEXT),
                     "undefined-condition")
    text = next((c.text for c in conditions if c.tag == _STREAM_ERROR_TEXT), None)
    return condition, text


async def _element(wire: Wire, timeout: float) -> Element:
    """The next top-level element from the peer; a stream error or a closed stream ends the try."""
    event = await wire.next_event(timeout)
    if event is None:
        raise Unreachable("the connection closed")
    if not isinstance(event, StanzaReceived):
        raise Unreachable("the stream closed or restarted unexpectedly")
    el = event.element
    if el.tag == _STREAM_ERROR:
        raise Unreachable(f"stream error {_stream_error(el)[0]}")
    return el


async def _stream_start(wire: Wire, local: str, remote: str, timeout: float) -> tuple[str, Element]:
    """Send our header; read theirs (its id) and the stream features (RFC 6120 §4.2, §4.3.2)."""
    wire.write(header(local, remote))
    event = await wire.next_event(timeout)
    if not isinstance(event, StreamOpened):
        raise Unreachable("no stream header")
    if event.name != _STREAM or event.default_ns != ns.SERVER:
        raise Unreachable("the peer did not open a jabber:server stream")
    stream_id = event.attrs.get("id")
    if not stream_id:
        raise Unreachable("the peer's stream header has no id")
    if not event.attrs.get("version", "").startswith("1."):
        raise Unreachable("the peer does not speak XMPP 1.0 (no TLS without stream features)")
    features = await _element(wire, timeout)
    if features.tag != _FEATURES:
        raise Unreachable("no stream features")
    return stream_id, features


async def _open(s2s: S2S, local: str, remote: str, endpoint: Endpoint, verify: bool, timeout: float) -> Negotiated:
    """Connect to one endpoint and bring the stream up to TLS (RFC 6120 §5)."""
    context = s2s.client_context(verify)
    direct = endpoint.direct_tls
    try:
        reader, writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=context if direct else None,
            server_hostname=remote if direct else None, limit=65536,
        )
    except ssl.SSLCertVerificationError as err:
        raise _Untrusted(str(err)) from None
    wire = Wire(reader, writer, s2s.server.config.limits, secure=direct)
    try:
        stream_id, features = await _stream_start(wire, local, remote, timeout)
        if not wire.secure:
            if features.find(_STARTTLS) is None:
                raise Unreachable("the peer does not offer STARTTLS, and TLS is required")
            wire.write(f"<starttls xmlns='{ns.TLS}'/>")
            if (await _element(wire, timeout)).tag != _PROCEED:
                raise Unreachable("the peer refused STARTTLS")
            try:
                await wire.start_tls(context, server_hostname=remote)
            except ssl.SSLCertVerificationError as err:
                raise _Untrusted(str(err)) from None
            stream_id, features = await _stream_start(wire, local, remote, timeout)
    except BaseException:
        await wire.aclose()
        raise
    return Negotiated(wire, stream_id, features, verify)


async def connect(s2s: S2S, local: str, remote: str, timeout: float) -> Negotiated:
    """Resolve ``remote`` and try each endpoint until one gives a stream with TLS (RFC 6120 §3.2.1).

    Each try may take ``timeout``: a server that takes the connection and stays silent costs
    that, and the next endpoint still gets its turn; the whole, resolution included, at most
    :data:`_CONNECT_BOUND` times it. With ``[s2s] verify``, a certificate that does not verify
    is tried once more without verification, for dialback. Raises :class:`Unreachable`
    (:class:`Unencodable` for a domain that cannot be looked up at all), or TimeoutError when
    no endpoint worked and time ran out for one of them or for the whole.
    """
    reasons: list[str] = []
    timed_out = False
    async with asyncio.timeout(timeout * _CONNECT_BOUND):
        try:
            found = await endpoints(remote, s2s.config.hosts, dns_servers=s2s.config.dns_servers)
        except NoService as err:
            raise Unreachable(str(err)) from None
        except ValueError as err:
            # The resolver encodes the name with IDNA2008, stricter than the JID rules that let it in.
            raise Unencodable(f"{remote} is not a name DNS can carry: {err}") from None
        for endpoint in found:
            for verify in (True, False) if s2s.config.verify else (False,):
                try:
                    async with asyncio.timeout(timeout):
                        return await _open(s2s, local, remote, endpoint, verify, timeout)
                except _Untrusted as err:
                    log.info("certificate of %s at %s:%d does not verify (%s); trying dialback",
                             remote, endpoint.host, endpoint.port, err)
                    continue
                except TimeoutError:
                    reasons.append(f"{endpoint.host}:{endpoint.port}: no answer within {timeout:g} s")
                    timed_out = True
                    break
                except (OSError, Unreachable, StreamError) as err:
                    reasons.append(f"{endpoint.host}:{endpoint.port}: {err}")
                    break
    if timed_out:
        raise TimeoutError("; ".join(reasons))
    raise Unreachable("; ".join(reasons) or f"no address for {remote}")


async def authenticate(s2s: S2S, negotiated: Negotiated, local: str, remote: str, timeout: float) -> str:
    """Authenticate ``local`` to the peer: SASL EXTERNAL if it can, else dialback. Returns which."""
    wire = negotiated.wire
    mechanisms = {(m.text or "").strip() for m in negotiated.features.iterfind(_MECHANISM)}
    if negotiated.verified and "EXTERNAL" in mechanisms:
        # XEP-0178 §3: the authorization identity is our domain.
        wire.send(element(qname(ns.SASL, "auth"), {"mechanism": "EXTERNAL"},
                          text=base64.b64encode(local.encode()).decode()))
        answer = await _element(wire, timeout)
        if answer.tag == _SUCCESS:
            wire.restart()
            _, negotiated.features = await _stream_start(wire, local, remote, timeout)
            return "SASL EXTERNAL"
        log.info("%s refused SASL EXTERNAL for %s; trying dialback", remote, local)
    if negotiated.features.find(_DIALBACK_FEATURE) is None:
        raise Unreachable("the peer offers neither SASL EXTERNAL for us nor dialback")
    key = dialback.dialback_key(s2s.secret, remote, local, negotiated.stream_id)
    wire.send(dialback.result(local, remote, key))
    while True:
        try:
            answer = await _element(wire, timeout)
        except Unreachable as err:
            # §2.1.1: a stream closed while the result is awaited counts as a dialback error.
            raise Refused("remote-server-timeout", f"{remote} ended the stream during dialback: {err}") from None
        if answer.tag != dialback.RESULT or answer.get("from") != remote or answer.get("to") != local:
            continue
        verdict = answer.get("type")
        if verdict == "valid":
            return "dialback"
        if verdict == "invalid":
            # §2.1.1: the authoritative server disowned our key; the queue gets internal-server-error.
            raise Refused("internal-server-error", f"{remote} was told our dialback key for {local} is not valid")
        # §2.1.1, §2.4: any other answer is an error, and the queue gets remote-server-timeout.
        condition = dialback.error_condition(answer)
        meaning = dialback.ERROR_MEANINGS.get(condition, condition).format(local=local, remote=remote)
        raise Refused("remote-server-timeout", f"{remote} refused dialback for {local}: {meaning}")


async def verify_key(s2s: S2S, local: str, remote: str, stream_id: str, key: str) -> bool:
    """XEP-0220 §2.1.3: ask the authoritative server of ``remote`` whether ``key`` is right.

    ``local`` is our domain (the receiving one), ``stream_id`` the id of the stream on which
    ``remote`` sent the key. Raises :class:`Unreachable` when there is no answer, however the
    connection failed, or the answer is a dialback error, so that the request it checks is
    answered with an error (§2.4).
    """
    timeout = s2s.config.connect_timeout
    started = time.monotonic()
    try:
        negotiated = await connect(s2s, local, remote, timeout)
        wire = negotiated.wire
        try:
            wire.send(dialback.verify(local, remote, stream_id, key))
            async with asyncio.timeout(timeout):
                while True:
                    answer = await _element(wire, timeout)
                    if answer.tag == dialback.VERIFY and answer.get("id") == stream_id:
                        if answer.get("type") == "error":
                            # §2.4: not a verdict on the key, so the request it checks gets an error.
                            raise Unreachable(f"{remote} answered the verification with "
                                              f"{dialback.error_condition(answer)}")
                        return answer.get("type") == "valid"
        finally:
            wire.close_with()
            await wire.aclose()
    except TimeoutError:
        raise Unreachable(f"no dialback answer from {remote} within {time.monotonic() - started:.0f} s") from None
    except (OSError, StreamError) as err:
        raise Unreachable(f"no dialback answer from {remote}: {err}") from None


class Route:
    """The outgoing stream from one of our domains to one remote domain, and its queue.

    With stream management (:mod:`.sm`), a connection that ends with stanzas unacknowledged is
    replaced by a new one that sends them again, first, with growing pauses between attempts,
    for up to ``[s2s] retry_window``; after that they bounce with ``remote-server-timeout``,
    each once.
    """

    def __init__(self, s2s: S2S, local: str, remote: str) -> None:
        self.s2s = s2s
        self.local = local
        self.remote = remote
        self.queue: list[Stanza] = []
        self.wire: Wire | None = None
        # The stream's XEP-0198 state, when the peer enabled stream management on it.
        self.acks: Unacked | None = None
        # How our domain was authenticated: "SASL EXTERNAL" or "dialback", once it was.
        self.method: str | None = None
        # Connections made so far (the first, and those that replaced broken ones).
        self.connections = 0
        # When the stream last carried a stanza, or came up: what idle is measured from. The
        # peer's keepalives and acks are traffic, but no use of the route.
        self._last_stanza = time.monotonic()
        # The stanza sent alone on this connection, the rest held back until it is acknowledged,
        # after the peer ended the last one with a stream error that blames what it was sent.
        self._probe: Stanza | None = None
        # The condition and text of the stream error the peer ended this connection with.
        self._peer_error: tuple[str, str | None] | None = None
        # Whether the peer cut this connection: its end of input or a reset, without a stream
        # error or a close of its stream, and not after a close or a cut of ours.
        self._peer_cut = False
        self.done = False
        self.task = asyncio.create_task(self._run(), name=f"s2s {local} -> {remote}")

    @property
    def ready(self) -> bool:
        return self.wire is not None and not self.wire.closing

    def send(self, stanza: Stanza) -> None:
        """Write ``stanza`` now if the stream is up, else queue it (raises StanzaError when full)."""
        if self.ready and self._probe is None:
            if self.acks is not None and len(self.acks.stanzas) >= self.s2s.config.max_queue:
                raise StanzaError("resource-constraint", f"too many stanzas unacknowledged by {self.remote}")
            self._write(stanza)
            return
        if len(self.queue) >= self.s2s.config.max_queue:
            raise StanzaError("resource-constraint", f"too many stanzas waiting for {self.remote}")
        self.queue.append(stanza)

    @property
    def pending(self) -> bool:
        """Whether stanzas wait to be sent or acknowledged."""
        return bool(self.queue) or (self.acks is not None and bool(self.acks.stanzas))

    def shut_down(self, error: StreamError) -> None:
        """The server is shutting down (:attr:`.S2S.stopping`): close the stream now if it is
        up; a route still connecting sends its queue first and closes then (:meth:`_carry`)."""
        if self.ready:
            assert self.wire is not None
            self._close(self.wire, error)

    def _close(self, wire: Wire, error: StreamError | None = None) -> None:
        """Close our stream, asking first for an ack of what the peer has not acknowledged, so
        that what it answers before its close (RFC 6120 §4.4) is not sent again."""
        if self.acks is not None:
            self.acks.request()
        wire.close_with(error)

    def _write(self, stanza: Stanza) -> None:
        assert self.wire is not None
        self._last_stanza = time.monotonic()
        if self.acks is not None:
            self.acks.send(stanza)
        else:
            self.wire.send(stanza.el)

    async def _run(self) -> None:
        config = self.s2s.config
        # When a connection ended with stanzas unacknowledged (they are first in the queue).
        broken_since: float | None = None
        backoff = 1.0
        try:
            while True:
                started = time.monotonic()
                try:
                    wire = await self._establish()
                except (TimeoutError, Unreachable, OSError, StreamError) as err:
                    if isinstance(err, TimeoutError):
                        condition = "remote-server-timeout"
                        text = f"{self.remote} did not answer within {time.monotonic() - started:.0f} s"
                    elif isinstance(err, Refused):
                        condition, text = err.condition, str(err)
                    else:
                        condition, text = "remote-server-not-found", f"cannot reach {self.remote}: {err}"
                    # A name no server can have is worth the operator's notice, but is no fault here.
                    log.log(logging.WARNING if isinstance(err, Unencodable) else logging.INFO,
                            "s2s %s -> %s failed: %s", self.local, self.remote, text)
                    if broken_since is None or self.s2s.stopping:
                        await self._bounce(condition, text)
                        return
                    left = config.retry_window - (time.monotonic() - broken_since)
                    if left <= 0:
                        await self._bounce("remote-server-timeout",
                                           f"{self.remote} was unreachable for {config.retry_window:g} s")
                        return
                    await asyncio.sleep(min(backoff, left))
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                unacked, progressed = await self._carry(wire)
                if self.s2s.stopping:
                    # No new connection at a shutdown: what is left bounces.
                    self.queue[:0] = unacked
                    return
                expired = broken_since is not None and time.monotonic() - broken_since >= config.retry_window
                if await self._refused(unacked, expired):
                    progressed = True
                if progressed:
                    broken_since, backoff = None, 1.0
                if unacked:
                    self.queue[:0] = unacked
                    if broken_since is None:
                        broken_since = time.monotonic()
                    else:
                        # Connections come up but acknowledge nothing: the window runs on, and
                        # the peer is not hammered.
                        left = config.retry_window - (time.monotonic() - broken_since)
                        if left <= 0:
                            await self._bounce("remote-server-timeout", f"{self.remote} acknowledged nothing "
                                               f"for {config.retry_window:g} s")
                            return
                        await asyncio.sleep(min(backoff, left))
                        backoff = min(backoff * 2, _MAX_BACKOFF)
                    log.info("s2s %s -> %s: %d stanzas unacknowledged; sending them again on a new connection",
                             self.local, self.remote, len(unacked))
                if not self.queue:
                    return
        except Exception:
            log.exception("s2s %s -> %s failed", self.local, self.remote)
        finally:
            self._retire()
            if self.acks is not None:
                self.queue[:0] = self.acks.close()
                self.acks = None
            if self.wire is not None:
                self.wire.close_with()
                await self.wire.aclose()
                self.wire = None
            # Whatever is still queued (a stop while connecting or resending) is told it did not go.
            await self._bounce("remote-server-timeout", "the connection to the other server ended")

    async def _establish(self) -> Wire:
        """Connect, authenticate, and enable stream management if the peer offers it (§3)."""
        s2s = self.s2s
        timeout = s2s.config.connect_timeout
        negotiated = await connect(s2s, self.local, self.remote, timeout)
        wire = negotiated.wire
        try:
            async with asyncio.timeout(timeout):
                self.method = await authenticate(s2s, negotiated, self.local, self.remote, timeout)
                if negotiated.features.find(SM_FEATURE) is not None:
                    wire.send(Enable().to_xml())
                    while (answer := await _element(wire, timeout)).tag not in (SM_ENABLED, SM_FAILED):
                        continue
                    if answer.tag == SM_ENABLED:
                        self.acks = Unacked(wire, s2s.config, lambda: _cut(wire))
        except BaseException:
            self.acks = None
            await wire.aclose()
            raise
        self.connections += 1
        log.info("s2s %s -> %s established (%s, %s%s)", self.local, self.remote, self.method, wire.peer,
                 ", stream management" if self.acks is not None else "")
        return wire

    async def _refused(self, unacked: list[Stanza], expired: bool) -> bool:
        """After a connection ended with ``unacked`` (sent again first on the next one): find
        a stanza the peer will not take, and bounce it. True if the peer refused one with a
        stream error: that is an answer, and the retry window starts anew.

        A peer may end the stream over one stanza it refuses for a reason of its own (a stream
        error that blames what it was sent), or cut the connection over it without a word (it
        closes the socket, or crashes, on reading it). That stanza would end every new
        connection again, holding up all behind it; but with several unacknowledged, which one
        it was is unknown. So the first is sent alone on the next connection, at once, the rest
        held back until the peer acknowledges it. If the peer ends that stream too with such an
        error, the stanza goes back to its sender and the rest flows.

        A cut is also what a flaky network does, and a link that broke once may well break again
        on the next connection: a cut says nothing the next attempt could not undo. So the
        suspect keeps going alone, on new connections after pauses that grow (:meth:`_run`),
        and an ack clears it. Only when the retry window has run out (``expired``) and the
        peer, reached once more, cut the connection that carried the suspect alone (end of
        input or a reset; not our own cut of a peer that left ``<r/>`` unanswered, nor a close
        of its stream) does the suspect go back to its sender, and the rest gets one more
        connection; should that one acknowledge nothing either, it bounces too (:meth:`_run`).
        Each stanza bounces at most once; a bounced one may still have reached the peer, if the
        peer handled it and went before its ack.

        The condition (RFC 6120 §8.3): the peer's stream error, where it names a stanza error,
        else ``not-acceptable``. A cut names nothing: ``remote-server-not-found`` and
        ``remote-server-timeout`` (§8.3.3.16, §8.3.3.17) say the server could not be reached
        or negotiated with, which it was; ``recipient-unavailable`` or ``internal-server-error``
        (type 'wait'; Prosody returns the former for what a broken stream left unacknowledged)
        would have the sender try again, to be cut again. ``not-acceptable`` (§8.3.3.12) says
        the server will not process this stanza as it is, as for a stream error that names no
        stanza error.
        """
        probe, self._probe = self._probe, None
        error, self._peer_error = self._peer_error, None
        cut, self._peer_cut = self._peer_cut, False
        if not unacked:
            return False
        blamed = error is not None and error[0] not in _NOT_ABOUT_INPUT
        alone = probe is unacked[0]
        if not (alone and (blamed or (cut and expired))):
            if blamed or cut or alone:
                self._probe = unacked[0]
            return False
        stanza = unacked.pop(0)
        if error is not None and blamed:
            condition, text = error
            reason = f"{self.remote} ended the stream over this stanza: {condition}" + (f" ({text})" if text else "")
            if condition not in STANZA_CONDITIONS:
                condition = "not-acceptable"
        else:
            condition = "not-acceptable"
            reason = (f"{self.remote} still cut the connection over this stanza, sent alone, "
                      f"after {self.s2s.config.retry_window:g} s of tries")
        log.info("s2s %s -> %s: %s (stanza %s); it goes back to its sender", self.local, self.remote,
                 reason, stanza.id)
        if not stanza.is_response:
            await self.s2s.server.router.send(stanza.error(StanzaError(condition, reason)))
        return blamed

    async def _carry(self, wire: Wire) -> tuple[list[Stanza], bool]:
        """Send the queue, then whatever comes, until the connection ends; returns the stanzas
        it did not get acknowledged (none without stream management), and whether the peer
        acknowledged any (always true without stream management: nothing tells).

        With a probe (:meth:`_refused`) and stream management, only the first stanza goes
        out, with a request for its ack; the rest waits for that ack (:meth:`_handle`)."""
        self.wire = wire
        self._last_stanza = time.monotonic()
        try:
            queued, self.queue = self.queue, []
            if self._probe is not None and self.acks is not None and queued and queued[0] is self._probe:
                self.queue = queued[1:]
                self._write(self._probe)
                self.acks.request()
            else:
                self._probe = None
                for stanza in queued:
                    self._write(stanza)
            if self.s2s.stopping:
                self._close(wire, StreamError("system-shutdown", "the server is shutting down"))
            await self._serve(wire)
        except (ConnectionError, ssl.SSLError, OSError) as err:
            log.info("s2s %s -> %s lost: %s", self.local, self.remote, err)
            self._peer_cut = not wire.closing
        finally:
            self.wire = None
            wire.close_with()
            await wire.aclose()
        acks, self.acks = self.acks, None
        if acks is None:
            return [], True
        return acks.close(), acks.acknowledged > 0

    async def _serve(self, wire: Wire) -> None:
        """Read the peer's side of our stream until it closes or no stanza went either way for
        ``idle_timeout`` (the peer sends none on our stream, so that is ours); a close of ours
        waits for the peer's (RFC 6120 §4.4), so that it has read everything.

        Meanwhile, after ``limits.keepalive_interval`` without writing, a whitespace keepalive
        (RFC 6120 §4.6.1) keeps the connection in the tables of NATs and firewalls on the way,
        and a connection that died is found by a failing keepalive rather than by a stanza.
        """
        idle = self.s2s.config.idle_timeout
        while not wire.closing:
            now = time.monotonic()
            left = idle - (now - self._last_stanza)
            if left <= 0:
                log.info("s2s %s -> %s idle; closing", self.local, self.remote)
                self._close(wire)
                break
            quiet = wire.last_write + self.s2s.server.config.limits.keepalive_interval - now
            if quiet <= 0:
                wire.write(" ")
                continue
            try:
                event = await wire.next_event(min(left, quiet))
            except TimeoutError:
                continue
            except StreamError as err:
                wire.close_with(err)
                return
            if not self._handle(wire, event):
                return
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                while self._handle(wire, await wire.next_event(CLOSE_WAIT)):
                    pass
        except (TimeoutError, StreamError):
            log.info("s2s %s -> %s: the peer did not close its stream", self.local, self.remote)

    def _handle(self, wire: Wire, event: Event | None) -> bool:
        """One event from the peer; False when the stream is over."""
        if event is None:
            self._peer_cut = not wire.closing
            return False
        if isinstance(event, StreamClosed):
            wire.close_with()
            return False
        if not isinstance(event, StanzaReceived):
            return False
        el = event.element
        if el.tag == _STREAM_ERROR:
            log.info("s2s %s -> %s: the peer sent a stream error: %s", self.local, self.remote, serialize(el))
            self._peer_error = _stream_error(el)
            return False
        if el.tag == SM_ACK and self.acks is not None:
            try:
                self.acks.acknowledge(Ack.from_xml(el).h)
            except SmError as err:
                wire.close_with(StreamError("bad-format", str(err)))
                return False
            except StreamError as err:
                wire.close_with(err)
                return False
            if self._probe is not None and not self.acks.stanzas:
                # The stanza sent alone went through: what was held back follows.
                self._probe = None
                held, self.queue = self.queue, []
                for stanza in held:
                    self._write(stanza)
            return True
        if el.tag == SM_REQUEST and self.acks is not None:
            # §4: the peer may ask too; no stanza of its own comes on this stream.
            wire.send(Ack(0).to_xml())
            return True
        # No XEP-0288 bidirectional streams here: the peer's stanzas come on its own stream.
        wire.close_with(StreamError("unsupported-stanza-type", "this stream carries stanzas one way only"))
        return False

    async def _bounce(self, condition: str, text: str) -> None:
        """RFC 6120 §8.3.3: tell the sender of each waiting request or message that it did not go.

        The route is over first: a stanza sent while the bounces are routed was not part of the
        attempt that failed, and starts a new route rather than waiting here to bounce too.
        """
        self._retire()
        queued, self.queue = self.queue, []
        for stanza in queued:
            if not stanza.is_response:
                await self.s2s.server.router.send(stanza.error(StanzaError(condition, text)))


    def _retire(self) -> None:
        """Take no more stanzas: the next one for this pair of domains starts a new route."""
        self.done = True
        self.s2s.forget(self)


def _cut(wire: Wire) -> None:
    """A connection that stopped answering: cut it, so the route replaces it."""
    wire.closing = True
    wire.writer.transport.abort()
