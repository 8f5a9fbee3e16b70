"""XEP-0313 §5 (MAM for MUC) and XEP-0045 §7.2.13: the room's archive, its stanza-ids and history.

A groupchat message with a body or an end-to-end encrypted payload (what the server cannot read is
stored as it came: ciphertext only) is archived before it goes out, in the archive store with host =
the service's domain and username = the room's name; the archive's id is the
``<stanza-id by='room@service'/>`` every occupant receives (XEP-0359). A ``<no-store/>`` or
``<no-permanent-store/>`` hint (XEP-0334 §4) keeps a message out: it goes out without one. ``with``
of an archived message is the sender's real bare JID, and in a non-anonymous room the stored message
names it in ``<x xmlns='…muc#user'><item jid=''/></x>``. History and query results carry that
element only to those the room shows real JIDs to now: once a room turned semi-anonymous, only the
moderators in it (a reader outside the room has no role, so sees none). A message whose sender and
origin-id (XEP-0359) match one of the latest archived ones is a copy sent again after a lost
acknowledgement (a reconnect, a cluster node that died): it is neither stored nor sent out again.

History on entering (§7.2.13, §7.2.14) comes from the archive: ``maxstanzas``, ``maxchars``, ``seconds``
and ``since`` narrow it, ``history_default`` messages are sent when the client asks for nothing,
never more than ``history_max``. Queries to the room's bare JID (§5.1) page through it with RSM;
in a members-only room only members (and admins and owners) may read it, outcasts never, and in
an open room anyone in the room or, if it is public and has no password, anyone at all (§6.1.2:
reading the archive takes the right to enter the room, which a password gives only to those who
entered with it). ``with`` (§4.1.1) names who published a message: an occupant JID
(room@service/nick) matches the messages sent under that nick, as their stored 'from' has it
(a nick changed later does not move them): the archive keeps each message's nick in a column of
its own and finds them by an index. Those archived before nicks were kept are read and parsed,
at most ``mam.SCAN_MOST`` a query, as for a full JID in a user archive. The room's bare JID
matches every message (a bare JID matches the bare 'from'). Any other JID matches by the
sender's real bare JID, so a reader the room does not show real JIDs to may filter by its own
JID only, not by another user's (forbidden).
An id in ``ids`` that the archive does not hold is item-not-found (§4.1.3), and more ids than
``max_page_size`` are policy-violation, as in a user archive.
A message is kept at its time to the microsecond, the precision its stamp shows, and ``start``,
``end`` and history's ``since`` take in the messages whose stamp is within them (§4.1.2), also
those kept at finer times before.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ....xmpp import ns
from ....xmpp.errors import StanzaError, StreamError
from ....xmpp.jid import JID
from ....xmpp.parser import parse_frame
from ....xmpp.payloads.forward import Forwarded, format_stamp
from ....xmpp.payloads.mam import QUERY, Fin, MamError, Query, Result, query_form
from ....xmpp.payloads.muc import USER_X, History, Item, UserX
from ....xmpp.payloads.rsm import ResultSet
from ....xmpp.payloads.sid import StanzaId
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname, serialize
from ...storage import ArchivePage, ItemNotFound
from ..mam import NO_STORE, check_ids, moment, now, scan, widened
from .room import AFFILIATION_RANK, Room
from .store import ARCHIVE

if TYPE_CHECKING:
    from . import Muc

log = logging.getLogger(__name__)

_MAX_STORED = 16 * 1024 * 1024 + 4096
_DELAY = qname(ns.DELAY, "delay")
ORIGIN_ID = qname(ns.SID, "origin-id")
# Archived messages whose origin-ids are remembered per room, for recognising a copy sent again.
RECENT = 500


def _hide_real_jid(message: Element) -> None:
    """XEP-0045 §7.2.3, XEP-0313 §5.1.2: an archived message without the sender's real JID, for
    a reader the room does not show real JIDs to (the room may have turned semi-anonymous since
    it stored the message). The ``muc#user`` element is the room's own record of that JID (a
    client's is dropped before archiving), so it goes whole."""
    for x in message.findall(USER_X):
        message.remove(x)


class Archive:
    """The archive of each room."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def store(self, room: Room, message: Element, sender: JID) -> str | None:
        """Archive ``message`` (as the room sends it, without 'to'); its id, None when the room keeps
        no archive or the sender asked it not to keep this message (XEP-0334 §4).

        In a non-anonymous room the stored copy also names the sender's real bare JID (XEP-0313
        §5.1.2), so that a member reading the history later knows whose OMEMO keys to use even
        when the sender has left.
        """
        if not room.config.logging or any(child.tag in NO_STORE for child in message):
            return None
        stored = message
        if room.config.non_anonymous:
            stored = element(message.tag, message.attrib, message.text, message)
            stored.append(UserX(items=(Item(jid=sender),)).to_xml())
        # The nick, as the query's occupant JID (§4.1.1) will name it: normalised.
        nick = JID.parse(message.get("from", room.text)).resource or ""
        archive_id = await self.muc.server.storage.archive.append(
            room.jid.domain, room.name, ARCHIVE, now(), str(sender), serialize(stored).encode(), resource=nick)
        origin = message.find(ORIGIN_ID)
        if room.recent is not None and origin is not None and origin.get("id"):
            room.recent[(str(sender), origin.get("id", ""))] = None
            while len(room.recent) > RECENT:
                del room.recent[next(iter(room.recent))]
        return archive_id

    async def stored_before(self, room: Room, message: Element, sender: JID) -> bool:
        """Whether ``sender`` sent ``message`` (by its origin-id) already and the archive has it."""
        origin = message.find(ORIGIN_ID)
        origin_id = origin.get("id") if origin is not None else None
        if not origin_id or not room.config.logging:
            return False
        if room.recent is None:
            page = await self.muc.server.storage.archive.query(
                room.jid.domain, room.name, ARCHIVE, limit=RECENT, reverse=True, count=False)
            room.recent = {}
            for item in page.items:
                archived = self.readable(item.payload, item.id)
                found = archived.find(ORIGIN_ID) if archived is not None else None
                if found is not None and found.get("id"):
                    room.recent[(item.with_jid, found.get("id", ""))] = None
        return (str(sender), origin_id) in room.recent

    def readable(self, item_payload: bytes, item_id: str) -> Element | None:
        try:
            return parse_frame(item_payload, _MAX_STORED)
        except StreamError as err:
            log.warning("skipping unreadable archived group message %s: %s", item_id, err.condition)
            return None

    async def history(self, room: Room, to: JID, request: History | None) -> None:
        """§7.2.14: the discussion history a newcomer asked for, each message with its delay and stanza-id."""
        if not room.config.logging:
            return
        options = self.muc.options
        request = request or History()
        limit = options.history_max
        if request == History():
            limit = options.history_default
        if request.maxstanzas is not None:
            limit = min(limit, request.maxstanzas)
        if request.maxchars == 0 or limit == 0:
            return
        start = None
        if request.since is not None:
            start = widened(request.since, -1)
        if request.seconds is not None:
            start = max(start or 0.0, time.time() - request.seconds)
        page = await self.muc.server.storage.archive.query(
            room.jid.domain, room.name, ARCHIVE, start=start, limit=limit, reverse=True, count=False)
        target = str(to)
        shows = room.sees_real_jids(room.by_session.get(to))
        out: list[Element] = []
        for item in page.items:
            message = self.readable(item.payload, item.id)
            if message is None:
                continue
            if not shows:
                _hide_real_jid(message)
            message.set("to", target)
            message.append(element(_DELAY, {"from": room.text, "stamp": format_stamp(moment(item.timestamp))}))
            message.append(StanzaId(item.id, room.text).to_xml())
            out.append(message)
        if request.maxchars is not None:
            # The newest messages that fit, counted as whole stanzas (§7.2.14).
            kept: list[Element] = []
            total = 0
            for message in reversed(out):
                total += len(serialize(message))
                if total > request.maxchars:
                    break
                kept.append(message)
            out = list(reversed(kept))
        for message in out:
            self.muc.send_to(to, message)

    def check_access(self, room: Room, sender: JID) -> None:
        """XEP-0313 §5.1.3 and §6.1.2 (the right to enter the room) as this service applies them
        (see the module docstring)."""
        rank = AFFILIATION_RANK[room.affiliation(sender.bare)]
        if rank < 0:
            raise StanzaError("forbidden", "you are banned from this group")
        if rank >= AFFILIATION_RANK["member"]:
            return
        if room.config.members_only:
            raise StanzaError("forbidden", "only members read this group's archive")
        if sender in room.by_session:
            return
        if room.config.password:
            # Entering took the password; a reader who did not enter has not shown it.
            raise StanzaError("forbidden", "enter the group with its password to read its archive")
        if not room.config.public:
            raise StanzaError("forbidden", "join the group to read its archive")

    async def form(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """XEP-0313 §4.1.5: the fields a query may use."""
        self.check_access(room, sender)
        return stanza.result(element(QUERY, children=[query_form()]))

    async def query(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """XEP-0313 §4 on the room: the page of messages to the querying resource, then ``<fin/>``."""
        self.check_access(room, sender)
        assert stanza.payload is not None
        try:
            query = Query.from_xml(stanza.payload)
        except MamError as err:
            raise StanzaError(err.condition, err.text) from None
        rsm = query.rsm or ResultSet()
        if rsm.index is not None:
            raise StanzaError("feature-not-implemented", "page with <after/> or <before/>, not by index")
        cap = self.muc.options.max_page_size
        limit = min(rsm.max, cap) if rsm.max is not None else cap
        flt = query.filter
        shows = room.sees_real_jids(room.by_session.get(sender))
        if flt.with_jid is not None and not shows and flt.with_jid.bare not in (room.jid, sender.bare):
            # §4.1.1: filtering by another user's real JID would tell who is behind a nick (the
            # reader's own JID tells it nothing new, an occupant JID names no real JID). forbidden
            # rather than not-allowed (RFC 6120 §8.3.3): the room's moderators may, this reader not.
            raise StanzaError("forbidden", "only those this group shows real JIDs to filter by them")
        archive = self.muc.server.storage.archive
        # §4.1.1: an occupant JID publishes what its 'from' shows; the archive files a message
        # under its sender's real JID, so those sent under a nick are found by reading the room's,
        # and the room's bare JID, the bare JID of every message's 'from', filters nothing out.
        with_jid = flt.with_jid
        in_room = with_jid is not None and with_jid.bare == room.jid
        occupant = with_jid if in_room and with_jid is not None and not with_jid.is_bare else None
        filed_under = str(with_jid.bare) if with_jid is not None and not in_room else None
        start = widened(flt.start, -1) if flt.start is not None else None
        end = widened(flt.end, 1) if flt.end is not None else None
        backward = rsm.before is not None
        nick = occupant.resource if occupant is not None else None

        async def read(after: str | None, before: str | None, limit: int, count: bool = False) -> ArchivePage:
            return await archive.query(
                room.jid.domain, room.name, ARCHIVE, with_jid=filed_under, start=start, end=end, ids=flt.ids,
                after_id=flt.after_id, before_id=flt.before_id, after=after, before=before, limit=limit,
                reverse=backward, count=count, resource=nick,
            )  # fmt: skip

        try:
            await check_ids(archive, room.jid.domain, room.name, ARCHIVE, flt.ids, cap)
            if occupant is not None:
                page = await scan(read, occupant, limit, rsm.after or None, rsm.before or None,
                                  backward=backward, by_resource=True, instead="")
            else:
                page = await read(rsm.after or None, rsm.before or None, limit, count=limit == 0)
        except ItemNotFound:
            raise StanzaError("item-not-found", "no message with that id in the archive") from None
        items = page.items
        for item in reversed(items) if query.flip_page else items:
            message = self.readable(item.payload, item.id)
            if message is None:
                continue
            if not shows:
                _hide_real_jid(message)
            result = Result(item.id, Forwarded(message, moment(item.timestamp)), query.queryid)
            self.muc.send_to(sender, element(
                qname(ns.CLIENT, "message"), {"from": room.text, "to": str(sender), "id": item.id},
                children=[result.to_xml()],
            ))  # fmt: skip
        first, last = (items[0].id, items[-1].id) if items else (None, None)
        return stanza.result(Fin(ResultSet(first=first, last=last, count=page.count), complete=page.complete).to_xml())
