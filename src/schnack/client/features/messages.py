"""Chat messages (RFC 6121 §5): sending, and the stream of messages that arrive.

Plaintext leaves only when the caller says ``encrypted=False``: end-to-end encryption is the
default, and a message that cannot be encrypted is refused rather than sent readable.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, sub
from ..errors import EncryptionRequired, XmppError
from ..feed import Feed

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
    sent (its ``id`` is ours); ``stamp`` is when it was first sent if it was held back (XEP-0203)."""

    sender: JID
    text: str | None
    id: str | None = None
    to: JID | None = None
    type: str = "normal"
    thread: str | None = None
    stamp: datetime | None = None
    error: XmppError | None = None
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
        client.on_message(self._received)

    async def send(self, to: JID, text: str, *, encrypted: bool) -> str:
        """RFC 6121 §5.2: a chat message with a body; the id it was sent with is returned."""
        if encrypted:
            raise EncryptionRequired(
                f"not sent to {to}: end-to-end encryption (OMEMO) is not available in this client; "
                "pass encrypted=False to send the message unencrypted"
            )
        id = secrets.token_hex(8)
        el = element(_MESSAGE, {"type": "chat", "to": str(to), "id": id})
        sub(el, _BODY, text=text)
        await self.client.send_element(el)
        return id

    def _received(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            log.debug("dropping a message with a malformed address")
            return
        kind = stanza.type or "normal"
        body = el.findtext(_BODY)
        error = XmppError.from_stanza(el) if kind == "error" else None
        if body is None and error is None:
            # Chat states, receipts and markers carry no text; their features read them.
            return
        delay = el.find(_DELAY)
        self.feed.publish(Message(
            sender=stanza.from_ or self.client.account,
            text=body,
            id=stanza.id,
            to=stanza.to,
            type=kind,
            thread=el.findtext(_THREAD),
            stamp=parse_stamp(delay.get("stamp")) if delay is not None else None,
            error=error,
            element=el,
        ))
