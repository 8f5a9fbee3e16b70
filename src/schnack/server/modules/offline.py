"""XEP-0160: Best Practices for Handling Offline Messages, stamped with XEP-0203 Delayed Delivery.

Consumes the event ``message/offline`` (stanza), fired by the message module when no resource of
the recipient can take a chat or normal message: the message is stored in the archive store
``offline`` of the recipient with a ``<delay/>`` from the server's domain and the time it was
stored (XEP-0160 §2, XEP-0203 §3). An account holds at most ``max_messages`` of them; past that
the sender gets service-unavailable (XEP-0160 §2: the offline queue is full).

Consumes ``presence-initial`` (session), fired by the presence module when a resource sends its
initial presence: with a non-negative priority the stored messages are delivered to it in the
order they arrived (XEP-0160 §2) and deleted once sent, by id, so that a message stored while
delivery runs is neither lost nor delivered twice, and a session that closes midway keeps the
rest for its next login.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..locks import AccountLocks
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session

log = logging.getLogger(__name__)

STORE = "offline"
# A stored message is at most the largest stanza size the configuration allows, plus the delay.
_MAX_STORED = 16 * 1024 * 1024 + 4096
# Messages fetched from storage at a time while delivering.
_BATCH = 100
_DELAY = qname(ns.DELAY, "delay")
_HINTS = "urn:xmpp:hints"
_CHAT_STATES = "http://jabber.org/protocol/chatstates"


@dataclass(frozen=True)
class OfflineOptions:
    """How many messages an account may have waiting."""

    max_messages: int = bounded(10_000, min=1, max=1_000_000, help="stored messages per account")


def delay_stamp(moment: datetime) -> str:
    """A XEP-0082 DateTime in UTC with milliseconds, as XEP-0203 §3 asks for 'stamp'."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
        self._locks = AccountLocks()
        self.hook("message/offline", self.store)
        self.hook("presence-initial", self.deliver)

    async def store(self, stanza: Stanza) -> Handled:
        """XEP-0160 §2: keep the message, stamped with a XEP-0203 delay, unless the box is full."""
        assert stanza.to is not None and stanza.to.local is not None
        if not worth_storing(stanza.el):
            return HANDLED
        host, user = stanza.to.domain, stanza.to.local
        archive = self.server.storage.archive
        if await archive.count(host, user, STORE) >= self.options.max_messages:
            raise StanzaError(
                "service-unavailable",
                "the recipient is offline and their mailbox is full; try again later",
            )
        now = datetime.now(UTC)
        delay = element(_DELAY, {"from": host, "stamp": delay_stamp(now)})
        # Stamp only the stored copy: other handlers may still look at the stanza.
        stanza.el.append(delay)
        try:
            payload = serialize(stanza.el).encode()
        finally:
            stanza.el.remove(delay)
        sender = str(stanza.from_.bare) if stanza.from_ is not None else host
        await archive.append(host, user, STORE, now.timestamp(), sender, payload)
        return HANDLED

    async def deliver(self, session: Session) -> None:
        """XEP-0160 §2: on initial presence with a non-negative priority, send what waited."""
        if session.priority < 0:
            return
        host, user = session.host, session.username
        archive = self.server.storage.archive
        async with self._locks.hold(session.jid.bare):
            while not session.closed:
                page = await archive.query(host, user, STORE, limit=_BATCH)
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
                        session.send(message)
                    sent.append(item.id)
                if sent:
                    await archive.delete(host, user, STORE, ids=sent)
                if len(sent) < len(page.items) or page.complete:
                    break
