"""XEP-0333: Chat Markers (v0.4; v1.0 calls them Displayed Markers): marking our messages
markable, telling a contact what we have read, and learning what they have read.

Every chat message we send is ``<markable/>`` (§3). :meth:`Markers.mark_read` marks the
conversation read up to a message in the store and sends ``<displayed id='…'/>`` for the last
markable message up to it (§4: only markable messages are marked) to the contact's bare JID,
so that all their devices, and ours through carbons, learn it; the marker carries the XEP-0334
``<store/>`` hint, so that the archives keep it for devices that are offline now. A
conversation read up to there already (here, or on another device whose marker came here)
sends none. The marker is stored with the conversation's new state, in one transaction, and
sent from the store until the server acknowledged it (outbox.py, as receipts are): marked read
while the link is down, on a link lost before the server had the marker, or by a client that
died before it was written, the conversation is told read once the link is back, also by the
next start of the client. A marker from the contact moves our messages up
to the one it names (a marker covers the earlier ones too) to "delivered" (``received``) or
"read" (``displayed``, ``acknowledged``); a ``displayed`` marker one of our other devices sent
marks the contact's messages read here too. Markers from the archive count as well: a device
that was offline catches up on what was read meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.correction import REPLACE
from ...xmpp.payloads.markers import MARKABLE, Marker
from ...xmpp.xml import Element, element, qname, sub
from ..errors import ClientError
from ..outbox import identify
from .messages import Incoming, Message, Messages
from .receipts import STORE_HINT, Receipt, Receipts

if TYPE_CHECKING:
    from ..client import Client

_MESSAGE = qname(ns.CLIENT, "message")


class Markers:
    """Chat markers for one client; state changes go to the receipts' feed."""

    def __init__(self, client: Client, messages: Messages, receipts: Receipts) -> None:
        self.client = client
        self._receipts = receipts
        messages.on_send(self._markable)
        messages.on_incoming(self._incoming)

    def _markable(self, el: Element, _to: JID) -> None:
        """§3: every message we send may be marked; a correction is not a message of its own."""
        if el.find(REPLACE) is None:
            el.append(element(MARKABLE))

    def _incoming(self, item: Incoming, _new: Message | None) -> None:
        marker = Marker.find(item.el)
        peer = item.peer
        if marker is None or peer is None or item.stanza.type == "groupchat":
            return
        if item.outgoing:
            # Our other device displayed the contact's messages up to this one.
            if marker.kind != "received":
                self._publish(peer, self.client.store.mark(peer, marker.id, "read", outgoing=False, earlier=True),
                              outgoing=False)
            return
        state = "delivered" if marker.kind == "received" else "read"
        self._publish(peer, self.client.store.mark(peer, marker.id, state, outgoing=True, earlier=True),
                      outgoing=True, state=state)

    def _publish(self, peer: JID, ids: list[str], *, outgoing: bool, state: str = "read") -> None:
        for id in ids:
            self._receipts.feed.publish(Receipt(peer, id, "delivered" if state == "delivered" else "read",
                                                outgoing=outgoing))

    async def mark_read(self, peer: JID, message_id: str) -> None:
        """Mark the conversation with ``peer`` read up to their message ``message_id`` (§4); the
        marker goes only if that made something read, so that they hear of each read once."""
        store = self.client.store
        if store.message(peer, message_id, outgoing=False) is None:
            raise ClientError(f"no message {message_id!r} from {peer.bare} is stored")
        markable = store.latest_markable(peer, message_id)
        answer = None
        if markable is not None:
            marker = element(_MESSAGE, {"to": str(peer.bare), "type": "chat"})
            marker.append(Marker("displayed", markable).to_xml())
            sub(marker, STORE_HINT)
            answer = identify(marker), marker
        # The conversation is read here once this returns: the marker is stored with it, so that
        # neither a link that is down or drops before the server has it, nor the end of this
        # process, loses it. Read up to there already (here, or on another of our devices, which
        # told them), nothing moves and no marker is kept.
        moved = store.mark(peer, message_id, "read", outgoing=False, earlier=True, answer=answer)
        self._publish(peer.bare, moved, outgoing=False)
        if moved and answer is not None:
            self.client.outbox.flush()
