"""XEP-0160: Best Practices for Handling Offline Messages, stamped with XEP-0203 Delayed Delivery.

Consumes the event ``message/offline`` (stanza), fired by the message module when no resource of the
recipient can take a chat or normal message: the message is stored in the archive store ``offline``
of the recipient with a ``<delay/>`` from the server's domain and the time it was stored (XEP-0160
§2, XEP-0203 §3), unless it carries one from the server's domain already (it comes back from a
session that did not acknowledge it, and keeps the time it first arrived). An account holds at most
``max_messages`` of them; past that the sender gets service-unavailable (XEP-0160 §2: the offline
queue is full). Once a message is kept (stored, or put back in its place), the event
``offline/kept`` (stanza) is fired with ``hooks.fire_all``: push notifications (XEP-0357) wake the
account's devices for what waits for them, and for nothing that was refused or kept already.

Once per account: a message the account's archive numbered (its ``<stanza-id by='account'/>``,
XEP-0359 §4) is stored under an id derived from that stanza-id and the account, which storage
takes only once (DuplicateItem, even when the copy took the mailbox's last place). So when
sessions of the account on two nodes of a cluster both end without acknowledging the message
(stream management, module sm), each node hands it here and it is kept once, and the sender gets
no error for it. A message without such a stanza-id (the account's archive preference is 'never',
XEP-0441) gets a new id each time.

Consumes ``presence-initial`` (session), fired by the presence module when a resource sends its
initial presence: with a non-negative priority the stored messages are delivered to it in the
order they arrived (XEP-0160 §2) and deleted once sent, by id, so that a message stored while
delivery runs is neither lost nor delivered twice, and a session that closes midway keeps the
rest for its next login. One that such a session did not acknowledge (stream management gives
it back) is put back where it was, ahead of the rest, so that the next delivery keeps the order.
One from an address the account blocked since it was stored (XEP-0191 §3.3: nothing from a
blocked contact reaches the user, module blocking) is not delivered but leaves the store all the
same; the account's archive (XEP-0313), which took it on its way in, keeps it.
``presence-raised`` (session), fired when a resource's later presence lifts its priority from
negative to non-negative, delivers them the same way: it is the first moment that resource can
take them (XEP-0160 §2: "next sends non-negative available presence").

Order: the stored messages are older than any message routed to the session once it became
available, so an output stage (priority 50: after client state indication, before stream
management numbers what the client gets) holds back the messages routed to an available session
until its delivery is done, then lets them go in the order they came; whatever is sent to the
session after a held message (an IQ, a presence) waits behind it too. A message stored while a
session of the account can take it (routed offline just before the session became available or
raised its priority, or given back by another session that ended without acknowledging it)
starts another delivery to it once stored, so that it does not wait for the next login; in a
cluster, the account's sessions on other nodes hear of it through the bus and do the same.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from ..background import Background
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..locks import AccountLocks
from ..module import Module
from ..sessions import Forward
from ..storage import ArchivedItem, ArchiveFull, DuplicateItem
from .blocking import Blocking

if TYPE_CHECKING:
    from ..sessions import Session

log = logging.getLogger(__name__)

# Storage keeps this store's count (storage.base.BOUNDED_STORES), so the limit costs no reading.
STORE = "offline"
# A stored message is at most the largest stanza size the configuration allows, plus the delay.
_MAX_STORED = 16 * 1024 * 1024 + 4096
# Messages fetched from storage at a time while delivering.
_BATCH = 100
_DELAY = qname(ns.DELAY, "delay")
_HINTS = "urn:xmpp:hints"
_CHAT_STATES = "http://jabber.org/protocol/chatstates"
_MESSAGE = qname(ns.CLIENT, "message")
_STANZA_ID = qname(ns.SID, "stanza-id")
KEPT = "offline/kept"


@dataclass(frozen=True)
class OfflineOptions:
    """How many messages an account may have waiting."""

    max_messages: int = bounded(10_000, min=1, max=1_000_000, help="stored messages per account")


@dataclass
class OfflineState:
    """Per session: its deliveries of stored messages, and the messages held back meanwhile."""

    # The client sent initial presence and the delivery it brings has not finished yet.
    awaited: bool = False
    # Deliveries started and not finished.
    running: int = 0
    # Stored messages on their way through the output stages, which the hold lets pass.
    sending: set[Element] = field(default_factory=set)
    held: list[tuple[Element, Forward]] = field(default_factory=list)

    def holding(self) -> bool:
        return self.awaited or self.running > 0


def delay_stamp(moment: datetime) -> str:
    """A XEP-0082 DateTime in UTC with milliseconds, as XEP-0203 §3 asks for 'stamp'."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def copy_id(el: Element, account: str) -> str | None:
    """The id of the offline copy of ``el`` for ``account``, the same on every node: made from
    the stanza-id by the account (XEP-0359 §4; only the server sets those, module mam) and the
    account, as archive ids are unique across accounts. 24 characters, so never one of the 16 of
    storage.new_item_id. None without such a stanza-id."""
    for sid in el.iterfind(_STANZA_ID):
        if sid.get("by") == account and sid.get("id"):
            digest = hashlib.sha256(f"{account}\n{sid.get('id')}".encode()).digest()
            return base64.urlsafe_b64encode(digest[:18]).decode()
    return None


def worth_storing(el: Element) -> bool:
    """Whether a message should wait for its recipient.

    XEP-0334 §4: ``<no-store/>`` asks not to store it, ``<store/>`` to store it anyway. A
    message carrying nothing but a chat state (XEP-0085) means nothing by the time the recipient
    comes back; receipts and markers without a body do, and are kept.
    """
    if el.find(qname(_HINTS, "no-store")) is not None:
        return False
    if el.find(qname(_HINTS, "store")) is not None:
        return True
    return any(not child.tag.startswith(f"{{{_CHAT_STATES}}}") for child in el)


class Offline(Module[OfflineOptions]):
    """Stores messages for accounts without an available resource and delivers them later."""

    name = "offline"
    features = (ns.OFFLINE,)
    Options = OfflineOptions

    def setup(self) -> None:
        # This node's own: they keep one delivery at a time to this node's sessions of an account.
        self._locks = AccountLocks()
        self._tasks = Background(log, "delivering offline messages failed")
        # Per message delivered from storage: the item it was, should it come back unacknowledged.
        self._taken: weakref.WeakKeyDictionary[Element, ArchivedItem] = weakref.WeakKeyDictionary()
        self.blocking = self.optional(Blocking)
        self.hook("message/offline", self.store)
        self.hook("presence-initial", self.deliver)
        self.hook("presence-raised", self.deliver)
        # Before the presence module makes the session available, so that nothing overtakes the delivery.
        self.route("pre-presence/self", self.initial_presence, priority=100)
        self.hook("session-bound", self.bound)
        # Before stream management settles the session: what was held back joins its queue first.
        self.hook("session-closed", self.closed, priority=10)

    async def stop(self) -> None:
        await self._tasks.wait()

    async def bound(self, session: Session) -> None:
        """The output stage that keeps live messages behind the stored ones (see the module docstring)."""
        state = session.slot(OfflineState)

        def stage(el: Element, forward: Forward) -> None:
            if el in state.sending:
                state.sending.discard(el)
                forward(el)
            elif session.available and state.holding() and (el.tag == _MESSAGE or state.held):
                # Whatever follows a held message waits behind it: the stage must not reorder the
                # output (the end of an archive query would overtake the results it closes).
                state.held.append((el, forward))
            else:
                forward(el)

        session.add_output_stage(stage, priority=50)

    async def initial_presence(self, stanza: Stanza, origin: Session | None) -> None:
        """RFC 6121 §4.2: from initial presence on, messages can be routed to the session; they
        wait for the delivery that ``presence-initial`` brings."""
        if origin is not None and stanza.type is None and not origin.available:
            origin.slot(OfflineState).awaited = True

    async def closed(self, session: Session) -> None:
        """What was held back goes on to the stages closer to the transport, which handle the end
        of the session (stream management gives back what was not acknowledged)."""
        self._release(session.slot(OfflineState))

    @staticmethod
    def _release(state: OfflineState) -> None:
        held, state.held = state.held, []
        for el, forward in held:
            forward(el)

    async def store(self, stanza: Stanza) -> Handled:
        """XEP-0160 §2: keep the message, stamped with a XEP-0203 delay, unless the box is full."""
        assert stanza.to is not None and stanza.to.local is not None
        host, user = stanza.to.domain, stanza.to.local
        taken = self._taken.pop(stanza.el, None)
        if taken is not None:
            # Delivered from here, and back from a session that ended without acknowledging it
            # (stream management, module sm): back in its place, ahead of those stored after it
            # that the delivery did not reach, so that the next one keeps the order they came in.
            # After a delivery under way: put back before its delete, it would be taken for good.
            async with self._locks.hold(stanza.to.bare):
                await self.server.storage.archive.put_back(host, user, STORE, [taken])
            await self._kept(stanza)
            return HANDLED
        if not worth_storing(stanza.el):
            return HANDLED
        now = datetime.now(UTC)
        if any(delay.get("from") == host for delay in stanza.el.iterfind(_DELAY)):
            # Stamped here before: a message that comes back from a session that did not
            # acknowledge it (stream management, module sm) keeps the time it first reached the
            # account, and a client sees one delay, not two.
            payload = serialize(stanza.el).encode()
        else:
            delay = element(_DELAY, {"from": host, "stamp": delay_stamp(now)})
            # Stamp only the stored copy: other handlers may still look at the stanza.
            stanza.el.append(delay)
            try:
                payload = serialize(stanza.el).encode()
            finally:
                stanza.el.remove(delay)
        sender = str(stanza.from_.bare) if stanza.from_ is not None else host
        stored_before = False
        try:
            # The limit is checked in the transaction that stores, so concurrent senders cannot pass it.
            await self.server.storage.archive.append(host, user, STORE, now.timestamp(), sender, payload,
                                                     limit=self.options.max_messages,
                                                     item_id=copy_id(stanza.el, str(stanza.to.bare)))
        except DuplicateItem:
            # Stored already, by another node whose session of the account did not acknowledge it
            # either: that node told of it. Delivered after the try, not awaited in the except:
            # see tests/test_compiled.py.
            log.debug("a message for %s is in offline storage already", stanza.to.bare)
            stored_before = True
        except ArchiveFull:
            raise StanzaError(
                "service-unavailable",
                "the recipient is offline and their mailbox is full; try again later",
            ) from None
        if stored_before:
            await self._deliver_stored(stanza.to.bare)
        else:
            await self._kept(stanza)
        return HANDLED

    async def _kept(self, stanza: Stanza) -> None:
        """A message waits for its recipient now: tell who listens, then deliver it to the sessions
        that can take it already."""
        assert stanza.to is not None
        hooks = self.server.hooks
        if hooks.has(KEPT):
            await hooks.fire_all(KEPT, stanza)
        await self._deliver_stored(stanza.to.bare)

    async def _blocked(self, account: JID, message: Element) -> bool:
        """Whether ``account`` blocks the sender of stored ``message`` (XEP-0191 §3.3, §6 matching)."""
        if self.blocking is None:
            return False
        try:
            sender = JID.parse(message.get("from") or "")
        except JIDError:
            return False
        return await self.blocking.is_blocked(account, sender)

    async def _deliver_stored(self, account: JID) -> None:
        """Another delivery for the sessions of ``account`` that can take a message just stored:
        their own delivery may have been over before it was in storage (it was routed offline as
        they became available, or another session gave it back). Those on other nodes of a cluster
        hear of it through the bus (``ClusterNode.stored``)."""
        for session in self.server.sessions.resources(account):
            if session.available and session.priority >= 0 and not session.closed:
                self._tasks.spawn(self.deliver(session))
        await self.server.cluster.stored(account)

    async def deliver(self, session: Session) -> None:
        """XEP-0160 §2: on initial presence with a non-negative priority, or on a priority raised to
        one, send what waited; messages routed to the session meanwhile follow once it is done."""
        state = session.slot(OfflineState)
        state.running += 1
        try:
            if session.priority >= 0:
                await self._deliver(session, state)
        finally:
            state.running -= 1
            state.awaited = False
            if not state.holding():
                state.sending.clear()
                self._release(state)

    async def _deliver(self, session: Session, state: OfflineState) -> None:
        host, user = session.host, session.username
        archive = self.server.storage.archive
        async with self._locks.hold(session.jid.bare):
            while not session.closed:
                page = await archive.query(host, user, STORE, limit=_BATCH, count=False)
                sent: list[str] = []
                for item in page.items:
                    if session.closed:
                        break
                    try:
                        message = parse_frame(item.payload, _MAX_STORED)
                    except StreamError as err:
                        # Unreadable forever: keeping it would block every later message.
                        log.warning(
                            "dropping unreadable offline message %s of %s: %s",
                            item.id,
                            session.jid.bare,
                            err.condition,
                        )
                    else:
                        if await self._blocked(session.jid.bare, message):
                            log.info("dropping offline message %s of %s: its sender is blocked", item.id,
                                     session.jid.bare)
                        else:
                            state.sending.add(message)
                            self._taken[message] = item
                            session.send(message)
                    sent.append(item.id)
                if sent:
                    await archive.delete(host, user, STORE, ids=sent)
                if len(sent) < len(page.items) or page.complete:
                    break
