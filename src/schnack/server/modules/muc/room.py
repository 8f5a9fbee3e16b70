"""XEP-0045 (1.35) room state: configuration, affiliations (§5.2), occupants and their roles (§5.1).

A room lives in memory while anyone is in it or something asks for it; persistent rooms are
also kept in storage (:mod:`.store`). Occupants are keyed by nick; each occupant is one bare
JID, which may be joined from several of its resources under the same nick (every joined
resource gets what the room sends).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import unicodedata
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any
from xml.etree.ElementTree import Element

from ....xmpp.jid import JID
from ....xmpp.payloads.muc import OCCUPANT_ID, Item, OccupantId, UserX
from ....xmpp.xml import element
from ...storage.base import RoomAffiliation

AFFILIATION_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
PM_POLICIES = ("anyone", "participants", "moderators", "none")
WHOIS = ("anyone", "moderators")

# §12 status codes.
SHOWS_REAL_JIDS = 100
SELF = 110
LOGGED = 170
CREATED = 201
NICK_CHANGED = 303
BANNED = 301
KICKED = 307
AFFILIATION_CHANGED = 321
MEMBERS_ONLY = 322
ERROR_REMOVED = 333


@dataclass(frozen=True)
class RoomConfig:
    """A room's configuration (§10.2, the ``muc#roomconfig`` fields).

    The defaults are the private group: members-only, non-anonymous, persistent, hidden,
    members may invite; that is what end-to-end encryption in a group needs (OMEMO fetches
    every member's keys, so members must see each other's real JIDs).
    """

    name: str = ""
    description: str = ""
    language: str = ""
    public: bool = False
    persistent: bool = True
    members_only: bool = True
    moderated: bool = False
    whois: str = "anyone"
    password: str = ""
    max_users: int = 0
    allow_invites: bool = True
    change_subject: bool = True
    allow_pm: str = "anyone"
    logging: bool = True

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"


_CONFIG_FIELDS = {f.name for f in fields(RoomConfig)}


@dataclass
class RoomState:
    """What is stored of a room besides its affiliations: configuration, subject, secrets."""

    config: RoomConfig = field(default_factory=RoomConfig)
    subject: str = ""
    subject_by: str = ""
    # The setter's XEP-0421 id, for the subject sent on entering; empty for a subject stored
    # before the id was kept, which then goes out without one.
    subject_by_id: str = ""
    # Keys the XEP-0421 occupant ids; never leaves the server.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    avatar_hash: str = ""

    def to_json(self) -> str:
        return json.dumps({"config": asdict(self.config), "subject": self.subject, "subject_by": self.subject_by,
                           "subject_by_id": self.subject_by_id, "secret": self.secret,
                           "avatar_hash": self.avatar_hash})

    @classmethod
    def from_json(cls, text: str) -> RoomState:
        data: dict[str, Any] = json.loads(text)
        # Settings a later version stored and this one does not know are left out.
        config = RoomConfig(**{k: v for k, v in data.get("config", {}).items() if k in _CONFIG_FIELDS})
        return cls(config, data.get("subject", ""), data.get("subject_by", ""), data.get("subject_by_id", ""),
                   data.get("secret") or secrets.token_urlsafe(24), data.get("avatar_hash", ""))


@dataclass(eq=False)
class Occupant:
    """A participant in the room under ``nick`` (§5.1): its real bare JID, role, and joined
    resources with the last presence each sent (its children, as the room shows them)."""

    nick: str
    jid: JID
    role: str
    occupant_id: str
    sessions: dict[JID, list[Element]] = field(default_factory=dict)

    @property
    def latest(self) -> JID:
        """The resource that joined or spoke last, shown as the occupant's real JID."""
        return next(reversed(self.sessions))


# Entering a full room compares the nick with every occupant's: their keys are kept.
@lru_cache(maxsize=65_536)
def nick_key(nick: str) -> str:
    """RFC 8266 §2.4: what two nicks are compared by, spaces at the ends and runs of them inside
    mapped (§2.2), case mapped and NFKC applied (§2.3): "Bob" and "bob" in full-width letters read as
    "bob" to anyone in the room."""
    return unicodedata.normalize("NFKC", " ".join(nick.split()).lower())


class Room:
    """One room: its address, stored state, affiliations and present occupants."""

    def __init__(self, jid: JID, state: RoomState, affiliations: dict[JID, RoomAffiliation], *,
                 locked: bool = False, stored: bool = False) -> None:
        self.jid = jid
        self.text = str(jid)
        self.state = state
        self.affiliations = affiliations
        self.locked = locked
        # Whether the room has a record in storage (persistent and configured once).
        self.stored = stored
        self.occupants: dict[str, Occupant] = {}
        self.by_session: dict[JID, Occupant] = {}
        self.destroyed = False
        # (sender's bare JID, origin-id) of the latest archived messages, read from the archive
        # when first needed: a message sent again (its acknowledgement was lost) is not stored twice.
        self.recent: dict[tuple[str, str], None] | None = None
        # Private messages passed on lately (:mod:`.messages`), so that an error answering one goes
        # back to its sender: (recipient's full JID, id) -> (sender's full JID, the id it gave,
        # the recipient's occupant JID, the sender's resources that got a carbon copy of it).
        self.private_sent: OrderedDict[tuple[JID, str], tuple[JID, str | None, str, frozenset[JID]]] = OrderedDict()

    @property
    def config(self) -> RoomConfig:
        return self.state.config

    @property
    def name(self) -> str:
        assert self.jid.local is not None
        return self.jid.local

    def affiliation(self, bare: JID) -> str:
        record = self.affiliations.get(bare)
        return record.affiliation if record is not None else "none"

    def owners(self) -> list[JID]:
        return [jid for jid, record in self.affiliations.items() if record.affiliation == "owner"]

    def default_role(self, affiliation: str) -> str:
        """§5.1.2: the role an occupant gets from its affiliation on entering."""
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "member" or not self.config.moderated:
            return "participant"
        return "visitor"

    def occupant_id(self, bare: JID) -> str:
        """XEP-0421 §4: the same id for the same real bare JID in this room, opaque to others."""
        digest = hmac.new(self.state.secret.encode(), str(bare).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def nick_holder(self, nick: str) -> Occupant | None:
        """The occupant under ``nick``, or else under a nick that compares equal to it (:func:`nick_key`)."""
        exact = self.occupants.get(nick)
        if exact is not None:
            return exact
        key = nick_key(nick)
        return next((occupant for occupant in self.occupants.values() if nick_key(occupant.nick) == key), None)

    def occupant_jid(self, nick: str) -> str:
        return f"{self.text}/{nick}"

    def sees_real_jids(self, viewer: Occupant | None) -> bool:
        """§7.2.3/§7.2.4: real JIDs go to everyone in a non-anonymous room, to moderators otherwise."""
        return self.config.non_anonymous or (viewer is not None and viewer.role == "moderator")

    def max_users(self, service_limit: int) -> int:
        return min(self.config.max_users or service_limit, service_limit)


def occupant_presence(room: Room, occupant: Occupant, *, real_jid: bool, unavailable: bool = False,
                      statuses: tuple[int, ...] = (), nick: str | None = None, reason: str | None = None,
                      actor: str | None = None, role: str | None = None, resource: JID | None = None) -> Element:
    """The presence of ``occupant`` as the room shows it (§7.2.3), without 'to'.

    ``nick`` is the new nick of a nick change (§7.6), ``role`` overrides the occupant's (none
    when it leaves or is removed). ``resource`` is the real JID shown when not the occupant's
    latest resource: one that leaves is shown as itself (§7.14).
    """
    attrs = {"from": room.occupant_jid(occupant.nick)}
    if unavailable:
        attrs["type"] = "unavailable"
    presence = element("{jabber:client}presence", attrs)
    if not unavailable and occupant.sessions:
        presence.extend(occupant.sessions[occupant.latest])
    item = Item(
        affiliation=room.affiliation(occupant.jid), role=role or ("none" if unavailable else occupant.role),
        jid=(resource or (occupant.latest if occupant.sessions else occupant.jid)) if real_jid else None,
        nick=nick, reason=reason, actor_nick=actor,
    )  # fmt: skip
    presence.append(UserX(items=(item,), statuses=statuses).to_xml())
    presence.append(OccupantId(occupant.occupant_id).to_xml())
    return presence


def own_children(el: Element, drop: frozenset[str]) -> list[Element]:
    """The children of a client's stanza that the room passes on: not those it speaks for itself
    (MUC elements, occupant ids a client made up, XEP-0421 §4)."""
    return [child for child in el if child.tag not in drop and child.tag != OCCUPANT_ID]


def addressed(template: Element, to: str) -> Element:
    """A copy of ``template`` for ``to``: new attributes, the same (shared, unchanged) children."""
    copy = Element(template.tag, {**template.attrib, "to": to})
    copy.text = template.text
    copy.extend(template)
    return copy
