"""XEP-0045: Multi-User Chat (1.35) payloads, with XEP-0249 direct invitations, XEP-0421 occupant
ids and XEP-0425 moderated retraction (0.3, ``urn:xmpp:message-moderate:1``).

- ``<x xmlns='…muc'/>`` in a join presence (§7.2.1): the password and the history request (§7.2.14).
- ``<x xmlns='…muc#user'/>`` (§7.2.3 and on): occupant items, status codes, invitations and
  declines (§7.8.2), and the room's destruction (§10.9).
- ``<query xmlns='…muc#admin'/>`` (§8, §9): items naming a role or an affiliation change.
- ``<query xmlns='…muc#owner'/>`` (§10): a configuration form or a ``<destroy/>``.
- ``<x xmlns='jabber:x:conference'/>`` (XEP-0249 §2), ``<occupant-id/>`` (XEP-0421 §3) and the
  moderation request and retraction notice of XEP-0425 §4.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from xml.etree.ElementTree import Element

from .. import ns
from ..jid import JID, JIDError
from ..xml import element, qname, sub
from .dataforms import DataForm, DataFormError
from .forward import ForwardError, format_stamp, parse_stamp

MUC = "http://jabber.org/protocol/muc"
USER = f"{MUC}#user"
ADMIN = f"{MUC}#admin"
OWNER = f"{MUC}#owner"
ROOMCONFIG = f"{MUC}#roomconfig"
ROOMINFO = f"{MUC}#roominfo"
REQUEST = f"{MUC}#request"
SELF_PING = f"{MUC}#self-ping-optimization"
CONFERENCE = "jabber:x:conference"
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"
RETRACT_NS = "urn:xmpp:message-retract:1"
MODERATE_NS = "urn:xmpp:message-moderate:1"

JOIN = qname(MUC, "x")
USER_X = qname(USER, "x")
ADMIN_QUERY = qname(ADMIN, "query")
OWNER_QUERY = qname(OWNER, "query")
DIRECT_INVITE = qname(CONFERENCE, "x")
OCCUPANT_ID = qname(OCCUPANT_ID_NS, "occupant-id")
MODERATE = qname(MODERATE_NS, "moderate")
RETRACT = qname(RETRACT_NS, "retract")
RETRACTED = qname(RETRACT_NS, "retracted")
_MODERATED = qname(MODERATE_NS, "moderated")
_X_DATA = qname(ns.DATA_FORMS, "x")

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")


class MucError(ValueError):
    """A MUC element that breaks XEP-0045; ``condition`` is the stanza error it deserves."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def _jid(text: str | None, what: str) -> JID | None:
    if text is None:
        return None
    try:
        return JID.parse(text)
    except JIDError as err:
        raise MucError("jid-malformed", f"{what}: {err}") from None


def _count(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise MucError("bad-request", f"{what} must be a non-negative whole number")
    return int(text)


@dataclass(frozen=True)
class History:
    """§7.2.14: how much discussion history a joining occupant asks for."""

    maxchars: int | None = None
    maxstanzas: int | None = None
    seconds: int | None = None
    since: datetime | None = None

    @classmethod
    def from_xml(cls, el: Element) -> History:
        since = el.get("since")
        try:
            moment = parse_stamp(since) if since is not None else None
        except ForwardError as err:
            raise MucError("bad-request", str(err)) from None
        return cls(_count(el.get("maxchars"), "maxchars"), _count(el.get("maxstanzas"), "maxstanzas"),
                   _count(el.get("seconds"), "seconds"), moment)

    def to_xml(self) -> Element:
        return element(qname(MUC, "history"), {
            "maxchars": None if self.maxchars is None else str(self.maxchars),
            "maxstanzas": None if self.maxstanzas is None else str(self.maxstanzas),
            "seconds": None if self.seconds is None else str(self.seconds),
            "since": None if self.since is None else format_stamp(self.since),
        })  # fmt: skip


@dataclass(frozen=True)
class Join:
    """§7.2.1: the ``<x/>`` that marks a presence as a join, with password and history request."""

    password: str | None = None
    history: History | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Join:
        if el.tag != JOIN:
            raise MucError("bad-request", f"expected a MUC join element, got {el.tag}")
        history = el.find(qname(MUC, "history"))
        return cls(el.findtext(qname(MUC, "password")), History.from_xml(history) if history is not None else None)

    def to_xml(self) -> Element:
        x = element(JOIN)
        if self.history is not None:
            x.append(self.history.to_xml())
        if self.password is not None:
            sub(x, qname(MUC, "password"), text=self.password)
        return x


@dataclass(frozen=True)
class Item:
    """An occupant or affiliation item (§7.2.3, §9, §10), in ``#user`` or ``#admin``."""

    affiliation: str | None = None
    role: str | None = None
    jid: JID | None = None
    nick: str | None = None
    reason: str | None = None
    actor_nick: str | None = None
    actor_jid: JID | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Item:
        namespace = el.tag[1:].partition("}")[0]
        affiliation, role = el.get("affiliation"), el.get("role")
        if affiliation is not None and affiliation not in AFFILIATIONS:
            raise MucError("bad-request", f"unknown affiliation {affiliation!r}")
        if role is not None and role not in ROLES:
            raise MucError("bad-request", f"unknown role {role!r}")
        actor = el.find(qname(namespace, "actor"))
        return cls(
            affiliation, role, _jid(el.get("jid"), "item jid"), el.get("nick"),
            el.findtext(qname(namespace, "reason")),
            actor.get("nick") if actor is not None else None,
            _jid(actor.get("jid"), "actor jid") if actor is not None else None,
        )  # fmt: skip

    def to_xml(self, namespace: str = USER) -> Element:
        item = element(qname(namespace, "item"), {
            "affiliation": self.affiliation, "role": self.role,
            "jid": None if self.jid is None else str(self.jid), "nick": self.nick,
        })  # fmt: skip
        if self.actor_nick is not None or self.actor_jid is not None:
            sub(item, qname(namespace, "actor"), {
                "nick": self.actor_nick, "jid": None if self.actor_jid is None else str(self.actor_jid),
            })  # fmt: skip
        if self.reason is not None:
            sub(item, qname(namespace, "reason"), text=self.reason)
        return item


@dataclass(frozen=True)
class Invite:
    """§7.8.2: a mediated invitation; ``to`` when sent to the room, ``from_`` when the room passes it on."""

    to: JID | None = None
    from_: JID | None = None
    reason: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Invite:
        return cls(_jid(el.get("to"), "invitee"), _jid(el.get("from"), "inviter"), el.findtext(qname(USER, "reason")))

    def to_xml(self) -> Element:
        invite = element(qname(USER, "invite"), {
            "to": None if self.to is None else str(self.to), "from": None if self.from_ is None else str(self.from_),
        })  # fmt: skip
        if self.reason is not None:
            sub(invite, qname(USER, "reason"), text=self.reason)
        return invite


@dataclass(frozen=True)
class Decline:
    """§7.8.2: an invitee declines; the room passes it to the inviter."""

    to: JID | None = None
    from_: JID | None = None
    reason: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Decline:
        return cls(_jid(el.get("to"), "inviter"), _jid(el.get("from"), "invitee"), el.findtext(qname(USER, "reason")))

    def to_xml(self) -> Element:
        decline = element(qname(USER, "decline"), {
            "to": None if self.to is None else str(self.to), "from": None if self.from_ is None else str(self.from_),
        })  # fmt: skip
        if self.reason is not None:
            sub(decline, qname(USER, "reason"), text=self.reason)
        return decline


@dataclass(frozen=True)
class Destroy:
    """§10.9: the room's destruction, with an optional alternate venue and reason."""

    jid: JID | None = None
    reason: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Destroy:
        namespace = el.tag[1:].partition("}")[0]
        return cls(_jid(el.get("jid"), "alternate venue"), el.findtext(qname(namespace, "reason")))

    def to_xml(self, namespace: str = OWNER) -> Element:
        destroy = element(qname(namespace, "destroy"), {"jid": None if self.jid is None else str(self.jid)})
        if self.reason is not None:
            sub(destroy, qname(namespace, "reason"), text=self.reason)
        return destroy


@dataclass(frozen=True)
class UserX:
    """``<x xmlns='…muc#user'/>``: items and status codes (§7.2.3), invitations (§7.8), destruction (§10.9)."""

    items: tuple[Item, ...] = ()
    statuses: tuple[int, ...] = ()
    invites: tuple[Invite, ...] = ()
    declines: tuple[Decline, ...] = ()
    destroy: Destroy | None = None
    password: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> UserX:
        if el.tag != USER_X:
            raise MucError("bad-request", f"expected a MUC user element, got {el.tag}")
        statuses = []
        for status in el.findall(qname(USER, "status")):
            code = _count(status.get("code"), "status code")
            if code is None:
                raise MucError("bad-request", "a status needs a code")
            statuses.append(code)
        destroy = el.find(qname(USER, "destroy"))
        return cls(
            tuple(Item.from_xml(i) for i in el.findall(qname(USER, "item"))), tuple(statuses),
            tuple(Invite.from_xml(i) for i in el.findall(qname(USER, "invite"))),
            tuple(Decline.from_xml(d) for d in el.findall(qname(USER, "decline"))),
            Destroy.from_xml(destroy) if destroy is not None else None, el.findtext(qname(USER, "password")),
        )  # fmt: skip

    def to_xml(self) -> Element:
        x = element(USER_X)
        x.extend(invite.to_xml() for invite in self.invites)
        x.extend(decline.to_xml() for decline in self.declines)
        if self.destroy is not None:
            x.append(self.destroy.to_xml(USER))
        x.extend(item.to_xml(USER) for item in self.items)
        x.extend(element(qname(USER, "status"), {"code": str(code)}) for code in self.statuses)
        if self.password is not None:
            sub(x, qname(USER, "password"), text=self.password)
        return x


@dataclass(frozen=True)
class AdminQuery:
    """§8 and §9: a role or affiliation request (get: the items name what to list)."""

    items: tuple[Item, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> AdminQuery:
        if el.tag != ADMIN_QUERY:
            raise MucError("bad-request", f"expected a MUC admin query, got {el.tag}")
        items = tuple(Item.from_xml(i) for i in el.findall(qname(ADMIN, "item")))
        if not items:
            raise MucError("bad-request", "an admin query needs at least one item")
        return cls(items)

    def to_xml(self) -> Element:
        query = element(ADMIN_QUERY)
        query.extend(item.to_xml(ADMIN) for item in self.items)
        return query


@dataclass(frozen=True)
class OwnerQuery:
    """§10: the configuration form (empty to ask for it) or the room's destruction."""

    form: DataForm | None = None
    destroy: Destroy | None = None

    @classmethod
    def from_xml(cls, el: Element) -> OwnerQuery:
        if el.tag != OWNER_QUERY:
            raise MucError("bad-request", f"expected a MUC owner query, got {el.tag}")
        x, destroy = el.find(_X_DATA), el.find(qname(OWNER, "destroy"))
        try:
            form = DataForm.from_xml(x) if x is not None else None
        except DataFormError as err:
            raise MucError("bad-request", str(err)) from None
        return cls(form, Destroy.from_xml(destroy) if destroy is not None else None)

    def to_xml(self) -> Element:
        query = element(OWNER_QUERY)
        if self.form is not None:
            query.append(self.form.to_xml())
        if self.destroy is not None:
            query.append(self.destroy.to_xml(OWNER))
        return query


@dataclass(frozen=True)
class DirectInvite:
    """XEP-0249 §2: an invitation sent straight to the invitee."""

    jid: JID
    password: str | None = None
    reason: str | None = None
    continue_: bool = False
    thread: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> DirectInvite:
        if el.tag != DIRECT_INVITE:
            raise MucError("bad-request", f"expected a direct invitation, got {el.tag}")
        room = _jid(el.get("jid"), "room")
        if room is None:
            raise MucError("bad-request", "a direct invitation names the room in 'jid'")
        return cls(room, el.get("password"), el.get("reason"), el.get("continue") in ("true", "1"), el.get("thread"))

    def to_xml(self) -> Element:
        return element(DIRECT_INVITE, {
            "jid": str(self.jid), "password": self.password, "reason": self.reason,
            "continue": "true" if self.continue_ else None, "thread": self.thread,
        })  # fmt: skip


@dataclass(frozen=True)
class OccupantId:
    """XEP-0421 §3: a stable, opaque id of an occupant, the same in every room session."""

    id: str

    @classmethod
    def from_xml(cls, el: Element) -> OccupantId:
        if el.tag != OCCUPANT_ID or not el.get("id"):
            raise MucError("bad-request", "an occupant-id needs an 'id'")
        return cls(el.get("id", ""))

    def to_xml(self) -> Element:
        return element(OCCUPANT_ID, {"id": self.id})


@dataclass(frozen=True)
class Moderate:
    """XEP-0425 §4: a moderator's request to retract the message with stanza-id ``id``."""

    id: str
    reason: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Moderate:
        if el.tag != MODERATE or not el.get("id"):
            raise MucError("bad-request", "a moderation request names the message's stanza-id in 'id'")
        if el.find(RETRACT) is None:
            raise MucError("feature-not-implemented", "only retraction is offered as moderation")
        return cls(el.get("id", ""), el.findtext(qname(MODERATE_NS, "reason")))

    def to_xml(self) -> Element:
        moderate = element(MODERATE, {"id": self.id}, children=[element(RETRACT)])
        if self.reason is not None:
            sub(moderate, qname(MODERATE_NS, "reason"), text=self.reason)
        return moderate


@dataclass(frozen=True)
class Retraction:
    """XEP-0425 §4: the room's notice that a moderator retracted a message (``<retract/>``), or
    the tombstone left in the archive in its place (``<retracted/>``, with ``stamp``)."""

    id: str | None
    by: JID
    occupant_id: str | None = None
    reason: str | None = None
    stamp: datetime | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Retraction:
        if el.tag not in (RETRACT, RETRACTED):
            raise MucError("bad-request", f"expected a retraction, got {el.tag}")
        moderated = el.find(_MODERATED)
        by = _jid(moderated.get("by"), "moderator") if moderated is not None else None
        if moderated is None or by is None:
            raise MucError("bad-request", "a moderated retraction names the moderator in <moderated by=''/>")
        occupant = moderated.find(OCCUPANT_ID)
        stamp = el.get("stamp")
        try:
            moment = parse_stamp(stamp) if stamp is not None else None
        except ForwardError as err:
            raise MucError("bad-request", str(err)) from None
        return cls(el.get("id") if el.tag == RETRACT else None, by,
                   occupant.get("id") if occupant is not None else None,
                   el.findtext(qname(RETRACT_NS, "reason")), moment)

    def to_xml(self) -> Element:
        tombstone = self.id is None
        el = element(RETRACTED if tombstone else RETRACT, {
            "id": self.id, "stamp": format_stamp(self.stamp) if self.stamp is not None else None,
        })  # fmt: skip
        moderated = sub(el, _MODERATED, {"by": str(self.by)})
        if self.occupant_id is not None:
            moderated.append(OccupantId(self.occupant_id).to_xml())
        if self.reason is not None:
            sub(el, qname(RETRACT_NS, "reason"), text=self.reason)
        return el


KEYS_NS = "https://schnack.im/protocol/muc-keys"
KEY_WARNINGS = qname(KEYS_NS, "warnings")
KEY_PROBLEMS = ("no-keys", "hidden-keys")


@dataclass(frozen=True)
class KeyWarnings:
    """schnack's note to whoever adds members to a group: whose OMEMO keys the others cannot
    fetch (``no-keys``: no device list published; ``hidden-keys``: its access model hides it
    from other members), so that their client can say why a member will not be able to read."""

    members: tuple[tuple[JID, str], ...]

    @classmethod
    def from_xml(cls, el: Element) -> KeyWarnings:
        if el.tag != KEY_WARNINGS:
            raise MucError("bad-request", f"expected key warnings, got {el.tag}")
        members = []
        for member in el.findall(qname(KEYS_NS, "member")):
            jid, problem = _jid(member.get("jid"), "member"), member.get("problem")
            if jid is None or problem not in KEY_PROBLEMS:
                raise MucError("bad-request", "a key warning names a member's jid and a known problem")
            members.append((jid, problem))
        return cls(tuple(members))

    def to_xml(self) -> Element:
        warnings = element(KEY_WARNINGS)
        for jid, problem in self.members:
            sub(warnings, qname(KEYS_NS, "member"), {"jid": str(jid), "problem": problem})
        return warnings
