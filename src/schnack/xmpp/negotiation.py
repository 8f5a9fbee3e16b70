"""The client side of a client-to-server stream, without I/O (RFC 6120 §4-§7, RFC 9266, XEP-0440).

Bytes in, events and bytes out, as h11 does for HTTP: the I/O layer feeds what it read to
:meth:`ClientStream.receive`, writes what :meth:`ClientStream.data_to_send` returns after every
call, and acts on the events. The stream insists on TLS (STARTTLS, RFC 6120 §5, unless the
connection is TLS from the first byte, XEP-0368), authenticates with SCRAM (RFC 5802, RFC 7677),
binding to the TLS channel with a -PLUS mechanism where both ends can (RFC 5929, RFC 9266), binds
a resource (§7), or resumes an earlier session instead (XEP-0198 §5) when asked to and the server
offers stream management, and then carries stanzas both ways. Where the server offers SASL2
(XEP-0388), the same happens in one ``<authenticate/>``: Bind 2 (XEP-0386), the resumption, and
a FAST token (XEP-0484, with the HT-* mechanisms of :mod:`.ht`) instead of SCRAM when there is one.

The TLS handshake itself belongs to the I/O layer: on :class:`TlsRequested` it hands what it
still holds of the plain connection to :meth:`ClientStream.receive`, which lets only whitespace
pass behind ``<proceed/>`` (RFC 6120 §5.4.3.3), then upgrades the connection and calls
:meth:`ClientStream.tls_established` with the channel-binding data it can compute. SASL PLAIN
is never used: SCRAM keeps the password off the wire even where the certificate was not checked.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from xml.etree.ElementTree import Element
from xml.sax.saxutils import quoteattr

from . import ht, ns
from .errors import STREAM_CONDITIONS, StanzaError, StreamError
from .jid import JID, JIDError
from .parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from .payloads import bind2, fast, sm
from .payloads import sasl2 as sasl2_payload
from .sasl import SaslClient, SaslFailure, decode_b64, encode_b64
from .xml import WHITESPACE, element, qname, serialize, sub

# Channel-binding types we bind to, best first: tls-exporter is RFC 9266's choice for TLS 1.3;
# tls-server-end-point works on any version; tls-unique is only defined up to TLS 1.2.
BINDING_PREFERENCE = ("tls-exporter", "tls-server-end-point", "tls-unique")
SASL_CB = "urn:xmpp:sasl-cb:0"

_STREAM = qname(ns.STREAMS, "stream")
_FEATURES = qname(ns.STREAMS, "features")
_STREAM_ERROR = qname(ns.STREAMS, "error")
_STARTTLS = qname(ns.TLS, "starttls")
_PROCEED = qname(ns.TLS, "proceed")
_TLS_FAILURE = qname(ns.TLS, "failure")
_MECHANISMS = qname(ns.SASL, "mechanisms")
_CHALLENGE = qname(ns.SASL, "challenge")
_SUCCESS = qname(ns.SASL, "success")
_SASL_FAILURE = qname(ns.SASL, "failure")
_BIND = qname(ns.BIND, "bind")
_SESSION = qname(ns.SESSION, "session")
_IQ = qname(ns.CLIENT, "iq")
_DEFAULT_MAX_STANZA = 16 * 1024 * 1024


class NegotiationError(Exception):
    """The stream could not be set up; ``condition`` is the XMPP condition the server gave, if any."""

    def __init__(self, text: str, condition: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.condition = condition


class AuthenticationFailed(NegotiationError):
    """RFC 6120 §6.5: the server refused the credentials, or could not prove it knows them."""


@dataclass(frozen=True, slots=True)
class TlsRequested:
    """The server answered STARTTLS with ``<proceed/>``: upgrade the connection now (§5.4.2.3)."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Negotiation is done: the stream is bound to ``jid``; ``features`` are those offered last.

    ``resumption`` answers a requested resumption (XEP-0198 §5): :class:`~.payloads.sm.Resumed`
    when the earlier session goes on, :class:`~.payloads.sm.Failed` when a new one was bound.
    """

    jid: JID
    features: Element
    resumption: sm.Resumed | sm.Failed | None = None
    # XEP-0386: the answer to the <enable/> sent inside Bind 2, if one was sent.
    enabled: sm.Enabled | sm.Failed | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """A top-level element arrived on the established stream."""

    element: Element


@dataclass(frozen=True, slots=True)
class Closed:
    """The server ended its stream: with a stream error (§4.9), or with its closing tag (§4.4)."""

    condition: str | None = None
    text: str | None = None


Event = TlsRequested | Ready | Received | Closed


@dataclass(frozen=True, slots=True)
class FastToken:
    """A XEP-0484 token: the secret, the mechanism it was issued for, when it expires, and the
    last 'count' sent with it (§3.4)."""

    token: str
    mechanism: str
    expiry: datetime
    count: int = 0


def choose_binding(
    offered: list[str], advertised: list[str] | None, available: Mapping[str, bytes]
) -> tuple[str, bytes] | None:
    """The channel binding for SASL, or None when SCRAM must go without one.

    ``offered`` are the mechanisms, ``advertised`` the XEP-0440 types (None when the server names
    none), ``available`` what the I/O layer could compute. Without XEP-0440 the server's default
    is assumed, which RFC 9266 §3 makes tls-exporter on TLS 1.3 and RFC 5802 §6 tls-unique before.
    When the server offers no -PLUS mechanism, any available binding is returned so that SCRAM
    sends the 'y' flag and a stripped -PLUS offer is detected (RFC 5802 §6).
    """
    if not any(m.endswith("-PLUS") for m in offered):
        kind = next((k for k in BINDING_PREFERENCE if k in available), None)
        return (kind, available[kind]) if kind is not None else None
    candidates = BINDING_PREFERENCE if advertised is not None else ("tls-exporter", "tls-unique")
    for kind in candidates:
        if kind in available and (advertised is None or kind in advertised):
            return kind, available[kind]
    return None


class ClientStream:
    """One client stream from the first header to the last stanza.

    ``account`` is the bare JID to log in as; ``resource`` the resource to ask for (the server
    picks one if None); ``secure`` says the connection is TLS from the first byte (XEP-0368).
    ``resume`` asks to resume the session of that resource instead of binding (XEP-0198 §5).

    With a ``user_agent`` the stream uses SASL2 where the server offers it (XEP-0388), with the
    resumption, Bind 2 (XEP-0386: asked for with a ``tag`` naming the software, ``enable`` turning
    stream management on in the same step; without a tag the resource is bound as RFC 6120 does)
    and FAST (XEP-0484) inline: ``token`` logs in with one message, and without one a token is
    asked for. A refused token is dropped and the password used instead. ``known_features`` are the features of an earlier connection: on TLS they let
    the ``<authenticate/>`` go right behind the stream header (XEP-0509). After the login,
    :attr:`token` is the token to keep (None: none, or drop the old one) and
    :attr:`sasl2_features` the features to remember.
    """

    def __init__(self, account: JID, password: str, *, resource: str | None = None, secure: bool = False,
                 channel_bindings: Mapping[str, bytes] | None = None,
                 max_stanza_bytes: int = _DEFAULT_MAX_STANZA, resume: sm.Resume | None = None,
                 user_agent: sasl2_payload.UserAgent | None = None, token: FastToken | None = None,
                 known_features: Element | None = None, tag: str | None = None,
                 enable: sm.Enable | None = None) -> None:
        if account.local is None:
            raise ValueError(f"{account} is not an account JID (user@domain)")
        if resume is not None and not resource:
            raise ValueError("resuming a session needs the resource it was bound to")
        self.account = account.bare
        self.resource = resource
        self.secure = secure
        self.authenticated = False
        self.jid: JID | None = None
        self.stream_id: str | None = None
        self.mechanism: str | None = None
        self.channel_binding: str | None = None
        self._password = password
        self._bindings = dict(channel_bindings or {})
        self._max_stanza = max_stanza_bytes
        self._parser = StreamParser(max_stanza_bytes)
        self._out: list[str] = []
        self._state = "idle"
        self._sasl: SaslClient | None = None
        self._iq_id = ""
        self._features = element(_FEATURES)
        self._header_sent = False
        self._closing = False
        self._resume = resume
        self._resumption: sm.Failed | None = None
        self.token = token
        self.sasl2_features: Element | None = None
        # Whether the <authenticate/> went out right behind the header (XEP-0509).
        self.pipelined = False
        self._user_agent = user_agent
        self._known = known_features
        self._tag = tag
        self._enable = enable
        self._using: FastToken | None = None
        self._requested: str | None = None
        self._resumed: sm.Resumed | None = None
        self._enabled: sm.Enabled | sm.Failed | None = None

    @property
    def state(self) -> str:
        """Where negotiation is: idle, header, features, starttls, tls, sasl (or sasl2, then
        sasl2-features), resume, bind, session, ready, closed."""
        return self._state

    @property
    def ready(self) -> bool:
        """Whether stanzas can be sent."""
        return self._state == "ready" and not self._closing

    # Output ---------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything to write to the connection since the last call."""
        out, self._out = self._out, []
        return "".join(out).encode()

    def start(self) -> None:
        """Open the stream (RFC 6120 §4.7); on TLS the header names the account as 'from' (§4.7.1)."""
        self._parser.close()
        self._parser = StreamParser(self._max_stanza)
        sender = f" from={quoteattr(str(self.account))}" if self.secure else ""
        self._out.append(
            f"<?xml version='1.0'?><stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}' "
            f"to={quoteattr(self.account.domain)}{sender} version='1.0' xml:lang='en'>"
        )
        self._header_sent = True
        self._state = "header"
        known = self._known
        if (self.secure and not self.authenticated and self._user_agent is not None and known is not None
                and known.find(sasl2_payload.AUTHENTICATION) is not None):
            self.pipelined = True
            self._sasl2(known)
            self._state = "header"

    def tls_established(self, channel_bindings: Mapping[str, bytes]) -> None:
        """The I/O layer finished the TLS handshake: restart the stream on it (§5.4.3.3)."""
        if self._state != "tls":
            raise RuntimeError(f"no TLS upgrade was requested (state {self._state})")
        self.secure = True
        self._bindings = dict(channel_bindings)
        self.start()

    def send(self, el: Element) -> None:
        """Send a stanza (or nonza) on the established stream."""
        if self._state != "ready" or self._closing:
            raise RuntimeError(f"the stream is not ready (state {self._state})")
        self._out.append(serialize(el, ns.CLIENT))

    def close(self, error: StreamError | None = None) -> None:
        """Close our side of the stream (§4.4): the server's closing tag still arrives as
        :class:`Closed`. With a stream error (§4.9.1) nothing more is read."""
        if self._closing:
            return
        self._closing = True
        if self._header_sent:
            if error is not None:
                self._out.append(serialize(error.to_xml(), ns.CLIENT))
            self._out.append("</stream:stream>")
        if error is not None:
            self._state = "closed"

    # Input ----------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Bytes from the server; the events they complete. A :class:`StreamError` means the
        server broke the protocol: call :meth:`close` with it.

        Between ``<proceed/>`` and :meth:`tls_established` the I/O layer hands over what it still
        holds of the plain connection: see :meth:`_behind_proceed`."""
        if self._state == "closed":
            return []
        if self._state == "tls":
            if data.strip(WHITESPACE):
                raise _injected()
            return []
        return self._handle(self._parser.feed(data))

    def buffered(self) -> int:
        """Input the parser holds back; call :meth:`flush` when no more arrives for a moment."""
        return self._parser.buffered()

    def flush(self) -> list[Event]:
        """Parse held-back input (see :meth:`StreamParser.flush`)."""
        if self._state in ("closed", "tls"):
            return []
        return self._handle(self._parser.flush())

    def _handle(self, parsed: list[StreamOpened | StanzaReceived | StreamClosed]) -> list[Event]:
        events: list[Event] = []
        for item in parsed:
            parser = self._parser
            if isinstance(item, StreamOpened):
                self._opened(item)
            elif isinstance(item, StreamClosed):
                events.append(self._peer_closed(None, None))
            else:
                event = self._element(item.element)
                if event is not None:
                    events.append(event)
                if isinstance(event, TlsRequested):
                    self._behind_proceed(item is not parsed[-1])
            if self._state in ("closed", "tls") or self._parser is not parser:
                # After <proceed/>, <success/> or the end, what the old stream still held is void.
                break
        return events

    def _behind_proceed(self, more: bool) -> None:
        """RFC 6120 §5.4.3.3: after ``<proceed/>`` the server sends nothing but its TLS handshake,
        so input behind it came in the clear, from whoever is on the path, and read after the
        handshake it would pass for the server's (the injection of CVE-2011-0411). It ends the
        stream with policy-violation before TLS starts, as the server does with such input behind
        ``<starttls/>``. Only whitespace passes: it may come between top-level elements (§11.7)
        and carries nothing. ``more`` says another event was parsed behind ``<proceed/>``."""
        if more or not self._parser.only_whitespace_after_last_element():
            raise _injected()

    def _peer_closed(self, condition: str | None, text: str | None) -> Closed:
        self._state = "closed"
        if not self._closing:
            self._closing = True
            self._out.append("</stream:stream>")
        return Closed(condition, text)

    def _opened(self, opened: StreamOpened) -> None:
        if self._state != "header":
            raise StreamError("bad-format", "a second stream header")
        if opened.name != _STREAM:
            raise StreamError("invalid-namespace", "expected <stream:stream> in the streams namespace")
        if opened.default_ns != ns.CLIENT:
            raise StreamError("invalid-namespace", "the stream's default namespace must be jabber:client")
        major, _, minor = opened.attrs.get("version", "0.9").partition(".")
        if not (major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()) or int(major) != 1:
            raise StreamError("unsupported-version", "this client speaks XMPP 1.0")
        self.stream_id = opened.attrs.get("id")
        self._state = "features"

    def _element(self, el: Element) -> Event | None:
        if el.tag == _STREAM_ERROR:
            return self._peer_closed(*_stream_error(el))
        state = self._state
        if state == "ready":
            return Received(el)
        if state in ("features", "sasl2-features"):
            if el.tag != _FEATURES:
                raise StreamError("unsupported-stanza-type", f"expected stream features, got {el.tag}")
            self._features = el
            if state == "sasl2-features":
                return self._after_sasl2(el)
            if self.pipelined and not self.authenticated:
                # The <authenticate/> is on its way already; its answer follows these features.
                self.sasl2_features = el
                self._state = "sasl2"
                return None
            self._on_features(el)
            return None
        if state == "sasl2":
            return self._on_sasl2(el)
        if state == "starttls":
            return self._on_starttls_reply(el)
        if state == "sasl":
            self._on_sasl(el)
            return None
        if state == "resume":
            return self._on_resume_reply(el)
        if state in ("bind", "session") and el.tag == _IQ and el.get("id") == self._iq_id:
            return self._on_bind_reply(el)
        raise StreamError("unsupported-stanza-type", f"unexpected {el.tag} during negotiation ({state})")

    # Negotiation steps ------------------------------------------------------------------------

    def _on_features(self, features: Element) -> None:
        if self.authenticated:
            if self._resume is not None and features.find(sm.FEATURE) is not None:
                self._state = "resume"
                self._out.append(serialize(self._resume.to_xml(), ns.CLIENT))
            else:
                self._bind(features)
            return
        if not self.secure:
            if features.find(_STARTTLS) is None:
                raise NegotiationError(f"{self.account.domain} does not offer TLS (STARTTLS); refusing to log in without it")
            self._state = "starttls"
            self._out.append(f"<starttls xmlns='{ns.TLS}'/>")
            return
        if self._user_agent is not None and features.find(sasl2_payload.AUTHENTICATION) is not None:
            self._sasl2(features)
            return
        mechanisms_el = features.find(_MECHANISMS)
        offered = [m.text.strip() for m in mechanisms_el if m.text] if mechanisms_el is not None else []
        scram = self._scram(features, offered)
        self._state = "sasl"
        self._out.append(f"<auth xmlns='{ns.SASL}' mechanism='{self.mechanism}'>{encode_b64(scram.initial())}</auth>")

    def _scram(self, features: Element, offered: list[str]) -> SaslClient:
        """Pick SCRAM with the best channel binding both ends have (RFC 5802 §6, XEP-0440)."""
        cb = features.find(qname(SASL_CB, "sasl-channel-binding"))
        advertised = [c.get("type", "") for c in cb] if cb is not None else None
        binding = choose_binding(offered, advertised, self._bindings)
        assert self.account.local is not None
        try:
            self._sasl = SaslClient(self.account.local, self._password, offered, channel_binding=binding)
        except SaslFailure:
            raise NegotiationError(
                f"{self.account.domain} offers no SCRAM mechanism (offered: {', '.join(offered) or 'none'})"
            ) from None
        self.mechanism = self._sasl.mechanism
        self.channel_binding = binding[0] if binding and self.mechanism.endswith("-PLUS") else None
        return self._sasl

    # SASL2 (XEP-0388) with Bind 2, FAST and resumption inline ---------------------------------

    def _sasl2(self, features: Element) -> None:
        """XEP-0388 §2.3: one ``<authenticate/>`` with the token's proof or SCRAM's first message,
        the user agent, and the inline requests the features allow."""
        found = features.find(sasl2_payload.AUTHENTICATION)
        assert found is not None and self.account.local is not None
        offer = sasl2_payload.Authentication.from_xml(found)
        if not self.pipelined or features is not self._known:
            self.sasl2_features = features
        inline: list[Element] = []
        fast_offer = _fast_feature(offer)
        agent_id = self._user_agent.id if self._user_agent is not None else None
        token = self.token if fast_offer is not None and agent_id else None
        initial: bytes | None = None
        if token is not None and fast_offer is not None and token.mechanism in fast_offer.mechanisms:
            try:
                initial = ht.client_message(token.mechanism, self.account.local, token.token, self._bindings.get)
            except SaslFailure:
                initial = None
        self._sasl = None
        self._requested = None
        if initial is not None and token is not None:
            self._using = replace(token, count=token.count + 1)
            self.mechanism = token.mechanism
            self.channel_binding = ht.parse_mechanism(token.mechanism)[1]
            inline.append(fast.Fast(count=self._using.count).to_xml())
        else:
            self._using = None
            initial = self._scram(features, list(offer.mechanisms)).initial()
            if fast_offer is not None and agent_id:
                self._requested = next((m for m in ht.MECHANISMS if m in fast_offer.mechanisms
                                        and (ht.parse_mechanism(m)[1] or "") in ("", *self._bindings)), None)
                if self._requested is not None:
                    inline.append(fast.RequestToken(self._requested).to_xml())
        if self._resume is not None and offer.find(sm.FEATURE) is not None:
            inline.append(self._resume.to_xml())
        bind_offer = offer.find(bind2.BIND)
        if bind_offer is not None and self._tag is not None:
            requests = []
            if self._enable is not None and sm.NS in bind2.BindFeature.from_xml(bind_offer).inline:
                requests.append(self._enable.to_xml())
            inline.append(bind2.Bind(self._tag, tuple(requests)).to_xml())
        version = features.find(sasl2_payload.CONFIG_VERSION)
        if self.pipelined and features is self._known and version is not None:
            inline.append(version)
        request = sasl2_payload.Authenticate(self.mechanism or "", initial, self._user_agent, tuple(inline))
        self._state = "sasl2"
        self._out.append(serialize(request.to_xml(), ns.CLIENT))

    def _on_sasl2(self, el: Element) -> Event | None:
        """XEP-0388 §2.4-§2.6: challenges, then success or failure."""
        try:
            if el.tag == sasl2_payload.CHALLENGE:
                if self._sasl is None:
                    raise StreamError("unsupported-stanza-type", "a challenge for a one-message mechanism")
                response = self._sasl.respond(sasl2_payload.Challenge.from_xml(el).data)
                self._out.append(serialize(sasl2_payload.Response(response).to_xml(), ns.CLIENT))
                return None
            if el.tag == sasl2_payload.SUCCESS:
                success = sasl2_payload.Success.from_xml(el)
                data = success.additional_data or b""
                if self._sasl is not None:
                    self._sasl.success(data)
                elif self._using is not None:
                    ht.check_server(self._using.mechanism, self._using.token, self._bindings.get, data)
                self._succeeded(success)
                return None
            if el.tag == sasl2_payload.FAILURE:
                return self._sasl2_failed(sasl2_payload.Failure.from_xml(el))
        except SaslFailure as failure:
            raise AuthenticationFailed(f"authentication failed: {failure.text or failure.condition}",
                                       failure.condition) from None
        except (sasl2_payload.Sasl2Error, bind2.Bind2Error, fast.FastError, sm.SmError) as err:
            raise StreamError("bad-format", str(err)) from None
        raise StreamError("unsupported-stanza-type", f"unexpected {el.tag} during authentication")

    def _sasl2_failed(self, failure: sasl2_payload.Failure) -> Event | None:
        self._sasl = None
        if failure.has(sasl2_payload.CONFIG_VERSION_MISMATCH) and self.pipelined and self.sasl2_features is not None:
            # XEP-0509 §2.2: try again on the features the server sent now.
            self.pipelined = False
            self._sasl2(self.sasl2_features)
            return None
        if self._using is not None and self.sasl2_features is not None:
            # XEP-0484 §4.1: drop the refused token and log in with the password.
            self.token = self._using = None
            self._sasl2(self.sasl2_features)
            return None
        raise AuthenticationFailed(_failure_sentence(failure.condition, failure.text), failure.condition)

    def _succeeded(self, success: sasl2_payload.Success) -> None:
        self._sasl = None
        self.authenticated = True
        if self._using is not None:
            self.token = self._using
        for el in success.inline:
            if el.tag == fast.TOKEN:
                issued = fast.Token.from_xml(el)
                self.token = FastToken(issued.token, self._requested or self.mechanism or "", issued.expiry)
            elif el.tag == sm.RESUMED:
                self._resumed = sm.Resumed.from_xml(el)
            elif el.tag == sm.FAILED:
                self._resumption = sm.Failed.from_xml(el)
            elif el.tag == bind2.BOUND:
                for result in bind2.Bound.from_xml(el).results:
                    if result.tag == sm.ENABLED:
                        self._enabled = sm.Enabled.from_xml(result)
                    elif result.tag == sm.FAILED:
                        self._enabled = sm.Failed.from_xml(result)
        if self._resume is not None and self._resumed is None and self._resumption is not None:
            self._resume = None
        try:
            jid = JID.parse(success.authorization_identifier)
        except JIDError:
            raise StreamError("invalid-xml", f"the server named an invalid JID {success.authorization_identifier!r}") from None
        if jid.bare != self.account:
            raise StreamError("invalid-xml", f"the server authenticated {jid}, which is not {self.account}")
        if jid.resource is not None:
            self.jid = jid
        elif self._resumed is not None:
            self.jid = JID(self.account.local, self.account.domain, self.resource)
        self._state = "sasl2-features"

    def _after_sasl2(self, features: Element) -> Event | None:
        """§2.6.1: the features of the authenticated stream follow the success."""
        if self.jid is not None and (self._resumed is not None or self.jid.resource is not None):
            self._state = "ready"
            return Ready(self.jid, features, self._resumed or self._resumption, self._enabled)
        self._on_features(features)
        return None

    def _bind(self, features: Element) -> None:
        if features.find(_BIND) is None:
            raise NegotiationError("the server offers no resource binding after authentication")
        self._state = "bind"
        self._iq_id = f"bind-{secrets.token_hex(4)}"
        bind = element(_BIND)
        if self.resource:
            sub(bind, qname(ns.BIND, "resource"), text=self.resource)
        self._out.append(serialize(element(_IQ, {"type": "set", "id": self._iq_id}, children=[bind]), ns.CLIENT))

    def _on_resume_reply(self, el: Element) -> Event | None:
        """XEP-0198 §5: resumed, the earlier session goes on; failed, a new one is bound (§5, §6)."""
        try:
            if el.tag == sm.RESUMED:
                resumed = sm.Resumed.from_xml(el)
                self.jid = JID(self.account.local, self.account.domain, self.resource)
                self._state = "ready"
                return Ready(self.jid, self._features, resumed)
            if el.tag == sm.FAILED:
                self._resumption = sm.Failed.from_xml(el)
                self._bind(self._features)
                return None
        except sm.SmError as err:
            raise StreamError("bad-format", str(err)) from None
        raise StreamError("unsupported-stanza-type", f"expected <resumed/> or <failed/>, got {el.tag}")

    def _on_starttls_reply(self, el: Element) -> Event:
        if el.tag == _PROCEED:
            self._state = "tls"
            return TlsRequested()
        if el.tag == _TLS_FAILURE:
            raise NegotiationError(f"{self.account.domain} failed to start TLS")
        raise StreamError("unsupported-stanza-type", f"expected <proceed/>, got {el.tag}")

    def _on_sasl(self, el: Element) -> None:
        assert self._sasl is not None
        try:
            if el.tag == _CHALLENGE:
                response = self._sasl.respond(decode_b64(el.text or ""))
                self._out.append(f"<response xmlns='{ns.SASL}'>{encode_b64(response)}</response>")
                return
            if el.tag == _SUCCESS:
                self._sasl.success(decode_b64(el.text) if el.text and el.text.strip() else b"")
                self._sasl = None
                self.authenticated = True
                # RFC 6120 §6.4.6: both sides restart the stream, without closing the old one.
                self.start()
                return
        except SaslFailure as failure:
            # The server could not prove it knows the password, or sent a broken challenge.
            raise AuthenticationFailed(f"authentication failed: {failure.text or failure.condition}",
                                       failure.condition) from None
        if el.tag == _SASL_FAILURE:
            condition, text = _sasl_failure(el)
            self._sasl = None
            raise AuthenticationFailed(_failure_sentence(condition, text), condition)
        raise StreamError("unsupported-stanza-type", f"unexpected {el.tag} during authentication")

    def _on_bind_reply(self, el: Element) -> Event | None:
        kind = el.get("type")
        what = "resource binding" if self._state == "bind" else "session establishment"
        if kind == "error":
            error = el.find(qname(ns.CLIENT, "error"))
            err = StanzaError.from_xml(error) if error is not None else StanzaError("undefined-condition")
            detail = f" ({err.text})" if err.text else ""
            raise NegotiationError(f"{what} failed: {err.condition}{detail}", err.condition)
        if kind != "result":
            raise StreamError("bad-format", f"{what} reply of type {kind!r}")
        if self._state == "bind":
            raw = el.findtext(f"{_BIND}/{{{ns.BIND}}}jid")
            try:
                jid = JID.parse(raw or "")
            except JIDError:
                raise StreamError("invalid-xml", f"the server bound an invalid JID {raw!r}") from None
            if jid.bare != self.account or jid.resource is None:
                raise StreamError("invalid-xml", f"the server bound {jid}, which is not a resource of {self.account}")
            self.jid = jid
            if _session_required(self._features):
                self._state = "session"
                self._iq_id = f"sess-{secrets.token_hex(4)}"
                self._out.append(serialize(
                    element(_IQ, {"type": "set", "id": self._iq_id}, children=[element(_SESSION)]), ns.CLIENT
                ))
                return None
        assert self.jid is not None
        self._state = "ready"
        return Ready(self.jid, self._features, self._resumption)


def _injected() -> StreamError:
    return StreamError("policy-violation", "input came in the clear behind <proceed/>")


def _fast_feature(offer: sasl2_payload.Authentication) -> fast.FastFeature | None:
    found = offer.find(fast.FAST)
    if found is None:
        return None
    try:
        return fast.FastFeature.from_xml(found)
    except fast.FastError:
        return None


def _session_required(features: Element) -> bool:
    """RFC 3921 §3 sessions: only a server that offers one without ``<optional/>`` needs the request."""
    session = features.find(_SESSION)
    return session is not None and session.find(qname(ns.SESSION, "optional")) is None


def _stream_error(el: Element) -> tuple[str, str | None]:
    condition = "undefined-condition"
    text = None
    for child in el:
        if not child.tag.startswith(f"{{{ns.STREAM_ERRORS}}}"):
            continue
        local = child.tag.rpartition("}")[2]
        if local == "text":
            text = child.text
        elif local in STREAM_CONDITIONS:
            condition = local
    return condition, text


def _sasl_failure(el: Element) -> tuple[str, str | None]:
    condition = "not-authorized"
    text = None
    for child in el:
        local = child.tag.rpartition("}")[2]
        if local == "text":
            text = child.text
        elif child.tag.startswith(f"{{{ns.SASL}}}"):
            condition = local
    return condition, text


def _failure_sentence(condition: str, text: str | None) -> str:
    """RFC 6120 §6.5 conditions in words a user understands."""
    meaning = {
        "not-authorized": "wrong username or password",
        "account-disabled": "the account is disabled",
        "credentials-expired": "the password has expired",
        "temporary-auth-failure": "temporary failure, try again later",
        "encryption-required": "the server requires encryption for this mechanism",
        "invalid-mechanism": "the server refused the mechanism",
    }.get(condition, condition)
    return f"authentication failed: {meaning}" + (f" ({text})" if text and text != meaning else "")
