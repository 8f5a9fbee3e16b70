"""Chat messages (RFC 6121 §5): sending, and the stream of messages that arrive.

Plaintext leaves only when the caller says ``encrypted=False``: end-to-end encryption (OMEMO,
XEP-0384) is the default, and a message that cannot be encrypted is refused rather than sent
readable. Arriving OMEMO messages are decrypted before they are published, one after the other,
so that messages keep the order in which they arrived; the fallback body of an encrypted message
is never taken for its text.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, sub
from ..errors import XmppError
from ..feed import Feed
from ..omemo.devices import Device
from ..omemo.errors import Undecryptable

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")
_THREAD = qname(ns.CLIENT, "thread")
_DELAY = qname(ns.DELAY, "delay")


@dataclass(frozen=True)
class Message:
    """A message that arrived: ``text`` is its body; ``error`` is set on an error reply to one we
    sent (its ``id`` is ours); ``stamp`` is when it was first sent if it was held back (XEP-0203).

    ``encrypted`` tells an OMEMO message: ``device`` is then the sending device (its fingerprint
    and how far it is trusted) and, if it could not be decrypted, ``text`` is None and
    ``undecryptable`` says why.
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
    element: Element = field(default_factory=lambda: element(_MESSAGE), repr=False, compare=False)


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
        # The last message still being decrypted: the ones after it wait for it.
        self._last: asyncio.Task[None] | None = None
        client.on_message(self._received)

    async def send(self, to: JID, text: str, *, encrypted: bool) -> str:
        """RFC 6121 §5.2: a chat message with a body, encrypted (XEP-0384) unless told not to; the id
        it was sent with is returned."""
        el = element(_MESSAGE, {"type": "chat", "to": str(to)})
        if encrypted:
            el.extend(await self.client.omemo.encrypt(to, text))
        else:
            sub(el, _BODY, text=text)
        # Stored before it leaves, with an origin-id that is also its id (see outbox.py).
        return self.client.outbox.send(el, to, text, encrypted=encrypted)

    def _received(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            log.debug("dropping a message with a malformed address")
            return
        if stanza.type != "error" and self.client.outbox.is_copy(el, stanza.from_ or self.client.account):
            # Sent again by a sender who missed our server's acknowledgement (XEP-0359 origin-id).
            return
        if stanza.type != "error" and self.client.omemo.carries(el):
            self._in_order(stanza)
            return
        message = self._message(stanza, el.findtext(_BODY))
        if message is None:
            return
        if self._last is None:
            self._publish(message)
        else:
            self._in_order(stanza)

    def _message(self, stanza: Stanza, text: str | None, *, encrypted: bool = False, device: Device | None = None,
                 undecryptable: str | None = None) -> Message | None:
        el = stanza.el
        kind = stanza.type or "normal"
        error = XmppError.from_stanza(el) if kind == "error" else None
        if text is None and error is None and undecryptable is None:
            # Chat states, receipts, markers and empty OMEMO messages carry no text.
            return None
        delay = el.find(_DELAY)
        return Message(
            sender=stanza.from_ or self.client.account,
            text=text,
            id=stanza.id,
            to=stanza.to,
            type=kind,
            thread=el.findtext(_THREAD),
            stamp=parse_stamp(delay.get("stamp")) if delay is not None else None,
            error=error,
            encrypted=encrypted,
            device=device,
            undecryptable=undecryptable,
            element=el,
        )

    def _in_order(self, stanza: Stanza) -> None:
        task = asyncio.create_task(self._publish_after(self._last, stanza))
        self._last = task
        task.add_done_callback(self._done)

    async def _publish_after(self, previous: asyncio.Task[None] | None, stanza: Stanza) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if not self.client.omemo.carries(stanza.el):
            message = self._message(stanza, stanza.el.findtext(_BODY))
        else:
            sender = stanza.from_ or self.client.account
            try:
                decrypted = await self.client.omemo.decrypt(sender, stanza.el)
            except Undecryptable as err:
                log.warning("could not decrypt a message from %s: %s", sender, err)
                message = self._message(stanza, None, encrypted=True, undecryptable=str(err))
            else:
                message = self._message(stanza, decrypted.text, encrypted=True, device=decrypted.device)
        if message is not None:
            self._publish(message)

    def _publish(self, message: Message) -> None:
        """Record the message in the local store, then publish it unless it was a copy."""
        if self.client.outbox.record(message):
            self.feed.publish(message)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._last is task:
            self._last = None
        if not task.cancelled() and task.exception() is not None:
            log.error("failed to handle a message", exc_info=task.exception())
