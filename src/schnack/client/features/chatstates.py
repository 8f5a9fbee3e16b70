"""XEP-0085: Chat State Notifications (v2.1): telling a contact that we type, and hearing it.

Support is found out as §5.1 allows without service discovery: every content message we send
carries ``<active/>`` until the contact has answered without a chat state (rule 1); once they
answer with one, or send one on its own, they support them and :meth:`ChatStates.send` sends
standalone notifications (rule 3); if they answer without one, we stop (rule 2), until a later
message of theirs carries one again. Before the contact's first message nothing standalone is
sent. The same state is never sent twice in a row (§5.3), nor anything in group chats, which
have their own rules (§5.5). Standalone notifications carry the XEP-0334 ``<no-store/>`` hint:
they mean nothing later.

The chat states that contacts send are announced on :attr:`ChatStates.feed`; those in copies
of our other devices' messages and in the archive are not: they are over.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.chatstates import STATES, ChatState, State
from ...xmpp.xml import Element, element, qname, sub
from ..feed import Feed
from .messages import Incoming, Message, Messages

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_MESSAGE = qname(ns.CLIENT, "message")
_NO_STORE = qname("urn:xmpp:hints", "no-store")


@dataclass(frozen=True)
class ChatStateChange:
    """A contact's chat state (§2): ``sender`` (their full JID) is now ``state``."""

    sender: JID
    state: State


class ChatStates:
    """Chat states for one client: whom we may send them to, what we sent last, what arrives."""

    def __init__(self, client: Client, messages: Messages) -> None:
        self.client = client
        self.feed: Feed[ChatStateChange] = Feed(backlog=100)
        # Per contact (bare JID): True once they sent a chat state, False once they answered without.
        self._support: dict[JID, bool] = {}
        self._last: dict[JID, State] = {}
        messages.on_send(self._with_message)
        messages.on_incoming(self._incoming)

    def supported(self, peer: JID) -> bool | None:
        """Whether ``peer`` takes chat states: True, False, or None while that is not known yet."""
        return self._support.get(peer.bare)

    def _with_message(self, el: Element, to: JID) -> None:
        """§5.1 rules 1 and 3: a content message carries ``<active/>`` unless the contact refused."""
        if self._support.get(to.bare) is not False:
            el.append(ChatState("active").to_xml())
            self._last[to.bare] = "active"

    def _incoming(self, item: Incoming, _new: Message | None) -> None:
        if item.outgoing or item.carbon or item.history or item.stanza.type in ("groupchat", "error"):
            return
        peer = item.peer
        if peer is None or peer == self.client.account:
            return
        state = ChatState.find(item.el)
        if state is not None:
            self._support[peer] = True
            self.feed.publish(ChatStateChange(item.sender, state.state))
        elif item.content:
            self._support[peer] = False
            self._last.pop(peer, None)

    async def send(self, peer: JID, state: str) -> bool:
        """Send a standalone chat state to ``peer``; False if it was not sent: the contact does not
        take them (or has not shown yet that it does), or it is the state sent last."""
        if state not in STATES:
            raise ValueError(f"{state!r} is not a chat state (one of {', '.join(STATES)})")
        notification = ChatState(state)  # type: ignore[arg-type]
        bare = peer.bare
        if self._support.get(bare) is not True or self._last.get(bare) == notification.state:
            return False
        el = element(_MESSAGE, {"to": str(peer), "type": "chat", "id": secrets.token_hex(8)})
        el.append(notification.to_xml())
        sub(el, _NO_STORE)
        await self.client.send_element(el)
        self._last[bare] = notification.state
        return True
