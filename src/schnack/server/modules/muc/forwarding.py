"""XEP-0045 §17.4 (1.35, business rules for IQ): IQ requests to an occupant, passed on through the room.

An occupant may query another by its occupant JID (``room@service/nick``): the room passes the
request on with a fresh id, from the asker's own occupant JID, to the target's resource that
joined last, and the answer back to the asker under the original id, from the target's occupant
JID, so that neither learns the other's address from it. vCard requests go to the target's bare
JID instead, where the server answers for the account (XEP-0054 §3.3; what clients ask for to show
an occupant's picture). Only occupants ask (not-acceptable otherwise); a nick nobody uses is
item-not-found. Requests waiting for their answer are kept for at most ``_PENDING_TTL`` seconds
and ``_MAX_PENDING`` at a time.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from ...hooks import HANDLED, Handled

if TYPE_CHECKING:
    from ...sessions import Session
    from . import Muc

_VCARD = qname("vcard-temp", "vCard")
_PENDING_TTL = 120.0
_MAX_PENDING = 10_000


class Forwarding:
    """IQs between occupants."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc
        self._ids = itertools.count()
        # forwarded id -> (asker's full JID, asker's id, where it went, the target's occupant JID, deadline)
        self._pending: OrderedDict[str, tuple[JID, str | None, str, str, float]] = OrderedDict()

    async def handle(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None or to.local is None or to.resource is None:
            return None
        if stanza.type in ("result", "error"):
            return self._answer(stanza, sender)
        room = self.muc.rooms.live.get(to.bare)
        if room is None:
            raise StanzaError("item-not-found", "there is no such group")
        asker = room.by_session.get(sender)
        if asker is None:
            raise StanzaError("not-acceptable", "you are not in this group")
        target = room.occupants.get(to.resource)
        if target is None or not target.sessions:
            raise StanzaError("item-not-found", "nobody by that nickname is in the group")
        payload = stanza.payload
        assert payload is not None
        destination = str(target.jid) if payload.tag == _VCARD else str(target.latest)
        key = f"muc-iq-{next(self._ids)}"
        self._remember(key, (sender, stanza.id, destination, room.occupant_jid(target.nick),
                             time.monotonic() + _PENDING_TTL))
        request = element(stanza.el.tag, {"type": stanza.type, "id": key, "to": destination,
                                          "from": room.occupant_jid(asker.nick)}, children=[payload])
        await self.muc.server.router.send(request)
        return HANDLED

    def _remember(self, key: str, entry: tuple[JID, str | None, str, str, float]) -> None:
        now = time.monotonic()
        while self._pending and (len(self._pending) >= _MAX_PENDING or next(iter(self._pending.values()))[4] < now):
            self._pending.popitem(last=False)
        self._pending[key] = entry

    def _answer(self, stanza: Stanza, responder: JID) -> Handled:
        entry = self._pending.get(stanza.id or "")
        if entry is None or entry[2] not in (str(responder), str(responder.bare)):
            return HANDLED  # not an answer to anything the room asked: dropped (RFC 6120 §8.2.3)
        del self._pending[stanza.id or ""]
        asker, asker_id, _, target, _ = entry
        reply = element(stanza.el.tag, {"type": stanza.type, "id": asker_id, "to": str(asker), "from": target},
                        children=list(stanza.el))
        self.muc.send_to(asker, reply)
        return HANDLED
