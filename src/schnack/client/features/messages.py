"""Chat messages (RFC 6121 §5): sending, and the stream of messages that arrive.

Plaintext leaves only when the caller says ``encrypted=False``: end-to-end encryption (OMEMO,
XEP-0384) is the default, and a message that cannot be encrypted is refused rather than sent
readable. Arriving OMEMO messages are decrypted before they are published, one after the other,
so that messages keep the order in which they arrived; the fallback body of an encrypted message
is never taken for its text.

Messages come here in three ways: live, as carbon copies of what our other devices got or sent
(XEP-0280, unwrapped by carbons.py) and from the server's archive (XEP-0313, history.py). All
go through one ordered pipeline: a message already stored (the same XEP-0359 origin-id from the
same sender, or the same stanza-id from our server) is dropped before it is decrypted, since a
copy of an OMEMO message would not decrypt again; a new one is stored, then published. The
features that read what else a message carries (receipts, markers, chat states) see every
message after that, and those that add to what we send (a receipt request, a chat state) add it
to every message sent. What answers a message (its receipt) is stored with it, in one
transaction, and sent from the store (outbox.py), so that a client that dies right after it
stored the message still sends it.

A message that arrived live (or as a carbon copy) and could not be decrypted for a reason that
may pass (its sender's keys not fetched yet, no session yet, OMEMO not set up, a lost link) is
published as undecryptable and kept, up to :data:`PENDING` of them: it is tried again when its
sender's device lists are fetched or updated (``Omemo.on_keys``) and when another message of
theirs was decrypted (which may have built the session it needs), in the order they came, for up
to :data:`RETRY_FOR`. Once decrypted it is stored with the time it came and published as a late
arrival (``history``), so that it shows in its place; what else it carries was read when it
came. A message published as undecryptable is not published so again in the same login: not a
copy of it sent again (the same origin-id from the same sender, or the same stanza-id), nor its
archived copy when the catch-up reads it, also when the catch-up reads the archive again once
keys came (the archived copy still holds the catch-up's position before it). The next login
drops what is still kept: the archive catch-up (history.py) reads it again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.correction import Replace
from ...xmpp.payloads.mam import RESULT, Result
from ...xmpp.payloads.markers import MARKABLE
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, sub
from ..errors import ClientError, XmppError
from ..feed import Feed
from ..omemo.devices import Device
from ..omemo.errors import Undecryptable
from ..outbox import identify, message_ids
from ..store import StoredMessage
from .carbons import unwrap
from .waiting import Waiting

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")
_THREAD = qname(ns.CLIENT, "thread")
_DELAY = qname(ns.DELAY, "delay")
# How long after it was sent a message that could not be decrypted for a reason that may pass is
# still tried again: one whose sender's keys never come (an account deleted) is given up then.
RETRY_FOR = timedelta(days=7)
# Live messages kept to be decrypted again; beyond that the oldest is given up.
PENDING = 50
# Live messages told as not decrypted that the catch-up recognises (it reads the archive soon after
# the login, so the newest few are enough).
_TOLD = 1000


@dataclass(frozen=True)
class Message:
    """A message that arrived: ``text`` is its body; ``error`` is set on an error reply to a
    message of the conversation we sent (its ``id`` is ours); ``stamp`` is when it was first sent if it was held back (XEP-0203)
    or, from the archive, when the server archived it.

    ``encrypted`` tells an OMEMO message: ``device`` is then the sending device (its fingerprint
    and how far it is trusted) and, if it could not be decrypted, ``text`` is None and
    ``undecryptable`` says why. ``replaces`` is set on a correction (XEP-0308): the id of the
    message whose text is now ``text``. ``outgoing`` marks a message this account sent from
    another device (a carbon copy, or from the archive): ``sender`` is then that device and
    ``to`` the contact. ``history`` marks one caught up from the server's archive after a
    login, or decrypted only after later ones (``stamp`` is then when it came): not news, but a
    part of the conversation this device had missed.
    """

    sender: JID
    text: str | None
    id: str | None = None
    to: JID | None = None
    type: str = "normal"
    thread: str | None = None
    stamp: datetime | None = None
    error: XmppError | None = None
    encrypted: bool = False
    device: Device | None = None
    undecryptable: str | None = None
    replaces: str | None = None
    outgoing: bool = False
    history: bool = False
    element: Element = field(default_factory=lambda: element(_MESSAGE), repr=False, compare=False)

    @property
    def peer(self) -> JID:
        """The other side of the conversation (bare JID)."""
        return (self.to if self.outgoing and self.to is not None else self.sender).bare


@dataclass(frozen=True)
class Incoming:
    """A message as the features see it, unwrapped from a carbon copy or an archive result.

    ``outgoing``: sent by this account (a sent carbon, or our own message in the archive);
    ``carbon``: a carbon copy; ``history``: from the archive; ``stamp``: when it was first sent
    or archived, if known; ``stanza_id``: the id our server's archive gave it.
    """

    stanza: Stanza
    sender: JID
    outgoing: bool = False
    carbon: bool = False
    history: bool = False
    stamp: datetime | None = None
    stanza_id: str | None = None

    @property
    def el(self) -> Element:
        return self.stanza.el

    @property
    def peer(self) -> JID | None:
        """The contact's bare JID: the addressee of what we sent, the sender of what we got."""
        if self.outgoing:
            return self.stanza.to.bare if self.stanza.to is not None else None
        return self.sender.bare

    @property
    def content(self) -> bool:
        """Whether it carries something to read: a body, or an end-to-end encrypted one."""
        return self.el.find(_BODY) is not None or any(
            self.el.find(qname(namespace, "encrypted")) is not None for namespace in (ns.OMEMO_LEGACY, ns.OMEMO_2)
        )


# What a feature does with every message that arrived (``new`` is the message as published, None
# if it carried no text or was a copy of one stored before), and with every message sent.
Reader = Callable[[Incoming, Message | None], None]
Decorator = Callable[[Element, JID], None]
# What a feature answers a new message that arrived with (a receipt), if anything.
Answerer = Callable[[Incoming], Element | None]


def parse_stamp(text: str | None) -> datetime | None:
    """An XEP-0082 date-time, as XEP-0203 uses it (None if it does not parse)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class Messages:
    """Sends chat messages and publishes the ones that arrive."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.feed: Feed[Message] = Feed()
        # The last message still being handled: the ones after it wait for it.
        self._last: asyncio.Task[None] | None = None
        self._readers: list[Reader] = []
        self._decorators: list[Decorator] = []
        self._answerers: list[Answerer] = []
        self._claims: list[Callable[[Stanza], bool]] = []
        # The archive ids of messages from the archive that could not be decrypted for a reason
        # that may pass, with whose keys they need (bare): history.py saves no position past them,
        # and reads them again when those keys come.
        self.undecrypted: dict[str, JID] = {}
        # Live messages that could not be decrypted yet, as late arrivals, by the order they came.
        self._pending: Waiting[int, Incoming] = Waiting()
        # The stanza-ids and origin-ids of messages of this login told as not decrypted: a copy
        # sent again, or read again from the archive, is not told again (as a group's ``told``).
        self._told: dict[str, None] = {}
        self._numbers = itertools.count()
        client.omemo.on_keys(self._retry)
        client.on_connect(self._on_connect)
        client.on_message(self._received)

    async def _on_connect(self) -> None:
        # A new login: the catch-up reads from the archive what is still kept.
        self._pending.clear()
        self._told.clear()

    def on_incoming(self, reader: Reader) -> None:
        """Show ``reader`` every message that arrives, in order, once it is stored."""
        self._readers.append(reader)

    def answer_with(self, answerer: Answerer) -> None:
        """Let ``answerer`` give the stanza that answers each new message that arrives: it is
        stored with the message, in one transaction, and sent from the store (outbox.py)."""
        self._answerers.append(answerer)

    def claim(self, claimed: Callable[[Stanza], bool]) -> None:
        """Leave the messages ``claimed`` says are another feature's (a group's, groups.py) to it."""
        self._claims.append(claimed)

    def on_send(self, decorator: Decorator) -> None:
        """Let ``decorator`` add its elements to every chat message sent, before it is stored."""
        self._decorators.append(decorator)

    async def send(self, to: JID, text: str, *, encrypted: bool, replaces: str | None = None) -> str:
        """RFC 6121 §5.2: a chat message with a body, encrypted (XEP-0384) unless told not to; the id
        it was sent with is returned. ``replaces`` makes it a correction (XEP-0308)."""
        el = element(_MESSAGE, {"type": "chat", "to": str(to)})
        if encrypted:
            el.extend(await self.client.omemo.encrypt(to, text))
        else:
            sub(el, _BODY, text=text)
        if replaces is not None:
            el.append(Replace(replaces).to_xml())
        for decorate in self._decorators:
            decorate(el, to)
        # Stored before it leaves, with an origin-id that is also its id (see outbox.py).
        return self.client.outbox.send(el, to, text, encrypted=encrypted, replaces=replaces)

    # Arriving ---------------------------------------------------------------------------------------

    def _received(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            log.debug("dropping a message with a malformed address")
            return
        if el.find(RESULT) is not None:
            return  # an archive result: history.py takes those
        if stanza.from_ is not None and stanza.from_ == self._own_jid():
            return  # our own message to our account, back here: it is stored as sent
        sender = stanza.from_ or self.client.account
        carbon = unwrap(stanza, self.client.account)
        if carbon is None:
            hold_until_done(self.client, self.deliver(Incoming(stanza, sender, stamp=_delay(el))))
            return
        try:
            inner = Stanza.parse(carbon.message)
        except StanzaError:
            log.debug("dropping a carbon copy with a malformed address")
            return
        outgoing = carbon.direction == "sent"
        inner_sender = inner.from_ or (self.client.jid if outgoing else self.client.account)
        hold_until_done(self.client, self.deliver(Incoming(inner, inner_sender, outgoing=outgoing, carbon=True,
                                                           stamp=carbon.forwarded.stamp or _delay(inner.el))))

    def deliver(self, item: Incoming) -> asyncio.Task[None] | None:
        """Handle a message, after those before it; the task that does, if it is not done at once."""
        if any(claimed(item.stanza) for claimed in self._claims):
            return None
        if self._last is None and not self.client.omemo.carries(item.el):
            self._handle(item, None)
            return None
        return self._in_turn(item)

    def _in_turn(self, item: Incoming, kept: int | None = None) -> asyncio.Task[None]:
        task = asyncio.create_task(self._handle_after(self._last, item, kept))
        self._last = task
        task.add_done_callback(self._done)
        return task

    async def settled(self) -> None:
        """Wait until every message delivered so far has been handled."""
        while self._last is not None:
            await asyncio.wait([self._last])

    async def _handle_after(self, previous: asyncio.Task[None] | None, item: Incoming, kept: int | None) -> None:
        """Handle ``item`` once ``previous`` is done; ``kept`` numbers another try at a live message
        that could not be decrypted yet."""
        if previous is not None:
            await asyncio.wait([previous])
        try:
            if kept is None:
                self._handle(item, await self._decrypt(item, None))
            elif kept in self._pending:
                await self._handle_late(item, kept)
        finally:
            if kept is not None:
                self._pending.tried(kept)

    async def _decrypt(self, item: Incoming, kept: int | None) -> _Decrypted | None:
        if item.stanza.type == "error" or not self.client.omemo.carries(item.el) or self._is_copy(item):
            return None
        # Our own messages are encrypted by our devices, theirs by the contact's.
        sender = self.client.account if item.outgoing else item.sender
        try:
            result = await self.client.omemo.decrypt(sender, item.el)
        except Undecryptable as err:
            again = worth_retrying(err, item.stamp, self.client.store.now())
            if kept is not None:
                if not again:
                    self._pending.drop(kept)
                return None
            if again and item.history and item.stanza_id is not None:
                self.undecrypted[item.stanza_id] = sender.bare
            elif again and not item.history:
                self._keep(item, sender.bare)
            if self._told_before(item):
                return None  # a copy sent again, or the catch-up reading it again
            log.warning("could not decrypt a message from %s: %s", item.sender, err)
            return _Decrypted(None, None, str(err))
        # A session this message built may be the one an earlier message needs.
        self._retry(sender.bare)
        return _Decrypted(result.text, result.device, None)

    async def _handle_late(self, item: Incoming, kept: int) -> None:
        """Another try at a live message that could not be decrypted yet; what else it carries
        was read when it came."""
        decrypted = await self._decrypt(item, kept)
        if decrypted is None and not self._is_copy(item):
            return  # not yet, or given up
        # Decrypted, or stored meanwhile (the catch-up read it from the archive).
        self._pending.drop(kept)
        new = self._record(item, decrypted) if decrypted is not None else None
        if new is not None:
            self.feed.publish(new)

    def _told_before(self, item: Incoming) -> bool:
        """Whether a message not decrypted was told as such before in this login: one with its
        stanza-id, or from the same sender with its origin-id (XEP-0359 §3, as the store tells a
        copy). It counts as told from now on."""
        origin_id, stanza_id = message_ids(item.el, self.client.account)
        keys = []
        if item.stanza_id or stanza_id:
            keys.append(f"stanza-id {item.stanza_id or stanza_id}")
        if origin_id is not None and item.peer is not None:
            keys.append(f"origin-id {'out' if item.outgoing else 'in'} {item.peer} {origin_id}")
        # Every key is remembered, also after one known: a copy sent again has a new stanza-id,
        # which its archived copy will bring.
        return any([remembered(self._told, key, _TOLD) for key in keys])

    def _keep(self, item: Incoming, sender: JID) -> None:
        """A live message from ``sender`` (bare) that could not be decrypted for a reason that may
        pass: kept to be tried again. Beyond :data:`PENDING` of them the oldest is given up."""
        late = replace(item, history=True, stamp=item.stamp or self.client.store.now())
        for oldest in self._pending.keep(next(self._numbers), sender, late, PENDING):
            log.warning("giving up a message from %s that could not be decrypted", oldest.sender)

    def _retry(self, sender: JID) -> None:
        """Try again the live messages of ``sender`` (bare) that could not be decrypted yet, in the
        order they came: as late arrivals (``history``) with the time they came."""
        for number, late in self._pending.due(sender):
            self._in_turn(late, number)

    def _is_copy(self, item: Incoming) -> bool:
        peer = item.peer
        if peer is None:
            return False
        origin_id, stanza_id = message_ids(item.el, self.client.account)
        return self.client.store.known(peer, origin_id=origin_id, stanza_id=item.stanza_id or stanza_id,
                                       outgoing=item.outgoing, message_id=item.stanza.id)

    def _handle(self, item: Incoming, decrypted: _Decrypted | None) -> None:
        new: Message | None = None
        if item.stanza.type == "error":
            new = self._error(item)
        elif item.content and not self._is_copy(item):
            new = self._record(item, decrypted)
        if new is not None:
            self.feed.publish(new)
        for reader in self._readers:
            try:
                reader(item, new)
            except Exception:
                log.exception("failed to handle what a message carries")

    def _error(self, item: Incoming) -> Message | None:
        """An error reply to one of ours marks that one failed (RFC 6120 §8.3). Only one to a
        message of the conversation is published: one to a call's signalling (XEP-0353, which
        calls.py hears of itself), a receipt or a chat state is no message that failed."""
        if item.carbon or item.history or item.stanza.id is None:
            return None
        error = XmppError.from_stanza(item.el)
        if not self.client.outbox.refused(item.stanza.id, error):
            return None
        return self._message(item, None, error=error)

    def _record(self, item: Incoming, decrypted: _Decrypted | None) -> Message | None:
        """Store a message with text; the message to publish, None if it was stored before."""
        peer = item.peer
        if peer is None:
            return None
        encrypted = self.client.omemo.carries(item.el)
        if encrypted:
            if decrypted is None:
                # Not decrypted: a copy found only now, or handled out of turn.
                return None
            text, device, undecryptable = decrypted.text, decrypted.device, decrypted.undecryptable
            if text is None and (undecryptable is None or not _has_payload(item.el)):
                return None  # an empty OMEMO message: key exchange only, for us or another device
        else:
            text, device, undecryptable = item.el.findtext(_BODY), None, None
        correction = Replace.find(item.el)
        replaces = None
        original = (self.client.store.message(peer, correction.id, outgoing=item.outgoing)
                    if correction is not None else None)
        if original is not None and original.encrypted == encrypted:
            # XEP-0308 §5: only a message of the same sender in this conversation, and (as the
            # OMEMO apps require) encrypted as it was: a plaintext correction could come from
            # anyone on the path. Anything else is a message of its own.
            replaces = original.message_id
        message = self._message(item, text, encrypted=encrypted, device=device, undecryptable=undecryptable,
                                replaces=replaces)
        answers = [answer for answerer in self._answerers if (answer := answerer(item)) is not None]
        if text is None:
            # Undecryptable: told, not stored, and answered for as long as this client runs.
            for answer in answers:
                self.client.outbox.send_volatile(answer)
            return message
        origin_id, stanza_id = message_ids(item.el, self.client.account)
        stored = self.client.store.receive(
            peer, text, origin_id=origin_id, stanza_id=item.stanza_id or stanza_id, stamp=item.stamp,
            encrypted=encrypted, message_id=item.stanza.id, markable=item.el.find(MARKABLE) is not None,
            replaces=message.replaces, outgoing=item.outgoing,
            # Not here (yet): the catch-up may bring it after this correction, which came live.
            claims=correction.id if correction is not None and original is None else None,
            answers=[(identify(answer), answer) for answer in answers],
        )
        if stored and answers:
            self.client.outbox.flush()
        if not stored or _outdated(original, message):
            return None
        if message.replaces is None and message.id is not None:
            # Corrections of it that came first have given it their text.
            kept = self.client.store.message(peer, message.id, outgoing=item.outgoing)
            if kept is not None and kept.edited is not None:
                return replace(message, text=kept.text)
        return message

    def _message(self, item: Incoming, text: str | None, *, error: XmppError | None = None, encrypted: bool = False,
                 device: Device | None = None, undecryptable: str | None = None,
                 replaces: str | None = None) -> Message:
        el = item.el
        return Message(
            sender=item.sender,
            text=text,
            id=item.stanza.id,
            to=item.stanza.to,
            type=item.stanza.type or "normal",
            thread=el.findtext(_THREAD),
            stamp=item.stamp,
            error=error,
            encrypted=encrypted,
            device=device,
            undecryptable=undecryptable,
            replaces=replaces,
            outgoing=item.outgoing,
            history=item.history,
            element=el,
        )

    def _own_jid(self) -> JID | None:
        try:
            return self.client.jid
        except ClientError:
            return None

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._last is task:
            self._last = None
        if not task.cancelled() and task.exception() is not None:
            log.error("failed to handle a message", exc_info=task.exception())


@dataclass(frozen=True)
class _Decrypted:
    text: str | None
    device: Device | None
    undecryptable: str | None


def remembered(ids: dict[str, None], key: str, limit: int) -> bool:
    """Whether ``key`` is among ``ids``, which keep the newest ``limit``; it is from now on."""
    if key in ids:
        return True
    ids[key] = None
    while len(ids) > limit:
        del ids[next(iter(ids))]
    return False


def hold_until_done(client: Client, task: asyncio.Task[None] | None) -> None:
    """For a message handler: the message is acknowledged to the server (XEP-0198 §4) only once
    ``task``, which goes on handling it (storing it, entering the group it invites to), is done,
    however it ends, so that a client that stops before has not told the server it handled it."""
    if task is not None:
        release = client.hold_handled()
        task.add_done_callback(lambda _: release())


def worth_retrying(err: Undecryptable, stamp: datetime | None, now: datetime) -> bool:
    """Whether a message that could not be decrypted is to be tried again: only for a reason that
    may pass, and for at most :data:`RETRY_FOR` after it was sent (``stamp``, by the server's
    clock, as ``now``), so that one that never becomes readable does not hold the archive catch-up
    back for ever."""
    return not err.lasting and (stamp is None or now - stamp < RETRY_FOR)


def first_waiting(results: Sequence[Result], undecrypted: Container[str], after: str | None) -> UndecryptedYet | None:
    """XEP-0313 catch-up, after a page of ``results`` that came after ``after``: the first of them
    that could not be decrypted for a reason that may pass (its archive id in ``undecrypted``),
    with the position just before it, None if there is none. The catch-up goes on past it, but
    saves no position beyond that one, so that the next login reads that message again rather
    than losing it (and skips what came after it, stored by then)."""
    failed = next((i for i, result in enumerate(results) if result.id in undecrypted), None)
    if failed is None:
        return None
    return UndecryptedYet(results[failed - 1].id if failed > 0 else after, results[failed].id)


class UndecryptedYet(ClientError):
    """A catch-up read a message it could not decrypt yet: ``position`` is the last archive id it
    may count as read."""

    def __init__(self, position: str | None, stanza_id: str) -> None:
        super().__init__(f"message {stanza_id} of the archive could not be decrypted yet; "
                         "it is read again once its sender's keys come, or at the next login")
        self.position = position


def _outdated(original: StoredMessage | None, message: Message) -> bool:
    """Whether ``message`` corrects ``original`` and a later correction of it came first (live,
    while the archive catch-up had not read this one yet): the store kept the later text, and
    this one is not told (XEP-0308 §4: every correction names the original, and the latest one
    is its text)."""
    return (message.replaces is not None and original is not None and original.edited is not None
            and message.stamp is not None and message.stamp < original.edited)


def _has_payload(el: Element) -> bool:
    """Whether an OMEMO message carries a payload (XEP-0384 §4.4: an empty one only moves keys)."""
    return any(el.find(f"{{{namespace}}}encrypted/{{{namespace}}}payload") is not None
               for namespace in (ns.OMEMO_LEGACY, ns.OMEMO_2))


def _delay(el: Element) -> datetime | None:
    delay = el.find(_DELAY)
    return parse_stamp(delay.get("stamp")) if delay is not None else None
