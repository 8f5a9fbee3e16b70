"""RFC 6121 §8.5: delivery of messages to the accounts of this server.

The routes ``message/bare``, ``message/full`` and ``message/self`` are handled at priority -100,
so that modules which take a message first (carbons, archiving, groups) run before delivery.

A resource is *available* for routing when it sent initial presence (``session.available``) with
a non-negative priority (RFC 6121 §8.5.2.1.1). Chat and normal messages to a bare JID go to the
"most available" resources: every available resource sharing the highest priority. When no
resource can take them they are offered to offline storage through the event
``message/offline`` (stanza), fired with ``hooks.fire``; a handler that keeps (or deliberately
drops) the message returns HANDLED, and may raise :class:`StanzaError` to refuse it. When no
handler takes it, the sender gets service-unavailable (RFC 6121 §8.5.2.2.1, XEP-0160 §1).

A full JID whose resource is gone: chat and normal messages are handled as if sent to the bare
JID, so that a message never disappears because a device went away. RFC 6121 §8.5.3.2.1 asks
this for chat only and lets a server drop or bounce normal messages; schnack delivers them
instead, because a message without a type is a normal message and clients send those too.

Once a message to an account was delivered, the event ``message/delivered`` (stanza, sessions)
is fired with ``hooks.fire_all``, and only when a handler listens: ``sessions`` are those that
got the stanza, empty when none did (offline storage took it, or a headline found no available
resource). Message carbons (XEP-0280 §7) copy it from there to the account's other resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ..hooks import HANDLED, Handled
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session

_TYPES: Final = frozenset({"chat", "error", "groupchat", "headline"})
DELIVERED: Final = "message/delivered"


def message_type(stanza: Stanza) -> str:
    """The type to route by: RFC 6121 §5.2.2 treats an absent or unknown type as "normal"."""
    kind = stanza.type
    return kind if kind is not None and kind in _TYPES else "normal"


class Message(Module[Any]):
    """Routes messages to local accounts and resources (RFC 6121 §8.5, RFC 6120 §10.3.1)."""

    name = "message"

    def setup(self) -> None:
        self.route("message/bare", self.to_bare, priority=-100)
        self.route("message/full", self.to_full, priority=-100)
        self.route("message/self", self.to_self, priority=-100)

    async def to_bare(self, stanza: Stanza, _origin: Session | None) -> Handled:
        """RFC 6121 §8.5.2: a message to ``localpart@domainpart``."""
        assert stanza.to is not None
        return await self._to_account(stanza, stanza.to)

    async def to_self(self, stanza: Stanza, origin: Session | None) -> Handled:
        """RFC 6120 §10.3.1: a message without 'to' is for the sender's bare JID, as one sent there.

        The missing 'to' is filled in, so that the resources receiving it (or offline storage)
        see whom it was for.
        """
        assert origin is not None, "the router uses the self target only for a session's stanzas"
        bare = origin.jid.bare
        if stanza.to is None:
            stanza.set_to(bare)
        return await self._to_account(stanza, bare)

    async def to_full(self, stanza: Stanza, _origin: Session | None) -> Handled:
        """RFC 6121 §8.5.3: a message to ``localpart@domainpart/resourcepart``."""
        to = stanza.to
        assert to is not None
        session = self.server.sessions.get(to)
        if session is not None and not session.closed:
            # §8.5.3.1: a connected resource gets it, available or not, whatever its priority.
            return await self._deliver(stanza, (session,))
        kind = message_type(stanza)
        if kind == "error":
            return HANDLED  # §8.5.3.2.1 (3): silently ignored
        if kind in ("chat", "normal"):
            return await self._to_account(stanza, to.bare)
        if not self.server.sessions.is_online(to.bare):
            await self._require_account(to.bare)
        if kind == "groupchat":
            raise StanzaError("service-unavailable", "that resource is not connected")
        return HANDLED  # §8.5.3.2.1 (1): a headline for a resource that is gone is dropped

    async def _to_account(self, stanza: Stanza, bare: JID) -> Handled:
        """RFC 6121 §8.5.2.1.1 and §8.5.2.2.1, by message type; 'to' is never rewritten."""
        kind = message_type(stanza)
        if kind == "error":
            return HANDLED  # §8.5.2.1.1 (5), §8.5.2.2.1 (4), and §8.5.1: never bounce an error
        sessions = self.server.sessions.resources(bare)
        if not sessions:
            await self._require_account(bare)
        if kind == "groupchat":
            # §8.5.2.1.1 (3), §8.5.2.2.1 (2): only a group service sends groupchat to a user.
            raise StanzaError("service-unavailable", "groupchat messages go to a group, not to a user")
        available = [s for s in sessions if s.available and s.priority >= 0 and not s.closed]
        if kind == "headline":
            # §8.5.2.1.1 (4): all non-negative resources; with none, §8.5.2.2.1 (3): dropped.
            return await self._deliver(stanza, available)
        if available:
            top = max(session.priority for session in available)
            return await self._deliver(stanza, [session for session in available if session.priority == top])
        # §8.5.2.2.1 (1), also for resources with only negative priority (§8.5.2.1.1 (1), (2)).
        if await self.server.hooks.fire("message/offline", stanza) is None:
            raise StanzaError("service-unavailable", "the recipient is not online")
        return await self._deliver(stanza, ())

    async def _deliver(self, stanza: Stanza, sessions: Sequence[Session]) -> Handled:
        """Send the stanza to ``sessions`` and tell who listens to ``message/delivered``."""
        for session in sessions:
            session.send(stanza.el)
        hooks = self.server.hooks
        if hooks.has(DELIVERED):
            await hooks.fire_all(DELIVERED, stanza, sessions)
        return HANDLED

    async def _require_account(self, bare: JID) -> None:
        """RFC 6121 §8.5.1: a message to an account that does not exist gets service-unavailable.

        Callers ask only when the account has no session, since an online account exists and
        the check costs a storage read.
        """
        assert bare.local is not None
        if await self.server.storage.accounts.get(bare.domain, bare.local) is None:
            raise StanzaError("service-unavailable")
