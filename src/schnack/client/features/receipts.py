"""XEP-0184: Message Delivery Receipts (v1.4): asking for them, answering them, and the states
of our messages that they and the chat markers (markers.py) move on.

Every chat message we send asks for a receipt (§5.1). A message that arrives with a request is
answered with ``<received id='…'/>`` once it is stored (§5.2), unless it came from this very
account, from a group chat (§5.3: a room would answer for everyone), as a copy from our other
devices or from the archive (the device that got it answered), or is an error. §8 advises
against answering senders not allowed to see our presence, since a receipt shows that a device
is online; the check marks are what users of a messenger expect from everyone they write to,
so anyone's request is answered. Receipts carry
the XEP-0334 ``<store/>`` hint, so that our contact's archive keeps them for their devices that
are offline now. A receipt is stored with the message it answers, in one transaction, and sent
from the store until the server acknowledged it (outbox.py): one written while the link is down,
on a link lost before the server had it, or not written at all because the client died right
after it stored the message, is sent once the link is back, also by the next start of the
client; a copy of the message that comes again is not answered again. (A message that could not
be decrypted is not stored: its receipt goes only for as long as the client runs.) A receipt for one of our messages moves it to "delivered" in the store and is
announced on :attr:`Receipts.feed`, as is every later change of a message's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.correction import REPLACE
from ...xmpp.payloads.receipts import REQUEST, Received
from ...xmpp.xml import element, qname, sub
from ..feed import Feed
from .messages import Incoming, Message, Messages

if TYPE_CHECKING:
    from ..client import Client


_MESSAGE = qname(ns.CLIENT, "message")
STORE_HINT = qname("urn:xmpp:hints", "store")


@dataclass(frozen=True)
class Receipt:
    """A message's state moved on: in the conversation with ``peer``, the message ``id`` is now
    ``state``. ``outgoing`` is True for a message we sent ("delivered": it reached a device of
    the contact; "read": the contact displayed it), False for one we got ("read" on one of our
    devices)."""

    peer: JID
    id: str
    state: Literal["delivered", "read"]
    outgoing: bool = True


class Receipts:
    """Receipts for one client, and the feed of message state changes."""

    def __init__(self, client: Client, messages: Messages) -> None:
        self.client = client
        self.feed: Feed[Receipt] = Feed()
        messages.on_send(self._request)
        messages.on_incoming(self._incoming)
        messages.answer_with(self._answer)

    def _request(self, el: Element, _to: JID) -> None:
        """§5.1: ask for a receipt; not for a correction, whose original asked already."""
        if el.find(REPLACE) is None:
            el.append(element(REQUEST))

    def _incoming(self, item: Incoming, _new: Message | None) -> None:
        receipt = Received.find(item.el)
        peer = item.peer
        if receipt is not None and peer is not None and not item.outgoing:
            for id in self.client.store.mark(peer, receipt.id, "delivered", outgoing=True, earlier=False):
                self.feed.publish(Receipt(peer, id, "delivered"))

    def _answer(self, item: Incoming) -> Element | None:
        """§5.2: the receipt for a new message that asked for one (see the module docstring for when)."""
        stanza = item.stanza
        if (item.el.find(REQUEST) is None or item.outgoing or item.carbon or item.history or stanza.id is None
                or stanza.type == "groupchat" or item.sender.bare == self.client.account):
            return None
        answer = element(_MESSAGE, {"to": str(item.sender), "type": stanza.type or "normal"})
        answer.append(Received(stanza.id).to_xml())
        sub(answer, STORE_HINT)
        return answer
