"""RFC 6121 §3 and §4: presence subscriptions and presence, for the accounts of this server.

This module is both the user's server and the contact's server of RFC 6121. A local client's
presence passes ``pre-presence/*`` first (outbound processing, §3.1.2, §4.2.2 and on); a
presence for a local account arrives on ``presence/bare`` or ``presence/full`` (inbound
processing, §3.1.3, §8.5), whether a client or the server sent it.

Subscription states are those of Appendix A: the roster item holds the subscription, 'ask'
(pending out) and 'approved' (a pre-approval, §3.4); a request waiting for the user's answer
(pending in) is kept by the roster module and delivered again with each initial presence until
the user answers (§3.1.3); while the user blocks its sender, it stays kept but is not delivered
(XEP-0191 §3.3, asked of the blocking module when enabled), and shows again once unblocked.
Every state change is pushed to the interested resources.

Presence: the first available presence of a resource (initial presence, §4.2) goes to the
contacts subscribed to the user and to the user's own available resources; it probes the
contacts the user is subscribed to (§4.3), shows the new resource its siblings and the waiting
subscription requests, and then fires ``presence-initial`` (session), on which the offline
module delivers stored messages. Later presence is broadcast the same way (§4.4); one that lifts
the resource's priority from negative to non-negative fires ``presence-raised`` (session): from
then on it takes messages to the bare JID (§8.5.2.1.1), the stored ones first. Unavailable
presence (§4.5), or a session that ends without it, also reaches everyone the resource sent
directed presence to (§4.6). The session's ``available``, ``presence`` and ``priority`` are
kept here; message routing reads them.

In a cluster, the account's resources on other nodes are reached through
``server.cluster.presence`` (``server/cluster/presence.py``): what they are sent, their last
presence for probes, and ``session-changed`` (session), fired whenever a session's availability,
presence, priority or directed presence changes, keeps the cluster directory current.

Only accounts on this server's domains are served here. Contacts at other servers are
reached over server-to-server links when ``[s2s] enabled`` (subscriptions, broadcasts and
probes then treat them as local ones); otherwise a presence for another domain is left to the
router, which answers remote-server-not-found, and broadcasts and probes skip contacts there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..hooks import HANDLED, Handled
from ..module import Module
from ..storage.base import RosterItem
from .blocking import Blocking
from .directed import Directed
from .roster import Roster, has_from, has_to, reachable, subscription

if TYPE_CHECKING:
    from ..c2s import C2SStream
    from ..sessions import Session

log = logging.getLogger(__name__)

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
_PRESENCE = qname(ns.CLIENT, "presence")
_PRE_APPROVAL = qname(ns.PRE_APPROVAL, "sub")
_PRIORITY = re.compile(r"[+-]?[0-9]{1,4}")


def priority_of(stanza: Stanza) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127, 0 when absent."""
    text = stanza.el.findtext(qname(stanza.namespace, "priority"))
    if text is None:
        return 0
    text = text.strip()
    if not _PRIORITY.fullmatch(text) or not -128 <= int(text) <= 127:
        raise StanzaError("bad-request", "priority must be a whole number from -128 to 127")
    return int(text)


def addressed(el: Element, to: JID | str) -> Element:
    """A copy of presence ``el`` for ``to``; the children are shared, not copied.

    Built anew because ``copy.copy`` of an Element shares its attribute dictionary.
    """
    return element(el.tag, {**el.attrib, "to": str(to)}, el.text, el)


class Presence(Module[Any]):
    """Presence subscriptions (RFC 6121 §3, Appendix A) and presence broadcast (§4)."""

    name = "presence"
    depends = ("roster",)

    def setup(self) -> None:
        roster = self.server.modules["roster"]
        assert isinstance(roster, Roster)
        self.roster = roster
        # XEP-0191 §3.3: a kept request of a sender the user blocks is not handed out.
        self.blocking = self.optional(Blocking)
        self.route("pre-presence/self", self.outbound_own)
        self.route("pre-presence/bare", self.outbound)
        self.route("pre-presence/full", self.outbound)
        if self.server.config.s2s.enabled:
            self.route("pre-presence/remote", self.outbound)
        self.route("pre-presence/service", self.outbound_service)
        # Delivery runs last, like message delivery, so that other modules may take a presence first.
        self.route("presence/bare", self.inbound_bare, priority=-100)
        self.route("presence/full", self.inbound_full, priority=-100)
        self.hook("session-closed", self.session_closed)
        self.hook("stream-features", self.stream_feature)

    async def stream_feature(self, stream: C2SStream) -> Element | None:
        """RFC 6121 §3.4.1: pre-approval is offered once the client authenticated."""
        return element(_PRE_APPROVAL) if stream.authenticated else None

    # Outbound: what a user's own client sends --------------------------------------------------

    async def outbound_own(self, stanza: Stanza, origin: Session | None) -> Handled:
        """Presence without 'to', or to the user's own bare JID: broadcast (§4.2, §4.4, §4.5).

        A probe of one's own account shows the other resources' presence; subscriptions to
        oneself are implied and dropped, as is an error addressed to oneself.
        """
        assert origin is not None, "the router uses the self target only for a session's stanzas"
        kind = stanza.type
        if kind is None:
            await self._available(stanza, origin)
        elif kind == "unavailable":
            await self._unavailable(stanza.el, origin, echo=True)
        elif kind == "probe":
            for other in self._available_sessions(origin.jid.bare):
                if other is not origin and other.presence is not None:
                    origin.send(addressed(other.presence, origin.jid))
            for sibling in await self.server.cluster.presence.presences(origin.jid.bare):
                origin.send(addressed(sibling, origin.jid))
        return HANDLED

    async def outbound(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """Presence to another local account or resource: subscriptions (§3) or directed presence (§4.6).

        Directed presence is remembered (available) or forgotten (unavailable) and then goes on
        to the router's delivery, as do probes and errors.
        """
        assert origin is not None and stanza.to is not None
        kind = stanza.type
        if kind in SUBSCRIPTION_TYPES:
            await self._outbound_subscription(stanza, origin)
            return HANDLED
        await self._direct(origin, stanza.to, kind)
        return None

    async def outbound_service(self, stanza: Stanza, origin: Session | None) -> None:
        """Directed presence to a service of this server (a group chat room) is remembered (§4.6).

        Everything else is for the service to answer; subscription stanzas travel from the bare
        JID, as between accounts (§3.1.2).
        """
        assert origin is not None and stanza.to is not None
        if stanza.type in SUBSCRIPTION_TYPES:
            stanza.set_from(origin.jid.bare)
        else:
            await self._direct(origin, stanza.to, stanza.type)

    async def _direct(self, session: Session, to: JID, kind: str | None) -> None:
        """Remember (available) or forget (unavailable) directed presence to ``to`` (§4.6); a change
        is a ``session-changed``, so that in a cluster the node that reaps a dead node can retract it."""
        directed = session.slot(Directed)
        if kind is None and to not in directed.to:
            directed.to |= {to}
        elif kind == "unavailable" and to in directed.to:
            directed.to -= {to}
        else:
            return
        await self.server.hooks.fire_all("session-changed", session)

    async def _available(self, stanza: Stanza, session: Session) -> None:
        """§4.2.2 initial presence and §4.4.2 later presence."""
        priority = priority_of(stanza)
        el = stanza.el
        el.attrib.pop("to", None)
        initial = not session.available
        raised = not initial and session.priority < 0 <= priority
        session.available = True
        session.presence = el
        session.priority = priority
        if raised:
            # Fired before anything awaits: a message routed to the bare JID from now on must
            # find the stored ones on their way out and wait behind them.
            try:
                await self.server.hooks.fire_all("presence-raised", session)
            except Exception:
                # What could not be delivered stays stored; the session already has its new
                # priority, which its contacts and the other cluster nodes must learn too.
                log.exception("handling the raised priority of %s failed", session.jid)
        await self.server.hooks.fire_all("session-changed", session)
        owner = session.jid.bare
        items = await self.roster.items(owner)
        for jid, item in items.items():
            if has_from(item.subscription) and reachable(self.server, JID.parse(jid)):
                await self.server.router.send(addressed(el, jid))
        for other in self._available_sessions(owner):
            other.send(addressed(el, other.jid))
        # The user's resources on other cluster nodes (a single node has none).
        cluster = self.server.cluster.presence
        await cluster.to_account(owner, addressed(el, owner))
        if not initial:
            return
        for other in self._available_sessions(owner):
            if other is not session and other.presence is not None:
                session.send(addressed(other.presence, session.jid))
        for sibling in await cluster.presences(owner):
            session.send(addressed(sibling, session.jid))
        # §4.3.1: probes come from the new resource, so that only it gets the answers.
        for jid, item in items.items():
            if has_to(item.subscription) and reachable(self.server, JID.parse(jid)):
                probe = element(_PRESENCE, {"type": "probe", "from": str(session.jid), "to": jid})
                await self.server.router.send(probe)
        for request in await self.roster.pending_requests(owner):
            if not await self._blocked(owner, request):
                session.send(request)
        await self.server.hooks.fire_all("presence-initial", session)

    async def _blocked(self, owner: JID, request: Element) -> bool:
        """Whether the blocking module holds back kept ``request`` (from the requester's bare JID)."""
        sender = request.get("from")
        if self.blocking is None or sender is None:
            return False
        return await self.blocking.is_blocked(owner, JID.parse(sender))

    async def _unavailable(self, el: Element, session: Session, *, echo: bool) -> None:
        """§4.5.2 and §4.6.3: tell the subscribed contacts, the user's resources and directed recipients.

        ``echo`` sends it back to the session too, which is still connected when it asked.
        """
        el.attrib.pop("to", None)
        was_available = session.available
        session.available = False
        session.presence = None
        await self.server.hooks.fire_all("session-changed", session)
        directed = session.slot(Directed)
        recipients, directed.to = directed.to, frozenset()
        owner = session.jid.bare
        reached: set[JID] = set()
        if was_available:
            for jid, item in (await self.roster.items(owner)).items():
                contact = JID.parse(jid)
                if has_from(item.subscription) and reachable(self.server, contact):
                    await self.server.router.send(addressed(el, contact))
                    reached.add(contact)
            for other in self._available_sessions(owner):
                other.send(addressed(el, other.jid))
            await self.server.cluster.presence.to_account(owner, addressed(el, owner))
            if echo:
                session.send(addressed(el, session.jid))
            reached.add(owner)
        for recipient in recipients:
            if recipient.bare not in reached:
                await self.server.router.send(addressed(el, recipient))

    async def _outbound_subscription(self, stanza: Stanza, session: Session) -> None:
        """§3.1.2, §3.2.2, §3.3.2, §3.4: the user's side of Appendix A.2, then the contact's side.

        Subscription stanzas travel between bare JIDs (§3.1.2). Subscribe and unsubscribe are
        routed on even without a state change, so that the user can bring a contact's server
        that lost track in step again; subscribed and unsubscribed only when they change the
        subscription state (Appendix A.2), so a pre-approval, made or cancelled, stays with the
        user's server (§3.4).
        """
        owner = session.jid.bare
        assert stanza.to is not None
        contact = stanza.to.bare
        if contact == owner:
            return  # to another resource of one's own: the subscription to oneself is implied
        kind = stanza.type
        roster = self.roster
        forward, share, conceal = True, False, False
        async with roster.locks.hold(owner):
            item = await roster.item(owner, contact)
            if kind == "subscribe":
                if item is None:
                    await roster.check_room(owner)
                    item = RosterItem(str(contact))
                if not has_to(item.subscription) and not item.ask:
                    await roster.save(owner, replace(item, ask=True))
            elif kind == "subscribed":
                forward = share = await roster.has_pending(owner, contact)
                if forward:
                    if item is None:
                        await roster.check_room(owner)
                        item = RosterItem(str(contact))
                    granted = subscription(has_to(item.subscription), True)
                    await roster.save(owner, replace(item, subscription=granted, approved=False))
                    await roster.set_pending(owner, contact, None)
                elif item is None or not has_from(item.subscription):
                    if item is None:
                        await roster.check_room(owner)
                        item = RosterItem(str(contact))
                    if not item.approved:
                        await roster.save(owner, replace(item, approved=True))
            elif kind == "unsubscribed":
                pending = await roster.has_pending(owner, contact)
                if pending:
                    await roster.set_pending(owner, contact, None)
                conceal = item is not None and has_from(item.subscription)
                forward = pending or conceal
                if item is not None and (conceal or item.approved):
                    revoked = subscription(has_to(item.subscription), False)
                    await roster.save(owner, replace(item, subscription=revoked, approved=False))
            elif item is not None and (has_to(item.subscription) or item.ask):
                cancelled = subscription(False, has_from(item.subscription))
                await roster.save(owner, replace(item, subscription=cancelled, ask=False))
        if not forward:
            return
        stanza.set_from(owner)
        stanza.set_to(contact)
        await self.server.router.send(stanza.el)
        if share:
            await self._presence_to(owner, contact)
        if conceal:
            await self.roster.absence_to(owner, contact)

    async def _presence_to(self, owner: JID, to: JID) -> None:
        """The last presence of each available resource of ``owner``, for ``to``."""
        for session in self._available_sessions(owner):
            if session.presence is not None:
                await self.server.router.send(addressed(session.presence, to))
        for presence in await self.server.cluster.presence.presences(owner):
            await self.server.router.send(addressed(presence, to))

    def _available_sessions(self, owner: JID) -> list[Session]:
        return [s for s in self.server.sessions.resources(owner) if s.available and not s.closed]

    # Inbound: what arrives for a local account -------------------------------------------------

    async def inbound_bare(self, stanza: Stanza, _origin: Session | None) -> Handled:
        """§8.5.2 for presence: subscriptions (§3), probes (§4.3), and presence for every available resource.

        An account with no available resource, or none at all, quietly drops presence
        (§8.5.2.2.2, §8.5.1).
        """
        assert stanza.to is not None
        owner = stanza.to.bare
        kind = stanza.type
        if kind in SUBSCRIPTION_TYPES:
            await self._inbound_subscription(stanza, owner)
        elif kind == "probe":
            await self._probe(stanza, owner)
        else:
            for session in self._available_sessions(owner):
                session.send(stanza.el)
        return HANDLED

    async def inbound_full(self, stanza: Stanza, origin: Session | None) -> Handled:
        """§8.5.3 for presence: a connected resource gets it; subscriptions and probes are the account's."""
        assert stanza.to is not None
        if stanza.type in SUBSCRIPTION_TYPES or stanza.type == "probe":
            return await self.inbound_bare(stanza, origin)
        session = self.server.sessions.get(stanza.to)
        if session is not None and not session.closed:
            session.send(stanza.el)
        return HANDLED

    async def _inbound_subscription(self, stanza: Stanza, owner: JID) -> None:
        """§3.1.3-§3.1.6, §3.2.3, §3.3.3: the contact's side of Appendix A.3.

        A subscription stanza that changes nothing is ignored; one that does is pushed and
        delivered to the account's interested and available resources.
        """
        assert stanza.from_ is not None
        sender = stanza.from_.bare
        stanza.set_from(sender)
        stanza.set_to(owner)
        if stanza.type == "subscribe":
            await self._inbound_subscribe(stanza, owner, sender)
            return
        roster = self.roster
        changed, conceal = False, False
        async with roster.locks.hold(owner):
            item = await roster.item(owner, sender)
            if stanza.type == "subscribed":
                if item is not None and item.ask:
                    granted = subscription(True, has_from(item.subscription))
                    await roster.save(owner, replace(item, subscription=granted, ask=False))
                    changed = True
            elif stanza.type == "unsubscribed":
                if item is not None and (has_to(item.subscription) or item.ask):
                    revoked = subscription(False, has_from(item.subscription))
                    await roster.save(owner, replace(item, subscription=revoked, ask=False))
                    changed = True
            else:
                if await roster.has_pending(owner, sender):
                    await roster.set_pending(owner, sender, None)
                    changed = True
                if item is not None and has_from(item.subscription):
                    cancelled = subscription(has_to(item.subscription), False)
                    await roster.save(owner, replace(item, subscription=cancelled))
                    changed = conceal = True
        if changed:
            for session in self.server.sessions.resources(owner):
                if (session.interested or session.available) and not session.closed:
                    session.send(stanza.el)
            await self.server.cluster.presence.to_account(owner, stanza.el)
        if conceal:
            await self.roster.absence_to(owner, sender)

    async def _inbound_subscribe(self, stanza: Stanza, owner: JID, sender: JID) -> None:
        """§3.1.3: approve automatically when subscribed already or pre-approved (§3.4), else keep and deliver.

        A request for an account that does not exist is answered with unsubscribed (§8.5.1).
        A repeated request replaces the kept one without being delivered again.
        """
        roster = self.roster
        async with roster.locks.hold(owner):
            item = await roster.item(owner, sender)
            if item is not None and has_from(item.subscription):
                outcome = "approved"
            elif item is not None and item.approved:
                granted = subscription(has_to(item.subscription), True)
                await roster.save(owner, replace(item, subscription=granted, approved=False))
                outcome = "approved"
            elif item is None and not await self._exists(owner):
                outcome = "refused"
            else:
                outcome = "kept" if await roster.has_pending(owner, sender) else "new"
                await roster.set_pending(owner, sender, stanza.el)
        reply = {"from": str(owner), "to": str(sender)}
        if outcome == "approved":
            await self.server.router.send(element(_PRESENCE, {**reply, "type": "subscribed"}))
            await self._presence_to(owner, sender)
        elif outcome == "refused":
            await self.server.router.send(element(_PRESENCE, {**reply, "type": "unsubscribed"}))
        elif outcome == "new":
            for session in self._available_sessions(owner):
                session.send(stanza.el)
            await self.server.cluster.presence.to_account(owner, stanza.el)

    async def _exists(self, owner: JID) -> bool:
        assert owner.local is not None
        if self.server.sessions.is_online(owner):
            return True
        return await self.server.storage.accounts.get(owner.domain, owner.local) is not None

    async def _probe(self, stanza: Stanza, owner: JID) -> None:
        """§4.3.2: the last presence of each available resource, for a prober the account lets see it.

        Others get unsubscribed, which tells their server the subscription is gone (§4.3.2 (1));
        with no available resource the answer is unavailable presence from the bare JID.
        """
        prober = stanza.from_
        assert prober is not None
        if prober.bare != owner:
            item = await self.roster.item(owner, prober.bare)
            if item is None or not has_from(item.subscription):
                unsubscribed = {"type": "unsubscribed", "from": str(owner), "to": str(prober.bare)}
                await self.server.router.send(element(_PRESENCE, unsubscribed))
                return
        sessions = [s for s in self._available_sessions(owner) if s.presence is not None]
        elsewhere = await self.server.cluster.presence.presences(owner)
        if not sessions and not elsewhere:
            unavailable = {"type": "unavailable", "from": str(owner), "to": str(prober)}
            await self.server.router.send(element(_PRESENCE, unavailable))
            return
        for session in sessions:
            assert session.presence is not None
            await self.server.router.send(addressed(session.presence, prober))
        for presence in elsewhere:
            await self.server.router.send(addressed(presence, prober))

    # Sessions that end -------------------------------------------------------------------------

    async def session_closed(self, session: Session) -> None:
        """§4.5.2, §4.6.3: a resource that leaves without unavailable presence is announced as gone."""
        if session.available or session.slot(Directed).to:
            unavailable = element(_PRESENCE, {"type": "unavailable", "from": str(session.jid)})
            await self._unavailable(unavailable, session, echo=False)
