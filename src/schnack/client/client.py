"""The client facade: one account's connection, kept up, with the features on top.

``async with Client(jid, password) as c:`` finds the server (DNS SRV), secures the connection,
logs in, binds, fetches the roster and announces presence; it then reads in a task of its own,
pings the server when idle (XEP-0199) and, when the link drops, reconnects with jittered
exponential backoff, resuming the session where the server allows (XEP-0198). Where the server
offers SASL2 (XEP-0388) the login binds with Bind 2 and asks for a FAST token (XEP-0484); a
reconnect then sends the token, the resumption and the binding in one flight right behind the
stream header (XEP-0509, with what fast.py kept), and otherwise SASL and binding go the RFC 6120
way. The features
(stream management, messages, roster, presence, ping, carbons, receipts, chat markers, chat
states, corrections, the archive catch-up, disco and caps, contact discovery by phone number)
live in ``features/``, one module each, and plug in through :meth:`Client.handle_iq`,
:meth:`Client.on_message`, :meth:`Client.on_presence` and :meth:`Client.on_connect`. Messages sent go through the persistent outbox (outbox.py) and the
local store (store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ..xmpp import ns
from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.stanza import Stanza
from ..xmpp.xml import qname
from .calls.calls import Call, Calls, IncomingCall, MediaOptions, MissedCall
from .errors import AuthenticationError, ClientError, ConnectError, NotConnected, RequestTimeout, XmppError
from .fast import LoginMemory
from .features.carbons import Carbons
from .features.chatstates import ChatStateChange, ChatStates
from .features.clock import Clock
from .features.corrections import Corrections
from .features.disco import Disco
from .features.files import Attachment, Files, Progress, UploadService
from .features.groups import Groups
from .features.history import History
from .features.markers import Markers
from .features.messages import Message, Messages
from .features.phone_book import PhoneBookSync
from .features.ping import Ping
from .features.presence import Presence, PresenceUpdate
from .features.receipts import Receipt, Receipts
from .features.roster import Contact, Roster
from .features.sm import StreamManagement
from .feed import Feed, Subscription
from .net import Link, endpoints
from .omemo import Omemo, OmemoSettings
from .outbox import Outbox
from .store import Store

if TYPE_CHECKING:
    from .calls.media import WavSink

log = logging.getLogger(__name__)

_IQ = qname(ns.CLIENT, "iq")
_MESSAGE = qname(ns.CLIENT, "message")
_PRESENCE = qname(ns.CLIENT, "presence")
# Stream errors after which connecting again would only repeat the problem (RFC 6120 §4.9.3):
# another client took over this resource, or the account is gone.
_FINAL_CONDITIONS = frozenset({"conflict", "not-authorized", "host-unknown", "unsupported-version"})

IqHandler = Callable[[Stanza], Element | None]


@dataclass(frozen=True, slots=True)
class Connected:
    """The client is logged in and bound to ``jid``."""

    jid: JID


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link is down: why, and whether the client is trying to connect again."""

    reason: str
    reconnecting: bool


ConnectionEvent = Connected | Disconnected


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """The wait before reconnect attempt ``attempt`` (0-based): exponential, capped, "equal jitter".

    Half the exponential step is kept and the other half drawn at random, so that clients cut
    off together (a server restart) do not all come back in the same instant.
    """
    step = min(high, low * 2.0 ** min(attempt, 64))
    draw: float = (rng or random.Random()).uniform(0, step / 2)
    return step / 2 + draw


class Client:
    """One account's connection to its server.

    ``jid`` is the account (a resource in it is asked for when binding); ``host`` and ``port``
    skip the DNS SRV lookup; ``verify`` is True (the system's trust store), a CA file, or False
    (no certificate checks, for test servers only); ``direct_tls`` True or False forces TLS from
    the first byte (XEP-0368) or STARTTLS, None lets DNS decide. ``timeout`` bounds connecting
    and each request; ``keepalive`` is the ping interval; ``backoff`` the (first, longest) wait
    between reconnect attempts, and ``reconnect=False`` stops at the first lost link instead.
    ``dns_servers`` ("address" or "address:port") replace the system's resolvers for SRV lookups.
    ``data_dir`` is the account's directory for local state (OMEMO's keys and sessions in
    ``omemo.sqlite``; messages, the outbox and the roster cache in ``store.sqlite``); without one,
    that state lives in memory and this is a new device each time. ``omemo`` chooses the OMEMO
    versions and the trust rule. ``available=False`` logs in without announcing presence
    (RFC 6121 §4.2), so that neither offline messages nor those for the bare JID come here, nor
    does it catch up from the archive: for programs that only send.
    """

    def __init__(self, jid: str | JID, password: str, *, host: str | None = None, port: int | None = None,
                 verify: bool | str | Path = True, direct_tls: bool | None = None, reconnect: bool = True,
                 timeout: float = 30.0, keepalive: float = 60.0, backoff: tuple[float, float] = (1.0, 120.0),
                 dns_servers: Sequence[str] | None = None, data_dir: str | Path | None = None,
                 omemo: OmemoSettings | None = None, available: bool = True) -> None:
        parsed = jid if isinstance(jid, JID) else JID.parse(jid)
        if parsed.local is None:
            raise ValueError(f"{parsed} is not an account (expected user@domain)")
        self.account = parsed.bare
        self.timeout = timeout
        self._resource = parsed.resource
        self._password = password
        self._host = host
        self._port = port
        self._verify = verify
        self._direct_tls = direct_tls
        self._dns_servers = dns_servers
        self._reconnect = reconnect
        self._keepalive = keepalive
        self._backoff = backoff
        self._link: Link | None = None
        self._jid: JID | None = None
        self._up = asyncio.Event()
        self._closed = False
        # Why the client stopped for good without close(): a final stream error, a refused login.
        self._gone: str | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[tuple[str, bool]] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._waiters: dict[str, tuple[frozenset[JID | None], asyncio.Future[Element]]] = {}
        self._iq_handlers: dict[tuple[str, str], IqHandler] = {}
        self._message_handlers: list[Callable[[Element], None]] = []
        self._presence_handlers: list[Callable[[Element], None]] = []
        self._connect_hooks: list[Callable[[], Awaitable[None]]] = []
        self._events: Feed[ConnectionEvent] = Feed(backlog=0)
        self.store = Store(Path(data_dir) if data_dir is not None else None)
        # A resource the program names is bound as asked; otherwise Bind 2 picks one per device.
        self._login_memory = LoginMemory(self.store, self.account, bind2=parsed.resource is None)
        # Registration order is the order of the steps after each login: stream management, roster,
        # OMEMO (before presence, which brings the offline messages), carbons, presence, the outbox,
        # then the archive catch-up (which goes on in the background).
        self._sm = StreamManagement(self)
        self._ping = Ping(self)
        self._clock = Clock(self)
        self._roster = Roster(self)
        self._omemo = Omemo(self, Path(data_dir) if data_dir is not None else None, omemo or OmemoSettings())
        self._carbons = Carbons(self)
        self._presence = Presence(self, self._roster, announce=available)
        self._disco = Disco(self, self._presence)
        self._messages = Messages(self)
        # Before the outbox: the groups are entered again before a group message waiting there goes.
        self._groups = Groups(self, self._messages, reading=available)
        self.outbox = Outbox(self, self._sm, self.store)
        self._receipts = Receipts(self, self._messages)
        self._markers = Markers(self, self._messages, self._receipts)
        self._chat_states = ChatStates(self, self._messages)
        self._corrections = Corrections(self, self._messages)
        self._history = History(self, self._messages, enabled=available)
        self._files = Files(self, self._messages, verify)
        self._calls = Calls(self)
        self._phone_book = PhoneBookSync(self)

    # Life cycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                        _tb: TracebackType | None) -> None:
        await self.close()

    @property
    def jid(self) -> JID:
        """The full JID bound on the last login."""
        if self._jid is None:
            raise NotConnected("not logged in yet")
        return self._jid

    @property
    def mechanism(self) -> str | None:
        """The SASL mechanism of the last login, and the channel binding it used, if any."""
        if self._link is None:
            return None
        stream = self._link.stream
        return f"{stream.mechanism} ({stream.channel_binding})" if stream.channel_binding else stream.mechanism

    @property
    def login_round_trips(self) -> int | None:
        """How often the last login, once on TLS, sent something and waited for the server's
        answer: 1 for a reconnect with a FAST token on the features learnt before (XEP-0509)."""
        return self._link.round_trips if self._link is not None else None

    @property
    def server_address(self) -> str | None:
        """The server's IP address on the current link (the route to it tells which network
        interface the client uses), or None while there is no link."""
        peer = self._link.writer.get_extra_info("peername") if self._link is not None else None
        return str(peer[0]) if peer else None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def stopped(self) -> bool:
        """Whether the client will not connect again: closed, or disconnected for good."""
        return self._closed or self._gone is not None

    @property
    def connected(self) -> bool:
        """Whether the link is up and the login steps are done."""
        return self._up.is_set() and self._link is not None and self._gone is None

    async def connect(self) -> None:
        """Log in; the errors of this first attempt are raised (wrong password, bad certificate, ...)."""
        if self._supervisor is not None or self._closed:
            raise ClientError("this client has already been connected; make a new one")
        await self._login()
        self._supervisor = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        """Close the stream politely and stop reconnecting; the iterators end."""
        if self._closed:
            return
        # First, so that a catch-up under way ends quietly rather than failing on a closed client.
        await self._history.stop()
        await self._calls.hangup_all()
        self._closed = True
        self._up.clear()
        link = self._link
        for task in (self._supervisor, self._reader, self._pinger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._link = None
        if link is not None:
            await link.close(timeout=2.0, received=self._sm.closing)
        self._fail_waiters("the client was closed")
        await self._groups.close()
        await self._clock.close()
        await self._omemo.close()
        self.outbox.stop("the client was closed")
        self._events.publish(Disconnected("closed by the program", reconnecting=False))
        self._end_feeds()
        self.store.close()

    def events(self) -> Subscription[ConnectionEvent]:
        """Connected and Disconnected events, as the link comes and goes."""
        return self._events.subscribe()

    async def _login(self) -> None:
        """Open a link, run the steps after login, and mark the client up."""
        places = await endpoints(self.account.domain, host=self._host, port=self._port,
                                 direct_tls=self._direct_tls, dns_servers=self._dns_servers)
        memory = self._login_memory
        try:
            # SASL2 with Bind 2 and FAST where offered, pipelined on what the last connection offered.
            link = await Link.open(self.account, self._password, resource=self._resource, verify=self._verify,
                                   endpoints=places, timeout=self.timeout, resume=self._sm.resumption(),
                                   user_agent=memory.user_agent, token=memory.token, known_features=memory.features,
                                   tag=memory.tag, enable=self._sm.inline_request())
        except ConnectError:
            if memory.features is not None:
                memory.forget_features()
            raise
        memory.learn(link.stream)
        assert link.jid is not None
        self._link = link
        self._jid = link.jid
        # Binding the same resource again after a reconnect keeps the full JID stable.
        self._resource = link.jid.resource
        log.info("connected as %s to %s:%d (%s)", link.jid, link.endpoint.host, link.endpoint.port,
                 link.stream.mechanism)
        self._reader = asyncio.create_task(self._read(link))
        try:
            if self._sm.start(link):
                # A resumed session keeps its roster and presence (XEP-0198 §5).
                self.outbox.flush()
            else:
                for hook in self._connect_hooks:
                    await hook()
        except BaseException:
            link.abort()
            raise
        self._up.set()
        self._pinger = asyncio.create_task(self._ping.keepalive(link, self._keepalive))
        self._events.publish(Connected(link.jid))

    async def _supervise(self) -> None:
        """Wait for the link to end, then reconnect with backoff until it is up or hopeless."""
        while True:
            assert self._reader is not None
            reason, final = await self._reader
            self._up.clear()
            if self._pinger is not None:
                self._pinger.cancel()
            self._fail_waiters(f"the connection was lost ({reason})")
            reconnecting = self._reconnect and not final
            log.info("disconnected from %s: %s", self.account.domain, reason)
            self._events.publish(Disconnected(reason, reconnecting))
            if not reconnecting:
                self._give_up(reason)
                return
            attempt = 0
            while True:
                await asyncio.sleep(backoff_delay(attempt, *self._backoff))
                attempt += 1
                try:
                    await self._login()
                    break
                except AuthenticationError as err:
                    if err.condition == "temporary-auth-failure":
                        # RFC 6120 §6.5.9: the server cannot check the login now; try again later.
                        log.info("reconnecting to %s failed: %s", self.account.domain, err)
                        continue
                    self._events.publish(Disconnected(str(err), reconnecting=False))
                    self._give_up(str(err))
                    return
                except (ClientError, OSError, ssl.SSLError, TimeoutError) as err:
                    log.info("reconnecting to %s failed: %s", self.account.domain, err)

    def _give_up(self, reason: str) -> None:
        self._gone = reason
        self._up.set()  # wakes whoever waits for the link, to hear that none will come
        self.outbox.stop(f"disconnected for good: {reason}")
        self._end_feeds()

    def _end_feeds(self) -> None:
        self._events.end()
        self._messages.feed.end()
        self._presence.feed.end()
        self._roster.updates.end()
        self._omemo.changes.end()
        self._receipts.feed.end()
        self._chat_states.feed.end()
        self._groups.end()
        self._calls.incoming.end()
        self._calls.missed.end()

    # Reading --------------------------------------------------------------------------------

    async def _read(self, link: Link) -> tuple[str, bool]:
        """Dispatch what arrives until the link ends; return why, and whether that is final.

        Cancelled (by :meth:`close`), it leaves the link open so that the stream can be closed
        politely.
        """
        try:
            async for el in link.elements():
                self._dispatch(el)
            reason, final = "the server closed the stream", False
        except StreamError as err:
            reason, final = f"stream error {err}", err.condition in _FINAL_CONDITIONS
        except (OSError, ssl.SSLError) as err:
            reason, final = link.dropped or f"connection lost: {err.strerror or err}", False
        link.abort()
        if self._link is link:
            self._link = None
            self._up.clear()
        return reason, final

    def _dispatch(self, el: Element) -> None:
        try:
            if el.tag == _IQ:
                self._on_iq(el)
            elif el.tag == _MESSAGE:
                for message_handler in self._message_handlers:
                    message_handler(el)
            elif el.tag == _PRESENCE:
                for presence_handler in self._presence_handlers:
                    presence_handler(el)
            elif not self._sm.nonza(el):
                log.debug("ignoring %s from the server", el.tag)
        except Exception:
            log.exception("failed to handle a stanza from the server")
        if el.tag in (_IQ, _MESSAGE, _PRESENCE):
            # Counted once its handlers ran, or once a handler that held it let go: XEP-0198 §4
            # counts the stanzas handled.
            self._sm.stanza_handled()

    def _on_iq(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            log.debug("dropping an iq with a malformed address")
            return
        if stanza.type in ("result", "error"):
            waiter = self._waiters.get(stanza.id or "")
            if waiter is not None and stanza.from_ in waiter[0] and not waiter[1].done():
                waiter[1].set_result(el)
            return
        if stanza.type not in ("get", "set") or len(el) != 1:
            self._reply(stanza.error(StanzaError("bad-request", "an iq get or set carries one child element")))
            return
        handler = self._iq_handlers.get((stanza.type, el[0].tag))
        try:
            if handler is None:
                # RFC 6120 §8.4: a request nobody here understands.
                raise StanzaError("service-unavailable")
            self._reply(stanza.result(handler(stanza)))
        except StanzaError as err:
            self._reply(stanza.error(err))

    def _reply(self, el: Element) -> None:
        if self._link is not None and self._link.stream.ready:
            self._sm.send(self._link, el)

    # Sending --------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise NotConnected("the client is closed")
        if self._gone is not None:
            raise NotConnected(f"disconnected from {self.account.domain} for good: {self._gone}")

    async def _wait_link(self, timeout: float | None) -> Link:
        """The link to send on: the current one (also while the steps after login run), or the
        next one, waited for at most ``timeout``."""
        self._check_usable()
        if self._link is None and self._gone is None:
            try:
                async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                    await self._up.wait()
            except TimeoutError:
                raise NotConnected(f"not connected to {self.account.domain}") from None
        self._check_usable()
        if self._link is None or not self._link.stream.ready:
            raise NotConnected(f"not connected to {self.account.domain}")
        return self._link

    def write(self, el: Element) -> bool:
        """Write a stanza at once if the link is up (also while the steps after login run); False if not."""
        link = self._link
        if self._closed or link is None or not link.stream.ready:
            return False
        self._sm.send(link, el)
        return True

    async def send_element(self, el: Element, *, timeout: float | None = None) -> None:
        """Send a stanza once the link is up (waiting at most ``timeout`` for it)."""
        link = await self._wait_link(timeout)
        self._sm.send(link, el)
        await link.drain()

    async def iq(self, el: Element, *, timeout: float | None = None) -> Element:
        """Send an iq get or set and return the result; an error reply raises :class:`XmppError`.

        The reply must come from the addressee (RFC 6120 §8.2.3); for a request to the account
        itself, or without 'to', the server answers without 'from' or from the account.
        """
        if el.get("type") not in ("get", "set"):
            raise ValueError("iq() sends requests: type 'get' or 'set'")
        wait = timeout if timeout is not None else self.timeout
        link = await self._wait_link(wait)
        id = el.get("id") or secrets.token_hex(8)
        el.set("id", id)
        to = _jid_or_none(el.get("to"))
        allowed: frozenset[JID | None] = (
            frozenset({None, self.account, link.jid}) if to is None or to == self.account else frozenset({to})
        )
        future: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._waiters[id] = (allowed, future)
        try:
            self._sm.send(link, el)
            await link.drain()
            async with asyncio.timeout(wait):
                reply = await future
        except TimeoutError:
            raise RequestTimeout(f"no answer from {to or self.account.domain} within {wait:g} s") from None
        finally:
            self._waiters.pop(id, None)
        if reply.get("type") == "error":
            raise XmppError.from_stanza(reply)
        return reply

    def _fail_waiters(self, reason: str) -> None:
        for _, future in self._waiters.values():
            if not future.done():
                future.set_exception(NotConnected(reason))

    # Extension points for features ----------------------------------------------------------

    def handle_iq(self, type: str, tag: str, handler: IqHandler) -> None:
        """Answer iq ``type`` ('get' or 'set') whose payload is ``tag``: the handler returns the
        result's payload (or None), or raises StanzaError."""
        self._iq_handlers[(type, tag)] = handler

    def on_message(self, handler: Callable[[Element], None]) -> None:
        self._message_handlers.append(handler)

    def hold_handled(self) -> Callable[[], None]:
        """For a message handler: the message is not counted as handled (XEP-0198 §4) until the
        function returned is called, so that one still being decrypted is not acknowledged."""
        return self._sm.hold()

    def on_archived(self, handler: Callable[[Element, datetime | None], None]) -> None:
        """Also hand each message the archive catch-up reads (XEP-0313) to ``handler``, with its
        archive stamp."""
        self._history.on_archived(handler)

    def on_presence(self, handler: Callable[[Element], None]) -> None:
        self._presence_handlers.append(handler)

    def on_connect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every login, before the client counts as connected."""
        self._connect_hooks.append(hook)

    # The API of the features ----------------------------------------------------------------

    async def send(self, to: str | JID, text: str, *, encrypted: bool = True) -> str:
        """Send a chat message; its id is returned.

        It is encrypted with OMEMO to all of the recipient's devices and our own other ones;
        :class:`EncryptionRequired` (a subclass naming the reason) if that cannot be done.
        Plaintext only with ``encrypted=False``.

        The message is stored in the outbox before it leaves and is sent again after a reconnect
        or a restart until the server acknowledges it (:meth:`acknowledged`); while the link is
        down it waits there.
        """
        self._check_usable()
        return await self._messages.send(_jid(to), text, encrypted=encrypted)

    async def acknowledged(self, id: str, *, timeout: float | None = None) -> None:
        """Wait until the server acknowledged the message ``id`` (XEP-0198 §4), at most ``timeout``
        (:class:`RequestTimeout`); an error reply to it raises :class:`XmppError`."""
        await self.outbox.wait(id, timeout if timeout is not None else self.timeout)

    @property
    def sm(self) -> StreamManagement:
        """Stream management (XEP-0198): whether it is on, its counters, how often it resumed."""
        return self._sm

    @property
    def omemo(self) -> Omemo:
        """End-to-end encryption: this device, the fingerprints of anyone's, trust, key changes."""
        return self._omemo

    @property
    def groups(self) -> Groups:
        """Group chats (XEP-0045), encrypted with OMEMO: create, invite, send, and the messages."""
        return self._groups

    def messages(self) -> Subscription[Message]:
        """The messages that arrive (and error replies to those sent), from now on: also
        corrections (``replaces``), what our other devices sent (``outgoing``) and what the
        archive catch-up after a login found (``history``)."""
        return self._messages.feed.subscribe()

    def receipts(self) -> Subscription[Receipt]:
        """Messages that moved on to "delivered" or "read" (XEP-0184, XEP-0333), from now on."""
        return self._receipts.feed.subscribe()

    async def mark_read(self, peer: str | JID, message_id: str) -> None:
        """Mark the conversation with ``peer`` read up to their message ``message_id`` and tell
        them so (XEP-0333 ``<displayed/>``): at once if the link is up, else once it is back."""
        self._check_usable()
        await self._markers.mark_read(_jid(peer), message_id)

    async def typing(self, peer: str | JID, state: str) -> bool:
        """Send a chat state ("active", "composing", "paused", "inactive" or "gone", XEP-0085);
        False when it is not sent: the contact has not shown that it takes them, or it is the
        state sent last."""
        self._check_usable()
        return await self._chat_states.send(_jid(peer), state)

    def chat_states(self) -> Subscription[ChatStateChange]:
        """The chat states contacts send (typing, paused, gone, ...), from now on."""
        return self._chat_states.feed.subscribe()

    async def send_file(self, to: str | JID, path: str | Path, *, encrypted: bool = True,
                        content_type: str | None = None, progress: Progress | None = None) -> str:
        """Upload a file (XEP-0363) and send its URL; the message's id is returned.

        Encrypted with AES-256-GCM and sent as an ``aesgcm://`` URL in an OMEMO message (XEP-0454)
        unless ``encrypted=False``; ``progress`` is called with (bytes sent, bytes in all).
        """
        self._check_usable()
        return await self._files.send_file(_jid(to), Path(path), encrypted=encrypted, content_type=content_type,
                                           progress=progress)

    async def download(self, message: Message | Attachment | str, dest: str | Path, *,
                       progress: Progress | None = None, max_size: int | None = None) -> Path:
        """Fetch the file a message points to into the folder ``dest``, decrypted and verified;
        the file's path is returned (a name of its own: nothing is replaced)."""
        options = {"max_size": max_size} if max_size is not None else {}
        return await self._files.download(message, Path(dest), progress=progress, **options)

    async def upload_service(self) -> UploadService:
        """The account's file upload service and its size limit (XEP-0363 §3)."""
        return await self._files.service()

    async def correct(self, peer: str | JID, message_id: str, text: str, *, encrypted: bool = True) -> str:
        """Replace the text of our message ``message_id`` to ``peer`` (XEP-0308); encrypted as
        :meth:`send` does; the correction's own id is returned."""
        self._check_usable()
        return await self._corrections.correct(_jid(peer), message_id, text, encrypted=encrypted)

    async def caught_up(self, *, timeout: float | None = None) -> None:
        """Wait until the archive catch-up after the last login is over (XEP-0313), complete or
        given up (a server without an archive); at most ``timeout`` seconds if given
        (TimeoutError), as long as it takes if not."""
        await self._history.wait(timeout)

    async def roster(self) -> list[Contact]:
        """The contact list, fetched from the server (RFC 6121 §2.1.3)."""
        return await self._roster.fetch()

    def roster_updates(self) -> Subscription[Contact]:
        """Changes to the contact list pushed by the server (RFC 6121 §2.1.6)."""
        return self._roster.updates.subscribe()

    async def add_contact(self, jid: str | JID, *, name: str | None = None, groups: Sequence[str] = (),
                          subscribe: bool = True) -> None:
        """Add or update a contact and, unless told not to, ask to see their presence."""
        contact = _jid(jid)
        await self._roster.set(contact, name, groups)
        if subscribe:
            await self._presence.subscribe(contact)

    async def remove_contact(self, jid: str | JID) -> None:
        """Remove a contact; the server cancels the subscriptions both ways (RFC 6121 §2.5.2)."""
        await self._roster.remove(_jid(jid))

    async def subscribe(self, jid: str | JID) -> None:
        """Ask to see a contact's presence (RFC 6121 §3.1.1)."""
        await self._presence.subscribe(_jid(jid))

    async def approve(self, jid: str | JID) -> None:
        """Let a contact see our presence: answers a request, or pre-approves one (RFC 6121 §3.1.4, §3.4)."""
        await self._presence.approve(_jid(jid))

    async def deny(self, jid: str | JID) -> None:
        """Refuse or cancel a contact's subscription to our presence (RFC 6121 §3.1.5, §3.2)."""
        await self._presence.deny(_jid(jid))

    async def unsubscribe(self, jid: str | JID) -> None:
        """Stop seeing a contact's presence (RFC 6121 §3.3)."""
        await self._presence.unsubscribe(_jid(jid))

    def presence(self) -> Subscription[PresenceUpdate]:
        """Presence and subscription requests that arrive, from now on."""
        return self._presence.feed.subscribe()

    async def call(self, to: str | JID, *, data_saver: bool = False, source: str | Path | Iterator[bytes] | None = None,
                   sink: str | Path | WavSink | None = None, relay_only: bool = False,
                   ring_timeout: float = 60.0) -> Call:
        """Propose an audio call to every device of ``to`` (XEP-0353); it rings there until one
        answers (:attr:`Call.answered`), rejects or the call times out (:attr:`Call.ended`).
        ``source`` is an audio file to play (silence without) or a live source such as
        :class:`~.calls.audio.Microphone`, ``sink`` a WAV file for what is heard or a
        :class:`~.calls.audio.Speaker`; ``data_saver`` asks for about 12 kbit/s in 120 ms frames with DTX instead of 32
        kbit/s with FEC; ``relay_only`` sends media only through the server's TURN relay;
        ``ring_timeout`` is how long it may ring before it is retracted."""
        self._check_usable()
        options = MediaOptions(data_saver, Path(source) if isinstance(source, str) else source,
                               Path(sink) if isinstance(sink, str) else sink, relay_only)
        return await self._calls.call(_jid(to), options, ring_timeout)

    def incoming_calls(self) -> Subscription[IncomingCall]:
        """Calls that ring on this device, from now on: answer or reject them."""
        return self._calls.subscribe()

    def missed_calls(self) -> Subscription[MissedCall]:
        """Calls to this account that no device of it answered or declined (XEP-0353), each
        once: seen ringing here, or found at login in offline storage or the archive (kept until
        this is first asked for). Those over before this device first logged in, which its first
        archive catch-up finds, come flagged ``earlier``: history, not news."""
        return self._calls.subscribe_missed()

    async def discover(self, numbers: Iterable[str]) -> dict[str, tuple[JID, ...]]:
        """Which of ``numbers`` (E.164) have accounts, as the account's server knows them (Quicksy's
        phone book): number -> bare JIDs. The answer is kept in the store; asking again while it
        stays the same costs an empty result."""
        return await self._phone_book.discover(numbers)

    async def set_presence(self, show: str | None = None, status: str | None = None, priority: int = 0) -> None:
        """Announce availability (RFC 6121 §4.2, §4.4); it is announced again after a reconnect."""
        await self._presence.set(show, status, priority)

    async def direct_presence(self, jid: str | JID) -> None:
        """Show our presence to ``jid`` (its bare JID), which does not see it by subscription, until
        :meth:`withdraw_presence` (RFC 6121 §4.6.2): our server tells it when we leave (§4.6.3)."""
        await self._presence.direct(_jid(jid).bare)

    async def withdraw_presence(self, jid: str | JID) -> None:
        """Undo one :meth:`direct_presence` to ``jid``; the last one sends it unavailable presence."""
        await self._presence.withdraw(_jid(jid).bare)


def _jid(value: str | JID) -> JID:
    return value if isinstance(value, JID) else JID.parse(value)


def _jid_or_none(value: str | None) -> JID | None:
    if value is None:
        return None
    try:
        return JID.parse(value)
    except JIDError:
        return None
