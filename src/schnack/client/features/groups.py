"""XEP-0045: Multi-User Chat (1.35) for the client: private groups, encrypted end to end with
OMEMO (XEP-0384), kept as XEP-0402 bookmarks and caught up from the room's archive (XEP-0313 §5).

A group is created by entering a room of a fresh name at the group service that the account's
server lists in disco#items (XEP-0030 §4, identity conference/text) and submitting the room's
configuration form (§10.1.3) with the private-group preset: members-only, non-anonymous,
persistent, hidden; the name goes in ``muc#roomconfig_roomname``. With ``encrypted=False`` the
room becomes a public channel instead (open, listed, semi-anonymous), where OMEMO cannot work
and plaintext is the only way. Members are added by mediated invitation (§7.8.2), which makes
them members of a members-only room; the server's note on members whose OMEMO keys others
cannot fetch (``<warnings xmlns='https://schnack.im/protocol/muc-keys'/>``) is handed back.
An address given to send to, or to enter, must be an existing room: one that answers disco#info
as something else is refused at once (§6.4), and a room that entering it created (§10.1.1) is
destroyed again and not bookmarked. So is one that a stored group's address names when the
groups are entered after a login: the group was destroyed meanwhile, and it is forgotten, with
a :class:`Removed` event.

Every group is a XEP-0402 bookmark (``urn:xmpp:bookmarks:1``, autojoin, with the nick), so that
the account's other apps see it too, and a copy of the list lives in the local store. After each
new login the stored groups are entered again before the outbox is sent (so that a group
message waiting there finds its room), then the bookmarks are read: groups added elsewhere are
entered, groups left elsewhere forgotten. Entering asks for no history (§7.2.14,
``maxstanzas='0'``); the room's archive is read instead from where this device got to, page by
page, de-duplicated by the room's stanza-ids (XEP-0359), so that what arrives live meanwhile is
not shown twice (nor taken for where this device got to: a group counts as catching up from the
moment it is entered until its archive is read, and the stored groups are entered at once and
their archives read one after the other). A message that could not be decrypted for a
reason that may pass (OMEMO not set up on this login, a lost link, the sender's keys not fetched
yet, no session yet) does not hold back what came after it, but the position stays before it,
so that the next catch-up reads it again, for up to ``messages.RETRY_FOR`` after it was sent
(the messages that arrive live meanwhile do not move the position past it either); one runs in
the same login when someone's keys are fetched, after the catch-up under way if there is one.
A resumed session (XEP-0198 §5) enters no group again: a catch-up that stopped short is taken
up once it is back, and so is the set-up of a group that the lost link cut short after it was
entered and before its archive was read (live messages move no position meanwhile).

A group message is encrypted to every device of every member (the owner, admin and member
lists, §9.5 and §10.5, which members of a non-anonymous room may read, kept current from the
room's presence and affiliation notes) and to our own other devices; plaintext leaves only with
``encrypted=False``. The lists are read on entering (after every new login); while they cannot
be read, a list known from before may name someone removed meanwhile or lack a new member, so
an encrypted message is refused (:class:`MembersUnknown`) until a read succeeds, which each send
tries again. An arriving one is decrypted with the sender's real JID, from the room's
presence (§7.2.3, non-anonymous rooms show it) or from the archived copy (XEP-0313 §5.1.2). What
this device sent comes back from the room (§7.2.3 reflection) and is recognised by its origin-id.
Every message read (live or archived) is kept in the local store with the group as its peer and
the writer's nickname and real JID, once per room stanza-id, before it is announced; one stored
at an earlier login is not read from the archive again. A live one moves the position only once
it is stored (or kept to be decrypted again, or told as undecryptable), so that a client that
stops while it is decrypted reads it from the archive at its next login; it counts in the ``h``
the client acknowledges with (XEP-0198 §4) once its handling is over, however that ended, and a
copy the server sends again after a resumption once the message does. One that could not be
decrypted is announced as undecryptable once, however often it is read again (a catch-up running
again in the same login, or after a new login of the same client).

A live message that could not be decrypted for a reason that may pass (its sender's keys not
fetched yet, no session yet, OMEMO not set up, a lost link, the room not showing yet who wrote
it) is announced as undecryptable and kept, up to :data:`_PENDING` per group: it is tried again
when its sender's device lists are fetched or updated and when another message of theirs was
decrypted (which may have built the session it needs), or when the room shows the writer's real
JID in their presence (§7.2.3, once the room became non-anonymous, §10.2.1), in the order they
came, for up to ``messages.RETRY_FOR``. Once decrypted it
is stored with the time it came and announced as a late arrival (``history``), so that it shows
in its place. The room's position stays before the first such message meanwhile, so that the
next login reads it from the archive if no try succeeded; one given up no longer holds it (a
catch-up that stopped before it is taken up again to read on past it).

A mediated invitation (§7.8.2) from a room is accepted: the room made us a member, as adding
someone to a group does in the messengers people know; a direct invitation (XEP-0249) only from
a contact. An invitation counts in the XEP-0198 ``h`` once entering its group is over (done or
failed), so that a client that stops before it is in the group gets the invitation again from
the server's offline storage at its next login. Being removed from a group (kicked, §8.2;
banned, §9.1; membership revoked, §9.4; the group destroyed, §10.9) ends the group on this
device, with an event saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.bookmarks import NS as BOOKMARKS
from ...xmpp.payloads.bookmarks import BookmarkError, Conference
from ...xmpp.payloads.dataforms import DataForm, Field
from ...xmpp.payloads.disco import INFO, ITEMS, DiscoInfo, DiscoItems
from ...xmpp.payloads.mam import FIN, RESULT, Filter, Fin, MamError, Query, Result
from ...xmpp.payloads.muc import (
    ADMIN_QUERY,
    DIRECT_INVITE,
    KEY_WARNINGS,
    OWNER_QUERY,
    USER_X,
    AdminQuery,
    DirectInvite,
    History,
    Invite,
    Item,
    Join,
    KeyWarnings,
    MucError,
    OwnerQuery,
    UserX,
)
from ...xmpp.payloads.rsm import ResultSet
from ...xmpp.payloads.sid import STANZA_ID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..errors import ClientError, EncryptionRequired, NotConnected, RequestTimeout, XmppError
from ..feed import Feed, Subscription
from ..omemo.devices import Device
from ..omemo.errors import NoOmemoDevices, NoTrustedDevices, Undecryptable
from ..omemo.pep import Pep
from ..outbox import check_text, message_ids
from .messages import Messages, first_waiting, hold_until_done, parse_stamp, remembered, worth_retrying
from .waiting import Waiting

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

log = logging.getLogger(__name__)

_IQ = qname(ns.CLIENT, "iq")
_MESSAGE = qname(ns.CLIENT, "message")
_PRESENCE = qname(ns.CLIENT, "presence")
_BODY = qname(ns.CLIENT, "body")
_SUBJECT = qname(ns.CLIENT, "subject")
_DELAY = qname(ns.DELAY, "delay")
_ENCRYPTED = frozenset(qname(namespace, "encrypted") for namespace in (ns.OMEMO_LEGACY, ns.OMEMO_2))
_MUC = "http://jabber.org/protocol/muc"
_ROOMCONFIG = f"{_MUC}#roomconfig"
_ADMIN_ITEM = qname(f"{_MUC}#admin", "item")
# Where the list of groups is kept in the local store's settings.
_SETTING = "groups"
# XEP-0402 §3: the node's configuration.
BOOKMARK_OPTIONS = {"pubsub#persist_items": "true", "pubsub#max_items": "max",
                    "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist"}
# How far back the archive of a group is read the first time (as the account's own, history.py).
FIRST_CATCH_UP = timedelta(days=30)
PAGE = 100
MEMBER_AFFILIATIONS = ("owner", "admin", "member")
# §12 status codes.
SELF, CREATED, BANNED, NICK_CHANGED, KICKED, AFFILIATION_CHANGED, MEMBERS_ONLY = 110, 201, 301, 303, 307, 321, 322
_GONE = frozenset({BANNED, KICKED, AFFILIATION_CHANGED, MEMBERS_ONLY})
# Stanza-ids remembered per group to drop what arrives twice (live and from the archive).
_SEEN = 2000
# Live messages per group kept to be decrypted again; beyond that the oldest is given up.
_PENDING = 50


class GroupError(ClientError):
    """A group could not be created, entered or used; ``str()`` says why."""


class MembersUnknown(GroupError):
    """The member list of a private group (§9.5, §10.5) could not be read, so whom to encrypt to
    is not known: nothing is sent. The next send reads the list again."""

    def __init__(self, group: JID, cause: ClientError) -> None:
        super().__init__(f"not sent to the group {group}: its member list could not be read, so whom to "
                         f"encrypt to is not known ({cause})")
        self.group = group


class MembersWithoutKeys(EncryptionRequired):
    """A member of a private group has no OMEMO device to encrypt to: nothing is sent."""

    def __init__(self, group: JID, cause: EncryptionRequired) -> None:
        super().__init__(f"not sent to the group {group}: {cause}")
        self.group = group


@dataclass(frozen=True)
class Group:
    """A group of this account: its address, name, our nickname in it, whether it is a private
    (encrypted) group or a public channel, and whether this client is in it now."""

    jid: JID
    name: str | None
    nick: str
    private: bool = True
    joined: bool = False


@dataclass(frozen=True)
class Member:
    """A member of a group (§9.5): real bare JID, affiliation (owner, admin or member) and the
    nickname reserved or in use, if known."""

    jid: JID
    affiliation: str
    nick: str | None = None


@dataclass(frozen=True)
class GroupMessage:
    """A message in a group: ``group`` is the room, ``nick`` the sender's nickname there and
    ``sender`` their real bare JID when the room shows it. As for :class:`~.messages.Message`,
    ``encrypted``, ``device`` and ``undecryptable`` tell how it was encrypted; ``outgoing``
    marks one of our other devices; ``history`` one read from the group's archive, or decrypted
    only after later ones (``stamp`` is then when it came): it belongs earlier in the conversation.
    ``stanza_id`` is the room's id of it (XEP-0359)."""

    group: JID
    nick: str | None
    sender: JID | None
    text: str | None
    id: str | None = None
    stanza_id: str | None = None
    stamp: datetime | None = None
    encrypted: bool = False
    device: Device | None = None
    undecryptable: str | None = None
    outgoing: bool = False
    history: bool = False
    element: Element = field(default_factory=lambda: element(_MESSAGE), repr=False, compare=False)


@dataclass(frozen=True)
class Invited:
    """We were added to ``group`` by ``inviter`` (§7.8.2): this client enters it."""

    group: JID
    inviter: JID | None
    reason: str | None = None


@dataclass(frozen=True)
class Removed:
    """We are out of ``group``: ``status`` is 307 (kicked), 301 (banned), 321 (no longer a
    member), 322 (the group became members-only) or None (the group was destroyed)."""

    group: JID
    status: int | None
    reason: str | None = None


@dataclass(frozen=True)
class KeyWarning:
    """The server's note that these members' OMEMO keys cannot be fetched by the others
    (``no-keys``: none published; ``hidden-keys``: hidden from other members)."""

    group: JID
    members: tuple[tuple[JID, str], ...]


GroupEvent = Invited | Removed | KeyWarning


@dataclass
class _Room:
    """What this client knows of one group."""

    jid: JID
    name: str | None
    nick: str
    private: bool = True
    # The room's stanza-id of the last archived message seen here (XEP-0313 §5).
    position: str | None = None
    joined: bool = False
    # Nickname -> real bare JID (None in a room that hides it).
    occupants: dict[str, JID | None] = field(default_factory=dict)
    affiliations: dict[JID, str] = field(default_factory=dict)
    nicks: dict[JID, str] = field(default_factory=dict)
    # Whether ``affiliations`` is the list as last read, kept current since by the room's notes:
    # not before it was read in this login, nor after a read failed.
    members_read: bool = False
    seen: dict[str, None] = field(default_factory=dict)
    # Stanza-ids of messages announced as undecryptable: one read again (from the archive, or on
    # another try) is not announced so again.
    told: dict[str, None] = field(default_factory=dict)
    # Archive ids of messages read from the room's archive that could not be decrypted yet.
    undecrypted: set[str] = field(default_factory=set)
    # The newest archive id of a message that arrived live and was handled (stored, or kept to be
    # decrypted again): the position, once nothing before it waits to be decrypted.
    latest: str | None = None
    # Live messages that could not be decrypted yet, by archive id, in the order they came.
    pending: Waiting[str, _Arrived] = field(default_factory=Waiting)
    # The last catch-up stopped short (a lost link) or read a message it could not decrypt yet:
    # the position stays where it was, and live messages leave it there, until a catch-up gets past.
    behind: bool = False
    # Keys came while a catch-up ran, too late for what it could not decrypt: it runs again.
    again: bool = False
    entering: asyncio.Future[tuple[int, ...]] | None = None
    catching_up: bool = False
    # Entered, with its members and archive read.
    ready: bool = False

    def group(self) -> Group:
        return Group(self.jid, self.name, self.nick, self.private, self.joined)

    def members(self) -> set[JID]:
        found = {jid for jid, affiliation in self.affiliations.items() if affiliation in MEMBER_AFFILIATIONS}
        found.update(jid for jid in self.occupants.values() if jid is not None)
        return found

    def saw(self, stanza_id: str) -> bool:
        """Whether ``stanza_id`` was seen before; it counts as seen from now on."""
        return remembered(self.seen, stanza_id, _SEEN)

    def was_told(self, stanza_id: str) -> bool:
        """Whether the message ``stanza_id`` was announced as undecryptable before; it counts as
        announced from now on."""
        return remembered(self.told, stanza_id, _SEEN)

    def to_json(self) -> dict[str, Any]:
        return {"jid": str(self.jid), "name": self.name, "nick": self.nick, "private": self.private,
                "position": self.position}


@dataclass(frozen=True)
class _Arrived:
    """A group message as it arrived, its sender resolved at that moment. A live one has when it
    came and, if it came outside a catch-up (``placed``), the position it came after (``before``,
    None at the start of the room); ``retry`` marks another try at one that could not be
    decrypted yet."""

    room: _Room
    el: Element
    nick: str | None
    sender: JID | None
    stanza_id: str | None
    stamp: datetime | None
    history: bool
    before: str | None = None
    placed: bool = False
    received: datetime | None = None
    retry: bool = False


class Groups:
    """The groups of one client."""

    def __init__(self, client: Client, messages: Messages, *, reading: bool = True) -> None:
        self.client = client
        self.feed: Feed[GroupMessage] = Feed()
        self.events: Feed[GroupEvent] = Feed()
        self._pep = Pep(client)
        # A client that announces no presence (a program that only sends) enters groups only to
        # send: it reads no archive and moves no position, which are the reading client's.
        self._reading = reading
        self._rooms: dict[JID, _Room] = {}
        # Rooms a join presence went to, by address: also those not (yet) groups of ours.
        self._entering: dict[JID, _Room] = {}
        self._loaded = False
        self._service: JID | None = None
        self._queries: dict[str, list[Result]] = {}
        self._warnings: dict[JID, list[KeyWarnings]] = {}
        self._last: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watching = False
        self._readiness = asyncio.Condition()
        messages.claim(self._claims)
        client.omemo.on_keys(self._keys_arrived)
        client.on_message(self._on_message)
        client.on_presence(self._on_presence)
        client.on_connect(self._on_connect)

    # The list of groups ----------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        stored = self.client.store.setting(_SETTING)
        try:
            entries = json.loads(stored) if stored else []
            for entry in entries:
                jid = JID.parse(entry["jid"])
                self._rooms[jid] = _Room(jid, entry.get("name"), entry["nick"], bool(entry.get("private", True)),
                                         entry.get("position"))
        except (ValueError, KeyError, TypeError, JIDError) as err:
            log.warning("ignoring the stored list of groups: %s", err)

    def _save(self) -> None:
        self.client.store.save_setting(_SETTING, json.dumps([room.to_json() for room in self._rooms.values()]))

    def known(self) -> list[Group]:
        """The groups of this account, as this device knows them."""
        self._load()
        return sorted((room.group() for room in self._rooms.values()), key=lambda g: str(g.jid))

    def _room(self, group: str | JID) -> _Room:
        """The group named by its address, or by its name as the user sees it."""
        self._load()
        try:
            jid = _parse(group).bare
        except GroupError:
            if (room := self._named(str(group))) is not None:
                return room  # a name such as "Chess Club" is no address
            raise
        room = self._rooms.get(jid) or self._named(str(group))
        if room is None:
            if jid.local is None:
                raise GroupError(f"{group} is not a group of {self.client.account}")
            # One this device has not entered yet (we were added while it was away): the room says
            # whether we are a member when it is entered.
            room = _Room(jid, None, self._default_nick())
        return room

    def _named(self, name: str) -> _Room | None:
        """The group called ``name``; GroupError if several are, as the name then names none."""
        named = [r for r in self._rooms.values() if r.name == name]
        if len(named) > 1:
            addresses = ", ".join(sorted(str(r.jid) for r in named))
            raise GroupError(f"{len(named)} groups are called {name!r} ({addresses}); name one by its address")
        return named[0] if named else None

    async def named(self, name: str) -> Group:
        """The group called ``name``, as this device knows it or else as the account's bookmarks
        have it (XEP-0402 §3), where its other devices keep the groups they made or entered; one
        found there becomes a group of this device too. GroupError if no group, or several, are
        called so."""
        self._load()
        if self._named(name) is None:
            for conference in (await self._bookmarks() or {}).values():
                if conference.name == name:
                    self._rooms.setdefault(conference.jid.bare, self._bookmarked(conference))
            self._save()
        room = self._named(name)
        if room is None:
            raise GroupError(f"no group of {self.client.account} is called {name!r}")
        return room.group()

    # Creating, inviting, leaving -------------------------------------------------------------

    async def service(self) -> JID:
        """The group service of the account's server (XEP-0030 §4: an item with the identity
        conference/text); GroupError if it has none."""
        if self._service is not None:
            return self._service
        domain = JID.parse(self.client.account.domain)
        reply = await self._iq("get", element(ITEMS), domain)
        items = DiscoItems.from_xml(_payload(reply, ITEMS)).items
        for item in items:
            try:
                jid = JID.parse(item.jid)
                info = DiscoInfo.from_xml(_payload(await self._iq("get", element(INFO), jid), INFO))
            except (XmppError, JIDError, ValueError):
                continue
            if any(i.category == "conference" and i.type == "text" for i in info.identities) \
                    and _MUC in info.features and jid.local is None:
                self._service = jid
                return jid
        raise GroupError(f"{domain} offers no group service")

    async def create(self, name: str, members: Iterable[str | JID] = (), *, encrypted: bool = True) -> Group:
        """Create a private group called ``name`` (a public channel with ``encrypted=False``) and
        invite ``members``; the group is bookmarked and joined. A name with a character XML
        cannot carry is refused (ClientError) before anything is sent."""
        if not name.strip():
            raise ValueError("a group needs a name")
        check_text(name, "the group's name", "no group was made")
        invitees = [_parse(member).bare for member in members]
        service = await self.service()
        self._load()
        room: _Room | None = None
        for _ in range(5):
            candidate = _Room(JID.parse(f"{secrets.token_hex(6)}@{service.domain}"), name, self._default_nick(),
                              private=encrypted)
            statuses = await self._enter(candidate, history=History(maxstanzas=0))
            if CREATED in statuses:
                room = candidate
                break
            await self._exit(candidate)
        if room is None:
            raise GroupError(f"{service} created no new group: every name tried was taken")
        try:
            await self._configure(room, name, encrypted)
        except ClientError:
            await self._discard(room)
            raise
        self._rooms[room.jid] = room
        self._save()
        await self._bookmark(room)
        await self._refresh_members(room)
        if invitees:
            await self.invite(room.jid, invitees)
        return room.group()

    async def _configure(self, room: _Room, name: str, private: bool) -> None:
        """§10.1.3: the configuration form, submitted with the preset and the name."""
        reply = await self._iq("get", OwnerQuery().to_xml(), room.jid)
        try:
            form = OwnerQuery.from_xml(_payload(reply, OWNER_QUERY)).form
        except MucError as err:
            raise GroupError(f"{room.jid} sent a broken configuration form: {err}") from None
        wanted = {
            "muc#roomconfig_roomname": name,
            "muc#roomconfig_persistentroom": "1",
            "muc#roomconfig_membersonly": "1" if private else "0",
            "muc#roomconfig_whois": "anyone" if private else "moderators",
            "muc#roomconfig_publicroom": "0" if private else "1",
            "muc#roomconfig_enablearchiving": "1",
        }
        fields: list[Field] = [Field("FORM_TYPE", "hidden", values=(_ROOMCONFIG,))]
        for each in form.fields if form is not None else ():
            if each.var is None or each.var == "FORM_TYPE" or each.type == "fixed":
                continue
            values = (wanted[each.var],) if each.var in wanted else each.values
            fields.append(Field(each.var, values=values))
        await self._iq("set", OwnerQuery(form=DataForm("submit", tuple(fields))).to_xml(), room.jid)

    async def invite(self, group: str | JID, members: Iterable[str | JID], reason: str | None = None) -> KeyWarnings:
        """§7.8.2: invite ``members`` through the group, which makes them members of a private
        group; the server's warnings about members whose OMEMO keys others cannot fetch are
        returned (empty if none)."""
        room = self._room(group)
        invitees = [_parse(member).bare for member in members]
        await self._ensure_joined(room)
        found = self._warnings.setdefault(room.jid, [])
        try:
            message = element(_MESSAGE, {"to": str(room.jid)})
            message.append(UserX(invites=tuple(Invite(to=jid, reason=reason) for jid in invitees)).to_xml())
            await self.client.send_element(message)
            # The room handles our stanzas in order: its note, if any, is here before this answer.
            await self._refresh_members(room)
        finally:
            self._warnings.pop(room.jid, None)
        for jid in invitees:
            room.affiliations.setdefault(jid, "member")
        return KeyWarnings(tuple(member for warning in found for member in warning.members))

    async def remove(self, group: str | JID, member: str | JID, reason: str | None = None) -> None:
        """§9.4 (§10.7 for owners' lists): take ``member`` out of the group; they cannot enter
        again and get nothing more, and what is sent from now on is not encrypted to them."""
        room = self._room(group)
        jid = _parse(member).bare
        await self._iq("set", AdminQuery((Item(affiliation="none", jid=jid, reason=reason),)).to_xml(), room.jid)
        room.affiliations.pop(jid, None)
        room.occupants = {nick: real for nick, real in room.occupants.items() if real != jid}

    async def leave(self, group: str | JID) -> None:
        """§7.14: leave the group and forget it here and in the bookmarks.

        A member also gives up the membership, where the service allows it (schnack's does), so
        that the others stop encrypting to this account; the last owner stays owner, since a group
        needs one. An address this device does not know as a group's must answer as a room
        (§6.4): leaving what is no group would only say it was left.
        """
        room = self._room(group)
        if room.jid not in self._rooms:
            await self._check_room(room.jid)
        own = self.client.jid.bare
        try:
            await self._iq("set", AdminQuery((Item(affiliation="none", jid=own),)).to_xml(), room.jid)
        except XmppError as err:
            log.info("kept the affiliation with %s: %s", room.jid, err)
        if room.joined:
            await self._exit(room)
        await self._forget(room)

    async def _forget(self, room: _Room) -> None:
        self._rooms.pop(room.jid, None)
        self._entering.pop(room.jid, None)
        self._save()
        try:
            await self._pep.retract(BOOKMARKS, str(room.jid))
        except XmppError as err:
            if err.condition != "item-not-found":
                log.warning("could not remove the bookmark of %s: %s", room.jid, err)

    async def members(self, group: str | JID) -> list[Member]:
        """The members of the group: its owners, admins and members (§9.5, §10.5)."""
        room = self._room(group)
        if room.jid not in self._rooms:
            await self._ensure_joined(room)  # the room says whether we are a member
        await self._refresh_members(room, strict=True)
        return sorted((Member(jid, affiliation, room.nicks.get(jid))
                       for jid, affiliation in room.affiliations.items() if affiliation in MEMBER_AFFILIATIONS),
                      key=lambda m: (MEMBER_AFFILIATIONS.index(m.affiliation), str(m.jid)))

    async def _refresh_members(self, room: _Room, *, strict: bool = False) -> None:
        """§9.5, §10.5: read the affiliation lists (members of a non-anonymous room may). Until
        a read succeeds the list counts as unread, and no encrypted message goes to the group
        (:meth:`send` reads it again), since the list may name one removed meanwhile or lack a
        new member."""
        room.members_read = False
        found: dict[JID, str] = {}
        nicks: dict[JID, str] = {}
        for affiliation in MEMBER_AFFILIATIONS:
            try:
                reply = await self._iq("get", AdminQuery((Item(affiliation=affiliation),)).to_xml(), room.jid)
                # An empty list is an empty query, which AdminQuery (a request) does not take.
                items = [Item.from_xml(i) for i in _payload(reply, ADMIN_QUERY).findall(_ADMIN_ITEM)]
            except (XmppError, MucError) as err:
                if strict:
                    raise GroupError(f"cannot read the members of {room.jid}: {err}") from None
                log.info("cannot read the %s list of %s: %s", affiliation, room.jid, err)
                return
            for item in items:
                if item.jid is not None:
                    found[item.jid.bare] = affiliation
                    if item.nick:
                        nicks[item.jid.bare] = item.nick
        room.affiliations = found
        room.nicks = nicks
        room.members_read = True

    async def _bookmark(self, room: _Room) -> None:
        """XEP-0402 §3: publish the group as a bookmark with autojoin."""
        conference = Conference(room.jid, room.name, autojoin=True, nick=room.nick)
        try:
            await self._pep.publish(BOOKMARKS, str(room.jid), conference.to_native(), BOOKMARK_OPTIONS,
                                    optional=frozenset({"pubsub#max_items"}))
        except XmppError as err:
            log.warning("could not bookmark %s: %s", room.jid, err)

    # Entering ----------------------------------------------------------------------------------

    def _default_nick(self) -> str:
        return self.client.account.local or str(self.client.account)

    def _send_join(self, room: _Room, history: History) -> asyncio.Future[tuple[int, ...]]:
        """§7.2.1: the join presence, written at once; the future gets our own presence's status
        codes, or the error."""
        if room.entering is None or room.entering.done():
            room.entering = asyncio.get_running_loop().create_future()
        self._entering[room.jid] = room
        presence = element(_PRESENCE, {"to": f"{room.jid}/{room.nick}"}, children=[Join(history=history).to_xml()])
        if not self.client.write(presence):
            room.entering.set_exception(NotConnected(f"not connected to {self.client.account.domain}"))
        return room.entering

    async def _enter(self, room: _Room, history: History) -> tuple[int, ...]:
        future = self._send_join(room, history)
        try:
            async with asyncio.timeout(self.client.timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._entering.pop(room.jid, None)
            raise RequestTimeout(f"{room.jid} did not answer within {self.client.timeout:g} s") from None
        except ClientError:
            self._entering.pop(room.jid, None)
            raise

    async def _exit(self, room: _Room) -> None:
        await self.client.send_element(element(_PRESENCE, {"to": f"{room.jid}/{room.nick}", "type": "unavailable"}))
        room.joined = room.ready = False
        room.occupants.clear()
        self._entering.pop(room.jid, None)

    async def _ensure_joined(self, room: _Room) -> None:
        if not room.joined:
            await self._join_room(room)

    async def join(self, group: str | JID) -> Group:
        """Enter a group of this account (or one we are a member of, which becomes one), then read
        what its archive has that this device has not seen."""
        self._load()
        jid = _parse(group).bare
        room = self._rooms.get(jid) or _Room(jid, None, self._default_nick())
        await self._join_room(room)
        return room.group()

    async def _join_room(self, room: _Room) -> None:
        """Enter a group that must exist already. Entering a room of a new name creates it
        (§10.1.1, status 201): then the address was wrong, and the new room is discarded and
        nothing of it kept."""
        if room.jid not in self._rooms:
            await self._check_room(room.jid)
        room.catching_up = self._reading
        try:
            if not await self._existed(room, await self._enter(room, History(maxstanzas=0))):
                raise GroupError(f"no such group: {room.jid}")
            await self._settle(room)
        finally:
            room.catching_up = False

    async def _existed(self, room: _Room, statuses: tuple[int, ...]) -> bool:
        """After entering a group that must exist already: False if the entering created the
        room (§10.1.1, status 201), which is then discarded; a stored group is forgotten, as it
        was destroyed while this device was away."""
        if CREATED not in statuses:
            return True
        if room.jid in self._rooms:
            # Forgotten first: the end of the room that discarding it brings is then no news.
            await self._forget(room)
            self.events.publish(Removed(room.jid, None))
        await self._discard(room)
        return False

    async def _check_room(self, jid: JID) -> None:
        """§6.4: a room answers disco#info with the identity conference/text. An address that
        answers otherwise (a person's account, a server) is no group, and says so at once, where a
        join presence to it would wait in vain for an answer. item-not-found is left to the join,
        since a service may hide a room from those not in it."""
        try:
            info = DiscoInfo.from_xml(_payload(await self._iq("get", element(INFO), jid), INFO))
        except XmppError as err:
            if err.condition == "item-not-found":
                return
            raise GroupError(f"{jid} is not a group ({err.condition})") from None
        except ValueError as err:
            raise GroupError(f"{jid} is not a group: it sent a broken disco#info ({err})") from None
        if not any(i.category == "conference" for i in info.identities):
            raise GroupError(f"{jid} is not a group")

    async def _discard(self, room: _Room) -> None:
        """§10.1.2: cancel the configuration of a room we just created, which destroys it; if the
        service refuses, leave it, which ends a room never configured (§10.1.1, as schnack's does)."""
        self._entering.pop(room.jid, None)
        room.joined = room.ready = False
        try:
            await self._iq("set", OwnerQuery(form=DataForm("cancel")).to_xml(), room.jid)
        except ClientError as err:
            log.info("could not cancel the new room %s: %s", room.jid, err)
            await self._exit(room)

    async def _settle(self, room: _Room) -> None:
        """After entering: the room's kind and name, its members, and its archive."""
        known = room.jid in self._rooms
        try:
            try:
                info = DiscoInfo.from_xml(_payload(await self._iq("get", element(INFO), room.jid), INFO))
                room.private = "muc_membersonly" in info.features and "muc_nonanonymous" in info.features
                if room.name is None:
                    room.name = next((i.name for i in info.identities if i.category == "conference" and i.name),
                                     None)
            except (XmppError, ValueError) as err:
                log.info("no disco#info of %s: %s", room.jid, err)
            self._rooms[room.jid] = room
            self._save()
            if not known:
                await self._bookmark(room)
            await self._refresh_members(room)
        except ClientError:
            # Cut short (a lost link) before its archive was read: live messages leave the position
            # where it is, and a resumed session takes the set-up up again (_watch).
            room.behind = True
            raise
        if self._reading:
            await self._catch_up(room)
        room.ready = room.joined
        async with self._readiness:
            self._readiness.notify_all()

    async def entered(self, group: str | JID, timeout: float | None = None) -> Group:
        """Wait until this client is in ``group`` with its members and archive read (after an
        invitation, or after connecting), at most ``timeout`` seconds (TimeoutError)."""
        jid = _parse(group).bare
        async with asyncio.timeout(timeout), self._readiness:
            await self._readiness.wait_for(lambda: (room := self._rooms.get(jid)) is not None and room.ready)
        await self.settled()
        return self._rooms[jid].group()

    async def _on_connect(self) -> None:
        """Enter the stored groups again, before the outbox goes out, then follow the bookmarks."""
        self._load()
        for room in self._rooms.values():
            room.joined = room.ready = room.members_read = False
            room.occupants.clear()
            # What waits to be decrypted is read again by the catch-up, from the position held
            # before it.
            for stanza_id in room.pending:
                room.seen.pop(stanza_id, None)
            room.pending.clear()
        if not self._reading:
            return
        for room in self._rooms.values():
            # Entered at once, their archives read one after the other: until a group's is, what
            # arrives live there must not move its position past what the archive holds for us.
            room.catching_up = True
        if not self._watching:
            self._watching = True
            self._spawn(self._watch())
        entering = [(room, self._send_join(room, History(maxstanzas=0))) for room in self._rooms.values()]
        self._spawn(self._after_connect(entering))

    async def _after_connect(self, entering: list[tuple[_Room, asyncio.Future[tuple[int, ...]]]]) -> None:
        for room, future in entering:
            await self._set_up(room, future)
        await self._follow_bookmarks()

    async def _set_up(self, room: _Room, entering: asyncio.Future[tuple[int, ...]] | None) -> None:
        """A group entered (once ``entering`` has our own presence, if given) is set up: its
        archive is read and live messages move its position only once that is over."""
        try:
            if entering is not None:
                async with asyncio.timeout(self.client.timeout):
                    statuses = await asyncio.shield(entering)
                if not await self._existed(room, statuses):
                    return
            await self._settle(room)
        except (ClientError, TimeoutError) as err:
            log.warning("could not enter the group %s: %s", room.jid, err or "no answer")
        finally:
            room.catching_up = False

    async def _watch(self) -> None:
        """Take up the catch-ups a lost link cut short once the link is back: a resumed session
        (XEP-0198 §5) runs no steps after login, and enters no group again. A group entered whose
        set-up the link cut short before its archive was read is set up again; one being entered
        or set up (after a new login) reads its archive anyway."""
        from ..client import Connected

        async for event in self.client.events():
            if not isinstance(event, Connected):
                continue
            for room in list(self._rooms.values()):
                if room.behind and (room.ready or not room.catching_up):
                    self._resume(room)

    async def _follow_bookmarks(self) -> None:
        """XEP-0402 §3: groups bookmarked by another app are entered, those removed forgotten."""
        marked = await self._bookmarks()
        if marked is None:
            return
        for jid, room in list(self._rooms.items()):
            if jid not in marked and not room.joined:
                self._rooms.pop(jid)
        for jid, conference in marked.items():
            if jid in self._rooms:
                continue
            room = self._bookmarked(conference)
            # Until its archive is read, what arrives live there moves no position past it.
            room.catching_up = self._reading
            await self._set_up(room, self._send_join(room, History(maxstanzas=0)))
        self._save()

    async def _bookmarks(self) -> dict[JID, Conference] | None:
        """XEP-0402 §3: the account's groups (bookmarks with autojoin) by address; None if the
        bookmarks cannot be read."""
        try:
            items = await self._pep.items(self.client.account, BOOKMARKS)
        except ClientError as err:
            log.info("cannot read the bookmarks of %s: %s", self.client.account, err)
            return None
        if items is None:
            return None
        marked: dict[JID, Conference] = {}
        for item in items:
            if item.payload is None:
                continue
            try:
                conference = Conference.from_native(item.id, item.payload)
            except BookmarkError as err:
                log.info("ignoring a bookmark: %s", err)
                continue
            if conference.autojoin:
                marked[conference.jid.bare] = conference
        return marked

    def _bookmarked(self, conference: Conference) -> _Room:
        """The group a bookmark names, entered with its nick if that can be an occupant's
        resourcepart (§7.2.1, RFC 7622 §3.4), else with ours: another app may have bookmarked
        one that makes no address."""
        room = conference.jid.bare
        nick = conference.nick
        if nick is not None:
            try:
                nick = JID.parse(f"{room}/{nick}").resource
            except JIDError as err:
                log.info("entering %s with our own nickname, not the bookmarked one: %s", room, err)
                nick = None
        return _Room(room, conference.name, nick or self._default_nick())

    # Sending -----------------------------------------------------------------------------------

    async def send(self, group: str | JID, text: str, *, encrypted: bool = True) -> str:
        """Send ``text`` to the group, encrypted with OMEMO to every member's devices and our own
        other ones; plaintext only with ``encrypted=False``. Stored in the outbox first (see
        :meth:`Client.send`); the id is returned. :class:`MembersUnknown` when the member list
        could not be read (it is read again first)."""
        room = self._room(group)
        await self._ensure_joined(room)
        el = element(_MESSAGE, {"type": "groupchat", "to": str(room.jid)})
        if encrypted:
            if not room.private:
                raise EncryptionRequired(
                    f"{room.jid} is a public channel, where members cannot see each other's addresses and OMEMO "
                    "cannot work; pass encrypted=False to send unencrypted")
            if not room.members_read:
                try:
                    await self._refresh_members(room, strict=True)
                except ClientError as err:
                    raise MembersUnknown(room.jid, err) from None
            others = room.members() - {self.client.account}
            if not others:
                raise EncryptionRequired(f"not sent to the group {room.jid}: it has no other member yet to read it")
            try:
                el.extend(await self.client.omemo.encrypt_to_all(others, text, to=room.jid))
            except (NoOmemoDevices, NoTrustedDevices) as err:
                raise MembersWithoutKeys(room.jid, err) from None
        else:
            el.append(element(_BODY, text=text))
        return self.client.outbox.send(el, room.jid, text, encrypted=encrypted)

    # Arriving ----------------------------------------------------------------------------------

    def _claims(self, stanza: Stanza) -> bool:
        """What messages.py leaves to this feature: groupchat, and what rooms and inviters send
        about groups (invitations, declines, key warnings, affiliation notes)."""
        el = stanza.el
        if stanza.type == "groupchat":
            return True
        if stanza.type == "error":
            return False
        if el.find(DIRECT_INVITE) is not None or el.find(KEY_WARNINGS) is not None:
            return True
        return el.find(USER_X) is not None and stanza.from_ is not None and stanza.from_.resource is None

    def _on_message(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            return
        sender = stanza.from_
        if sender is None:
            return
        result = el.find(RESULT)
        if result is not None:
            self._result(sender, result)
            return
        if not self._claims(stanza):
            return
        self._load()
        room = self._rooms.get(sender.bare)
        if stanza.type == "groupchat":
            if room is not None:
                self._groupchat(room, stanza)
            return
        if (warnings := el.find(KEY_WARNINGS)) is not None and room is not None:
            self._key_warnings(room, warnings)
            return
        if (x := el.find(USER_X)) is not None:
            self._room_note(room, sender, x)
            return
        direct = el.find(DIRECT_INVITE)
        if direct is not None:
            self._direct_invite(sender, direct)

    def _groupchat(self, room: _Room, stanza: Stanza) -> None:
        el = stanza.el
        content = el.find(_BODY) is not None or any(el.find(tag) is not None for tag in _ENCRYPTED)
        if not content or stanza.from_ is None or not self._reading:
            return  # a subject (§8.1), or a note from the room itself
        nick = stanza.from_.resource
        stanza_id = _stanza_id(el, room.jid)
        if stanza_id is not None and room.saw(stanza_id):
            # A copy sent again after a resumption (XEP-0198 §5): counted once the message, perhaps
            # still being handled, is.
            hold_until_done(self.client, self._last)
            return
        placed = stanza_id is not None and not room.catching_up
        real = room.occupants.get(nick) if nick is not None else None
        hold_until_done(self.client, self._deliver(_Arrived(room, el, nick, real, stanza_id, _delay(el), history=False,
                                                            placed=placed, received=self.client.store.now())))

    def _key_warnings(self, room: _Room, x: Element) -> None:
        try:
            warnings = KeyWarnings.from_xml(x)
        except MucError as err:
            log.info("ignoring broken key warnings from %s: %s", room.jid, err)
            return
        if room.jid in self._warnings:
            self._warnings[room.jid].append(warnings)
        self.events.publish(KeyWarning(room.jid, warnings.members))

    def _room_note(self, room: _Room | None, sender: JID, x: Element) -> None:
        """§7.8.2 invitations, §9.3 affiliation changes of users not in the room."""
        try:
            user = UserX.from_xml(x)
        except MucError as err:
            log.info("ignoring a broken note from %s: %s", sender, err)
            return
        if user.invites and room is None:
            invite = user.invites[0]
            self._accept(sender.bare, invite.from_, invite.reason)
            return
        if room is None:
            return
        for item in user.items:
            if item.jid is not None and item.affiliation is not None:
                room.affiliations[item.jid.bare] = item.affiliation

    def _direct_invite(self, sender: JID, x: Element) -> None:
        """XEP-0249: accepted only from a contact."""
        try:
            invite = DirectInvite.from_xml(x)
        except MucError:
            return
        if sender.bare not in {contact.jid.bare for contact in self.client.store.contacts()}:
            log.info("ignoring an invitation to %s from %s, who is not a contact", invite.jid, sender)
            return
        if invite.jid.bare not in self._rooms:
            self._accept(invite.jid.bare, sender.bare, invite.reason)

    def _accept(self, jid: JID, inviter: JID | None, reason: str | None) -> None:
        """Enter the group an invitation is for; the invitation counts as handled (XEP-0198 §4)
        once that is over, so that a client that stops before it gets the invitation again."""
        if jid.local is None or jid.resource is not None or jid in self._rooms:
            return
        self.events.publish(Invited(jid, inviter, reason))

        async def enter() -> None:
            try:
                await self.join(jid)
            except ClientError as err:
                log.warning("could not enter the group %s: %s", jid, err)

        hold_until_done(self.client, self._spawn(enter()))

    def _on_presence(self, el: Element) -> None:
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            return
        sender = stanza.from_
        if sender is None or sender.resource is None:
            return
        room = self._rooms.get(sender.bare) or self._entering.get(sender.bare)
        if room is not None:
            self._occupant(room, stanza, sender.resource)

    def _occupant(self, room: _Room, stanza: Stanza, nick: str) -> None:
        """§7.2.3 and on: an occupant's presence; ours (110) tells we are in, or out."""
        el = stanza.el
        if stanza.type == "error":
            if room.entering is not None and not room.entering.done():
                room.entering.set_exception(_refusal(room.jid, XmppError.from_stanza(el)))
            return
        x = el.find(USER_X)
        try:
            user = UserX.from_xml(x) if x is not None else UserX()
        except MucError:
            return
        item = user.items[0] if user.items else Item()
        own = SELF in user.statuses
        if item.jid is not None and item.affiliation is not None:
            if item.affiliation in MEMBER_AFFILIATIONS:
                room.affiliations[item.jid.bare] = item.affiliation
            else:
                room.affiliations.pop(item.jid.bare, None)
        if stanza.type == "unavailable":
            room.occupants.pop(nick, None)
            if own and NICK_CHANGED not in user.statuses:
                self._out(room, user)
            return
        if stanza.type is not None:
            return
        room.occupants[nick] = item.jid.bare if item.jid is not None else None
        if item.jid is not None:
            self._shown(room, nick, item.jid.bare)
        if own:
            room.nick = nick
            room.joined = True
            if room.entering is not None and not room.entering.done():
                room.entering.set_result(user.statuses)

    def _out(self, room: _Room, user: UserX) -> None:
        was_in = room.joined
        room.joined = room.ready = False
        room.occupants.clear()
        status = next((code for code in user.statuses if code in _GONE), None)
        if status is None and user.destroy is None:
            return  # we left
        if was_in or room.jid in self._rooms:
            reason = user.destroy.reason if user.destroy is not None else (user.items[0].reason if user.items else None)
            self.events.publish(Removed(room.jid, status, reason))
        # Kicked (§8.2), one is still a member and enters again with the next login.
        if room.jid in self._rooms and status != KICKED:
            self._spawn(self._forget(room))

    # Decrypting, in order ----------------------------------------------------------------------

    def _deliver(self, arrived: _Arrived) -> asyncio.Task[None]:
        task = asyncio.create_task(self._handle_after(self._last, arrived))
        self._last = task
        task.add_done_callback(self._done)
        return task

    async def _handle_after(self, previous: asyncio.Task[None] | None, arrived: _Arrived) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        room, live = arrived.room, arrived.placed and not arrived.history
        if live:
            # The live messages before it are handled by now: the position it came after.
            arrived = replace(arrived, before=room.latest)
        try:
            await self._handle(arrived)
        finally:
            if arrived.retry and arrived.stanza_id is not None:
                room.pending.tried(arrived.stanza_id)
        if live:
            # XEP-0313 §5: the position passes a live message only once it is stored (or waits to
            # be decrypted again, which holds the position before it): a client that stops before
            # that reads it from the archive at its next login.
            room.latest = arrived.stanza_id
            self._advance(room)

    async def _handle(self, arrived: _Arrived) -> None:
        el = arrived.el
        if not arrived.history and self._own(arrived):
            return  # what this device sent, back from the room
        encrypted = self.client.omemo.carries(el)
        text: str | None = None
        device: Device | None = None
        undecryptable: str | None = None
        if encrypted:
            if arrived.sender is None and (real := arrived.room.occupants.get(arrived.nick or "")) is not None:
                arrived = replace(arrived, sender=real)  # shown by the room since it came
            if arrived.sender is None:
                undecryptable = "the group does not show who sent it, so whose keys to use is unknown"
                if not arrived.history and arrived.stanza_id is not None and arrived.nick is not None:
                    # The room may show it later (§10.2.1: made non-anonymous): kept until then.
                    self._keep(arrived, arrived.stanza_id, _occupant_jid(arrived.room.jid, arrived.nick))
            else:
                try:
                    result = await self.client.omemo.decrypt(arrived.sender, el)
                    text, device = result.text, result.device
                except Undecryptable as err:
                    undecryptable = str(err)
                    again = worth_retrying(err, arrived.received or arrived.stamp, self.client.store.now())
                    if arrived.retry:
                        if not again:
                            self._stop_waiting(arrived)
                        return  # what it is was told when it came
                    if again and arrived.stanza_id is not None:
                        if arrived.history:
                            arrived.room.undecrypted.add(arrived.stanza_id)
                            arrived.room.seen.pop(arrived.stanza_id, None)
                        else:
                            self._keep(arrived, arrived.stanza_id, arrived.sender)
            if text is None and undecryptable is None:
                # An empty OMEMO message: keys only, perhaps the session an earlier message needs.
                self._stop_waiting(arrived)
                self._retry(arrived.sender)
                return
        else:
            text = el.findtext(_BODY)
        stanza = Stanza.parse(el)
        outgoing = arrived.sender == self.client.account
        if text is not None:
            # Stored before it is announced, as a chat message is; the room's stanza-id keeps the
            # live copy and the archived one from being stored twice (XEP-0359), and from being
            # shown twice.
            stored = self.client.store.receive(
                arrived.room.jid, text, stanza_id=arrived.stanza_id, stamp=arrived.stamp, encrypted=encrypted,
                message_id=stanza.id, outgoing=outgoing, nick=arrived.nick, sender=arrived.sender)
            self._stop_waiting(arrived)
            if encrypted:
                # A session this message built may be the one an earlier message needs.
                self._retry(arrived.sender)
            if not stored:
                return
        elif arrived.stanza_id is not None and arrived.room.was_told(arrived.stanza_id):
            return  # read again (the catch-up ran again), and still not decrypted
        self.feed.publish(GroupMessage(
            group=arrived.room.jid, nick=arrived.nick, sender=arrived.sender, text=text, id=stanza.id,
            stanza_id=arrived.stanza_id, stamp=arrived.stamp, encrypted=encrypted, device=device,
            undecryptable=undecryptable, outgoing=outgoing, history=arrived.history, element=el,
        ))

    def _own(self, arrived: _Arrived) -> bool:
        """Whether a live message is one this device sent, back from the room (§7.2.3)."""
        origin_id, _ = message_ids(arrived.el, self.client.account)
        return (arrived.nick == arrived.room.nick and origin_id is not None
                and self.client.store.sent_message(origin_id) is not None)

    # Decrypting again --------------------------------------------------------------------------

    def _keep(self, arrived: _Arrived, stanza_id: str, sender: JID) -> None:
        """A live message that could not be decrypted for a reason that may pass: kept to be tried
        again, and the position held before it, so that the next login reads it from the archive
        if no try here succeeds. Beyond :data:`_PENDING` of them the oldest is given up: as for
        any other that waits no longer, a catch-up that stopped before it reads on past it."""
        room = arrived.room
        given_up = room.pending.keep(stanza_id, sender, arrived, _PENDING)
        for _ in given_up:
            log.warning("giving up a message of %s that could not be decrypted", room.jid)
        if given_up and room.behind:
            self._resume(room)
        self._advance(room)

    def _stop_waiting(self, arrived: _Arrived) -> None:
        """``arrived`` waits no longer: decrypted, or never to be."""
        room = arrived.room
        if arrived.stanza_id is None or not room.pending.drop(arrived.stanza_id):
            return
        if not room.pending and room.behind:
            self._resume(room)
        self._advance(room)

    def _advance(self, room: _Room) -> None:
        """XEP-0313 §5: the position moves with what arrives live, up to the first message that
        waits to be decrypted; not while the catch-up is under way or stopped short."""
        if room.catching_up or room.behind:
            return
        first = room.pending.first()
        if first is None:
            position = room.latest if room.latest is not None else room.position
        elif first.placed:
            position = first.before
        else:
            return  # it came during the catch-up, which ended before it or stopped short of it
        if position != room.position:
            room.position = position
            self._save()

    def _retry(self, sender: JID | None) -> None:
        """Try again the messages of ``sender`` that could not be decrypted yet, in the order they
        came; they are published as late arrivals (``history``) with the time they came."""
        if sender is None:
            return
        for room in self._rooms.values():
            for _, arrived in room.pending.due(sender):
                self._try_again(arrived)

    def _try_again(self, arrived: _Arrived) -> None:
        """Another try at a live message that waits; published as a late arrival (``history``)
        with the time it came."""
        self._deliver(replace(arrived, stamp=arrived.stamp or arrived.received, history=True, retry=True))

    def _shown(self, room: _Room, nick: str, real: JID) -> None:
        """§7.2.3: the room shows who ``nick`` is (bare ``real``): their messages kept for want of
        it are tried again, and from now on wait for ``real``'s keys if they still cannot be read."""
        for stanza_id, arrived in room.pending.due(_occupant_jid(room.jid, nick)):
            known = replace(arrived, sender=real)
            # Kept again under the same key: in its place, and no more are kept than before.
            room.pending.keep(stanza_id, real, known, _PENDING)
            self._try_again(known)

    def _keys_arrived(self, jid: JID) -> None:
        """Someone's OMEMO keys were fetched: what they sent may be read now."""
        self._retry(jid)
        for room in self._rooms.values():
            if room.behind:
                self._resume(room)

    def _resume(self, room: _Room) -> None:
        """Read the archive again from before a message the catch-up could not decrypt yet, or
        from where a lost link cut it short; if a catch-up is under way, once it is over. A group
        whose set-up was cut short before its archive was read is set up again."""
        if not room.joined or not self._reading:
            return
        if room.catching_up:
            room.again = True
        else:
            # Under way from now: a second call before the task starts only asks for another run.
            room.catching_up = True
            self._spawn(self._catch_up(room) if room.ready else self._set_up(room, None))

    async def settled(self) -> None:
        """Wait until every group message that arrived so far has been handled."""
        while self._last is not None:
            await asyncio.wait([self._last])

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._last is task:
            self._last = None
        if not task.cancelled() and task.exception() is not None:
            log.error("failed to handle a group message", exc_info=task.exception())

    # The room's archive ------------------------------------------------------------------------

    def _result(self, sender: JID, found: Element) -> None:
        waiting = self._queries.get(found.get("queryid") or "")
        if waiting is None or sender.resource is not None or sender.bare not in self._rooms:
            return
        try:
            waiting.append(Result.from_xml(found))
        except MamError as err:
            log.debug("ignoring a broken archive result: %s", err)

    async def _catch_up(self, room: _Room) -> None:
        """XEP-0313 §5: the room's archive after the last message this device saw."""
        room.catching_up = True
        room.behind = room.again = cut_short = False
        try:
            position = room.position
            while True:
                try:
                    complete, position = await self._page(room, position)
                except XmppError as err:
                    if err.condition != "item-not-found" or position is None:
                        raise
                    position = None
                    continue
                if complete:
                    break
        except (ClientError, MamError) as err:
            room.behind = cut_short = True
            log.warning("reading the archive of %s stopped: %s", room.jid, err)
        finally:
            room.catching_up = False
        if not room.behind:
            room.latest = room.position
            self._advance(room)
        self._save()
        if room.again and room.behind and not cut_short and room.joined:
            # Run again at once, as part of this catch-up: a group being set up is not set up again.
            await self._catch_up(room)

    async def _page(self, room: _Room, after: str | None) -> tuple[bool, str | None]:
        queryid = secrets.token_hex(8)
        start = None if after is not None else self.client.store.now() - FIRST_CATCH_UP
        query = Query(queryid, Filter(start=start), ResultSet(max=PAGE, after=after))
        results: list[Result] = []
        self._queries[queryid] = results
        try:
            reply = await self._iq("set", query.to_xml(), room.jid)
        finally:
            self._queries.pop(queryid, None)
        fin_el = reply.find(FIN)
        if fin_el is None:
            raise MamError("bad-request", "the archive answered without <fin/>")
        fin = Fin.from_xml(fin_el)
        for result in results:
            el = result.forwarded.stanza
            if room.saw(result.id) or self.client.store.known(room.jid, stanza_id=result.id):
                continue  # seen here, or stored at an earlier login (a copy would not decrypt again)
            try:
                stanza = Stanza.parse(el)
            except StanzaError:
                continue
            content = el.find(_BODY) is not None or any(el.find(tag) is not None for tag in _ENCRYPTED)
            if not content or stanza.from_ is None:
                continue
            origin_id, _ = message_ids(el, self.client.account)
            if origin_id is not None and self.client.store.sent_message(origin_id) is not None:
                continue
            nick = stanza.from_.resource
            self._deliver(_Arrived(room, el, nick, _archived_sender(el) or room.occupants.get(nick or ""),
                                   result.id, result.forwarded.stamp, history=True))
        await self.settled()
        waiting = first_waiting(results, room.undecrypted | room.pending.keys(), after)
        room.undecrypted.clear()
        if waiting is not None and not room.behind:
            # Read on past it, but the position stays before it for the next catch-up.
            log.info("%s", waiting)
            room.position = waiting.position
            room.behind = True
        last = results[-1].id if results else fin.rsm.last
        if last is not None and not room.behind:
            room.position = last
        return fin.complete or not results or last == after, last if last is not None else after

    # Helpers -----------------------------------------------------------------------------------

    async def _iq(self, type: str, payload: Element, to: JID) -> Element:
        return await self.client.iq(element(_IQ, {"type": type, "to": str(to)}, children=[payload]))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop what runs in the background; the feeds end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._last is not None:
            self._last.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._last
        self.end()

    def end(self) -> None:
        self.feed.end()
        self.events.end()

    def messages(self) -> Subscription[GroupMessage]:
        """The group messages that arrive, from now on (and those read from archives)."""
        return self.feed.subscribe()

    def updates(self) -> Subscription[GroupEvent]:
        """Invitations, removals and key warnings, from now on."""
        return self.events.subscribe()


def _parse(value: str | JID) -> JID:
    try:
        return value if isinstance(value, JID) else JID.parse(value)
    except JIDError as err:
        raise GroupError(f"invalid address {value!r}: {err}") from None


def _payload(reply: Element, tag: str) -> Element:
    found = reply.find(tag)
    if found is None:
        raise GroupError(f"an answer without the expected {tag}")
    return found


def _stanza_id(el: Element, by: JID) -> str | None:
    """The stanza-id ``by`` gave the message: one of its own children (XEP-0359 §3), since one
    nested deeper (in a forwarded message, say) is the sender's."""
    return next((s.get("id") for s in el.findall(STANZA_ID) if s.get("by") == str(by)), None)


def _occupant_jid(room: JID, nick: str) -> JID:
    """§4.1: the occupant JID of ``nick`` in ``room``."""
    return JID(room.local, room.domain, nick)


def _delay(el: Element) -> datetime | None:
    delay = el.find(_DELAY)
    return parse_stamp(delay.get("stamp")) if delay is not None else None


def _archived_sender(el: Element) -> JID | None:
    """XEP-0313 §5.1.2: the real JID the archive of a non-anonymous room keeps with a message."""
    x = el.find(USER_X)
    if x is None:
        return None
    try:
        items = UserX.from_xml(x).items
    except MucError:
        return None
    return items[0].jid.bare if items and items[0].jid is not None else None


def _refusal(room: JID, error: XmppError) -> ClientError:
    """§7.2.6 and on: why the room would not let us in, as a sentence."""
    reasons = {
        "registration-required": f"{room} is a group for its members only, and this account is not one",
        "forbidden": f"this account is banned from {room}",
        "item-not-found": f"there is no group {room}",
        "conflict": f"the nickname is taken in {room}",
        "not-authorized": f"{room} needs a password",
    }
    text = reasons.get(error.condition)
    if text is None:
        return error
    return GroupError(f"{text} ({error.condition})")


def stored_groups(store: Store) -> list[Group]:
    """The groups kept in an account's local store, without connecting (none joined)."""
    stored = store.setting(_SETTING)
    try:
        entries = json.loads(stored) if stored else []
        groups = [Group(JID.parse(entry["jid"]), entry.get("name"), entry["nick"], bool(entry.get("private", True)))
                  for entry in entries]
    except (ValueError, KeyError, TypeError, JIDError) as err:
        raise GroupError(f"the stored list of groups is broken: {err}") from None
    return sorted(groups, key=lambda g: str(g.jid))
