"""XEP-0280 Message Carbons across cluster nodes: copies for the carbons-enabled resources elsewhere.

The carbons module copies a message to the enabled resources on its own node; this part sends the
copies for the account's enabled resources on other nodes, which the directory names (their
availability and carbons state, :mod:`.directory`), as one-session copies over the bus:

- received (§7): on ``message/delivered`` wherever a message is delivered, to the enabled
  resources elsewhere that did not get it. A delivery to a bare JID split over nodes names the
  resources on other nodes that got it (:func:`delivered_elsewhere`), so that they get no copy;
- sent (§8): a message a client here sends, at the same point as the carbons module (priority
  -100 on ``pre-message/{bare,full,remote,service}``), to the sender's enabled resources elsewhere;
  a private message in a group elsewhere to those of them that share the sender's nick there, by
  the directed presence the directory shows (§6.1);
- sent in a group here (§6.1): when a room on this node passed on a private message
  (``muc/private-sent``), to the sender's enabled resources elsewhere joined under its nick.

An error answering a message copied as sent (§6.1) is caught on the sender's node, by the carbons
module, which is told here which resources elsewhere got the sent copy and posts the copy of the
error to them. For a private message in a group here, the group is told instead (the handler of
``muc/private-sent`` returns them): the error comes back through it, on its node, which may not be
the sender's.

Which messages are copied, and the copy's form, are the carbons module's (``eligible``,
``sent_scope``, ``private_in_group``, ``copy_of``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ..modules.carbons import Carbons, copy_of, eligible, nick_in, private_in_group, sent_scope
from ..modules.directed import Directed
from ..modules.message import DELIVERED
from ..modules.muc.messages import PRIVATE_SENT

if TYPE_CHECKING:
    from ..sessions import Session
    from .directory import SessionInfo
    from .node import ClusterNode

# The full JIDs on other nodes that got the message being delivered (set around firing
# ``message/delivered`` for a delivery split over nodes).
_ELSEWHERE: ContextVar[frozenset[str]] = ContextVar("delivered_elsewhere", default=frozenset())


@contextlib.contextmanager
def delivered_elsewhere(fulls: frozenset[str]) -> Iterator[None]:
    """Within this block, ``message/delivered`` is for a message that ``fulls`` on other nodes got too."""
    token = _ELSEWHERE.set(fulls)
    try:
        yield
    finally:
        _ELSEWHERE.reset(token)


class ClusterCarbons:
    """Sends carbon copies to the account's enabled resources on other nodes."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.server = node.server
        hooks = self.server.hooks
        hooks.add(DELIVERED, self.received)
        for target in ("bare", "full", "remote", "service"):
            hooks.add(f"pre-message/{target}", self.sent, -100)
        hooks.add(PRIVATE_SENT, self.sent_in_group)

    async def received(self, stanza: Stanza, _delivered: Sequence[Session]) -> None:
        """XEP-0280 §7 for the account's carbons-enabled resources on other nodes."""
        if (self.node.bus.alone() or stanza.to is None or stanza.to.domain not in self.server.hosts
                or not eligible(stanza)):
            return
        account = stanza.to.bare
        skip = _ELSEWHERE.get() | {str(stanza.from_)}
        for info in await self.node.remote(account):
            if info.available and info.carbons and info.jid not in skip:
                to = JID.parse(info.jid)
                await self.node.forward(info.node, copy_of(stanza, "received", account, to), to, copy=True)

    async def sent(self, stanza: Stanza, origin: Session | None) -> None:
        """XEP-0280 §8 for the sender's carbons-enabled resources on other nodes (§6.1: those that
        share the sender's nick, for a private message in a group elsewhere)."""
        assert origin is not None and stanza.to is not None, "pre-routes see addressed stanzas of a session"
        account = origin.jid.bare
        if self.node.bus.alone():
            return
        scope = sent_scope(self.server, stanza, account)
        if scope is None:
            return
        mine = nick_in(origin.slot(Directed).to, stanza.to.bare) if scope == "nick" else frozenset()
        targets = [info for info in await self.node.remote(account)
                   if info.available and info.carbons and (scope == "all" or not mine.isdisjoint(info.directed))]
        copied = await self._copy_sent(stanza, account, targets, in_group=scope == "nick")
        carbons = self.server.modules.get(Carbons.name)
        if copied and isinstance(carbons, Carbons):
            # The carbons module here remembers them, so that an error answering the message
            # reaches them too (§6.1).
            carbons.remember_elsewhere(stanza, origin, copied)

    async def sent_in_group(self, stanza: Stanza, sharing: Collection[JID]) -> frozenset[JID]:
        """§6.1 for the sender's resources on other nodes that share its nick in a group here;
        returns them, for the group to remember (an error answering the message reaches them too)."""
        sender = stanza.from_
        assert sender is not None, "a group learns who sends it a message"
        if self.node.bus.alone() or not private_in_group(stanza, marked=False):
            return frozenset()
        account = sender.bare
        names = {str(jid) for jid in sharing} - {str(sender)}
        targets = [info for info in await self.node.remote(account)
                   if info.available and info.carbons and info.jid in names]
        return frozenset(await self._copy_sent(stanza, account, targets, in_group=True))

    async def _copy_sent(self, stanza: Stanza, account: JID, targets: Sequence[SessionInfo], *,
                         in_group: bool) -> list[JID]:
        """Send the sent copies to ``targets``; returns their full JIDs."""
        copied = []
        for info in targets:
            to = JID.parse(info.jid)
            await self.node.forward(info.node, copy_of(stanza, "sent", account, to, in_group=in_group), to, copy=True)
            copied.append(to)
        return copied
