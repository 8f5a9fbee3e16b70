"""Presence and subscriptions (RFC 6121 §3, §4): what we announce, and what others announce.

The presence set last is announced again after each login (initial presence, §4.2), after the
roster was fetched, so that a reconnect looks to contacts like a short absence. Presence directed
to an address that does not see ours by its subscription (§4.6) is kept while whatever asked for
it lasts (a call, XEP-0353 §3.1): sent again after each login into a new session (a resumed one
keeps it, XEP-0198 §5), so that our server tells that address when we leave (§4.6.3), and
withdrawn with unavailable presence when the last reason for it goes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, sub
from ..errors import XmppError
from ..feed import Feed

if TYPE_CHECKING:
    from ..client import Client
    from .roster import Roster

log = logging.getLogger(__name__)

_PRESENCE = qname(ns.CLIENT, "presence")
_SHOW = qname(ns.CLIENT, "show")
_STATUS = qname(ns.CLIENT, "status")
_PRIORITY = qname(ns.CLIENT, "priority")
SHOW_VALUES = frozenset({"away", "chat", "dnd", "xa"})


@dataclass(frozen=True)
class PresenceUpdate:
    """A presence that arrived (RFC 6121 §4.7).

    ``kind`` is available, unavailable, subscribe, subscribed, unsubscribe, unsubscribed or
    error; ``show`` is None (plain available), away, chat, dnd or xa.
    """

    jid: JID
    kind: str
    show: str | None = None
    status: str | None = None
    priority: int = 0
    error: XmppError | None = None
    element: Element = field(default_factory=lambda: element(_PRESENCE), repr=False, compare=False)


def _priority(text: str | None) -> int:
    """§4.7.2.3: an integer from -128 to 127; anything else counts as 0."""
    try:
        value = int(text or "0")
    except ValueError:
        return 0
    return value if -128 <= value <= 127 else 0


class Presence:
    """Announces our presence and publishes everyone else's."""

    def __init__(self, client: Client, roster: Roster, *, announce: bool = True) -> None:
        self.client = client
        self.feed: Feed[PresenceUpdate] = Feed()
        self._roster = roster
        self._announcing = announce
        self._show: str | None = None
        self._status: str | None = None
        self._priority = 0
        self._extras: list[Callable[[], Element]] = []
        # The bare JIDs our presence is directed to (§4.6), each with how many reasons keep it there.
        self._shown_to: Counter[JID] = Counter()
        client.on_presence(self._received)
        client.on_connect(self._announce)

    def on_announce(self, extra: Callable[[], Element]) -> None:
        """Add the element ``extra`` makes to every presence we announce (such as XEP-0115 caps)."""
        self._extras.append(extra)

    def _own(self, to: JID | None = None) -> Element:
        el = element(_PRESENCE) if to is None else element(_PRESENCE, {"to": str(to)})
        if self._show is not None:
            sub(el, _SHOW, text=self._show)
        if self._status is not None:
            sub(el, _STATUS, text=self._status)
        if self._priority:
            sub(el, _PRIORITY, text=str(self._priority))
        el.extend(extra() for extra in self._extras)
        return el

    async def _announce(self) -> None:
        if self._announcing:
            await self.client.send_element(self._own())
        for to in list(self._shown_to):
            await self.client.send_element(self._own(to))

    def _sees_ours(self, jid: JID) -> bool:
        """Whether ``jid`` gets the presence we broadcast: we announce it, and it is subscribed
        to it (§4.4)."""
        contact = self._roster.contacts.get(jid)
        return self._announcing and contact is not None and contact.subscription in ("from", "both")

    async def direct(self, to: JID) -> None:
        """§4.6.2: show our presence to the bare JID ``to`` until :meth:`withdraw`, unless it
        sees our presence anyway; each call of this wants its own withdrawal."""
        if self._sees_ours(to):
            return
        self._shown_to[to] += 1
        if self._shown_to[to] == 1:
            await self.client.send_element(self._own(to))

    async def withdraw(self, to: JID) -> None:
        """§4.6.2: undo a :meth:`direct`; the last one sends ``to`` unavailable presence, unless
        it has come to see our presence meanwhile (it would take us for gone)."""
        if to not in self._shown_to:
            return
        self._shown_to[to] -= 1
        if not self._shown_to[to]:
            del self._shown_to[to]
            if not self._sees_ours(to):
                await self._directed(to, "unavailable")

    async def set(self, show: str | None, status: str | None, priority: int) -> None:
        """§4.4: a presence broadcast to the contacts that may see it."""
        if show is not None and show not in SHOW_VALUES:
            raise ValueError(f"show must be one of {', '.join(sorted(SHOW_VALUES))} or None, not {show!r}")
        if not -128 <= priority <= 127:
            raise ValueError("priority must be between -128 and 127")
        self._show, self._status, self._priority = show, status, priority
        self._announcing = True
        await self.client.send_element(self._own())

    async def _directed(self, to: JID, kind: str) -> None:
        await self.client.send_element(element(_PRESENCE, {"to": str(to.bare), "type": kind}))

    async def subscribe(self, jid: JID) -> None:
        """§3.1.1: ask to see ``jid``'s presence."""
        await self._directed(jid, "subscribe")

    async def approve(self, jid: JID) -> None:
        """§3.1.4 and §3.4: let ``jid`` see our presence."""
        await self._directed(jid, "subscribed")

    async def deny(self, jid: JID) -> None:
        """§3.1.5 and §3.2: refuse or cancel ``jid``'s subscription to our presence."""
        await self._directed(jid, "unsubscribed")

    async def unsubscribe(self, jid: JID) -> None:
        """§3.3: stop seeing ``jid``'s presence."""
        await self._directed(jid, "unsubscribe")

    def _received(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            log.debug("dropping a presence with a malformed address")
            return
        if stanza.from_ is None:
            return
        kind = stanza.type or "available"
        show = el.findtext(_SHOW)
        self.feed.publish(PresenceUpdate(
            jid=stanza.from_,
            kind=kind,
            show=show if show in SHOW_VALUES else None,
            status=el.findtext(_STATUS),
            priority=_priority(el.findtext(_PRIORITY)),
            error=XmppError.from_stanza(el) if kind == "error" else None,
            element=el,
        ))
