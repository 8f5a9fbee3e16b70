"""XEP-0045 §10.2 and §16.5: the ``muc#roomconfig`` form an owner fills in, the ``muc#roominfo``
form of a room's disco#info (§6.4), and the disco features that describe a room (§16.3)."""

from __future__ import annotations

from dataclasses import replace

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID, JIDError
from ....xmpp.payloads.dataforms import DataForm, Field, Option
from ....xmpp.payloads.muc import MODERATE_NS, MUC, OCCUPANT_ID_NS, REQUEST, ROOMCONFIG, ROOMINFO, SELF_PING
from .room import PM_POLICIES, WHOIS, Room, RoomConfig

_P = "muc#roomconfig_"
# muc#stable_id (XEP-0045 1.31 and later): the room passes a message on under the id its sender gave it.
STABLE_ID = f"{MUC}#stable_id"
_MAX_USERS_CHOICES = (10, 20, 50, 100, 200, 500, 1024, 2048, 5000, 10000)
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


def _boolean(var: str, label: str, value: bool) -> Field:
    return Field(var, "boolean", label, ("1" if value else "0",))


def config_form(room: Room, service_limit: int) -> DataForm:
    """§10.2: the room's current configuration as a form to fill in."""
    config = room.config
    limit = room.max_users(service_limit)
    choices = sorted({c for c in _MAX_USERS_CHOICES if c <= service_limit} | {limit})
    owners = tuple(sorted(str(j) for j in room.owners()))
    admins = tuple(sorted(str(j) for j, r in room.affiliations.items() if r.affiliation == "admin"))
    return DataForm("form", (
        Field("FORM_TYPE", "hidden", values=(ROOMCONFIG,)),
        Field(f"{_P}roomname", "text-single", "Name", (config.name,)),
        Field(f"{_P}roomdesc", "text-single", "Description", (config.description,)),
        Field(f"{_P}lang", "text-single", "Language", (config.language,)),
        _boolean(f"{_P}publicroom", "List the group in the directory (a public channel)", config.public),
        _boolean(f"{_P}persistentroom", "Keep the group when everyone left", config.persistent),
        _boolean(f"{_P}membersonly", "Only members may join", config.members_only),
        _boolean(f"{_P}moderatedroom", "Only participants with voice may speak", config.moderated),
        Field(f"{_P}whois", "list-single", "Who may see the members' addresses", (config.whois,),
              options=(Option("moderators", "Moderators only"), Option("anyone", "Anyone (needed for encryption)"))),
        _boolean(f"{_P}passwordprotectedroom", "Password required to join", bool(config.password)),
        Field(f"{_P}roomsecret", "text-private", "Password", (config.password,)),
        Field(f"{_P}maxusers", "list-single", "Most occupants", (str(limit),),
              options=tuple(Option(str(c)) for c in choices)),
        _boolean(f"{_P}allowinvites", "Members may invite others", config.allow_invites),
        _boolean(f"{_P}changesubject", "Occupants may change the subject", config.change_subject),
        Field(f"{_P}allowpm", "list-single", "Who may send private messages", (config.allow_pm,),
              options=tuple(Option(p) for p in PM_POLICIES)),
        _boolean(f"{_P}enablelogging", "Keep the group's history in its archive", config.logging),
        Field(f"{_P}roomowners", "jid-multi", "Owners", owners),
        Field(f"{_P}roomadmins", "jid-multi", "Admins", admins),
    ), title=f"Configuration of {room.jid}")  # fmt: skip


def _flag(form: DataForm, var: str, current: bool) -> bool:
    value = form.value(var)
    if value is None:
        return current
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise StanzaError("not-acceptable", f"{var} must be true or false")


def _text(form: DataForm, var: str, current: str, limit: int = 1024) -> str:
    value = form.value(var)
    if value is None:
        return current
    if len(value) > limit:
        raise StanzaError("not-acceptable", f"{var} is longer than {limit} characters")
    return value


def _choice(form: DataForm, var: str, current: str, choices: tuple[str, ...]) -> str:
    value = form.value(var)
    if value is None:
        return current
    if value not in choices:
        raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(choices)}")
    return value


def _jids(form: DataForm, var: str) -> tuple[JID, ...] | None:
    field = form.field(var)
    if field is None:
        return None
    try:
        return tuple(JID.parse(value).bare for value in field.values if value.strip())
    except JIDError as err:
        raise StanzaError("jid-malformed", f"{var}: {err}") from None


def apply_form(config: RoomConfig, form: DataForm, service_limit: int) -> tuple[RoomConfig, tuple[JID, ...] | None,
                                                                              tuple[JID, ...] | None]:
    """§10.2: the configuration a submitted form asks for, and the owners and admins it names
    (None when it leaves them alone). Fields left out keep their value; a bad value is
    not-acceptable and changes nothing."""
    if form.form_type not in (None, ROOMCONFIG):
        raise StanzaError("not-acceptable", f"expected a {ROOMCONFIG} form")
    max_text = form.value(f"{_P}maxusers")
    max_users = config.max_users
    if max_text is not None and max_text.strip() not in ("", "none"):
        digits = max_text.strip()
        if not (digits.isascii() and digits.isdigit()) or not 2 <= int(digits) <= service_limit:
            raise StanzaError("not-acceptable", f"{_P}maxusers must be a number from 2 to {service_limit}")
        max_users = int(digits)
    password = _text(form, f"{_P}roomsecret", config.password, 256)
    if not _flag(form, f"{_P}passwordprotectedroom", bool(config.password)):
        password = ""
    new = replace(
        config,
        name=_text(form, f"{_P}roomname", config.name, 256),
        description=_text(form, f"{_P}roomdesc", config.description),
        language=_text(form, f"{_P}lang", config.language, 64),
        public=_flag(form, f"{_P}publicroom", config.public),
        persistent=_flag(form, f"{_P}persistentroom", config.persistent),
        members_only=_flag(form, f"{_P}membersonly", config.members_only),
        moderated=_flag(form, f"{_P}moderatedroom", config.moderated),
        whois=_choice(form, f"{_P}whois", config.whois, WHOIS),
        password=password,
        max_users=max_users,
        allow_invites=_flag(form, f"{_P}allowinvites", config.allow_invites),
        change_subject=_flag(form, f"{_P}changesubject", config.change_subject),
        allow_pm=_choice(form, f"{_P}allowpm", config.allow_pm, PM_POLICIES),
        logging=_flag(form, f"{_P}enablelogging", config.logging),
    )
    if _flag(form, f"{_P}passwordprotectedroom", bool(config.password)) and not new.password:
        raise StanzaError("not-acceptable", "a password-protected group needs a password")
    return new, _jids(form, f"{_P}roomowners"), _jids(form, f"{_P}roomadmins")


def room_features(room: Room) -> tuple[str, ...]:
    """§16.3 (and §6.4): what the room is and what it offers, as disco features."""
    config = room.config
    return (
        MUC, ns.DISCO_INFO, ns.DISCO_ITEMS, "urn:xmpp:mam:2", ns.SID, OCCUPANT_ID_NS, SELF_PING, MODERATE_NS,
        REQUEST, ns.VCARD, STABLE_ID,
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_nonanonymous" if config.non_anonymous else "muc_semianonymous",
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_public" if config.public else "muc_hidden",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_passwordprotected" if config.password else "muc_unsecured",
    )  # fmt: skip


def room_info(room: Room) -> DataForm:
    """§6.4 and §16.5.4: the ``muc#roominfo`` form of the room's disco#info."""
    config, state = room.config, room.state
    fields = [
        Field("FORM_TYPE", "hidden", values=(ROOMINFO,)),
        Field("muc#roomconfig_roomname", "text-single", "Name", (config.name,)),
        Field("muc#roominfo_description", "text-single", "Description", (config.description,)),
        Field("muc#roominfo_subject", "text-single", "Subject", (state.subject,)),
        Field("muc#roominfo_occupants", "text-single", "Occupants", (str(len(room.occupants)),)),
        Field("muc#roominfo_lang", "text-single", "Language", (config.language,)),
        Field("muc#roominfo_changesubject", "boolean", "Occupants may change the subject",
              ("1" if config.change_subject else "0",)),
        Field("muc#roomconfig_allowinvites", "boolean", "Members may invite", ("1" if config.allow_invites else "0",)),
        Field("muc#roomconfig_allowpm", "list-single", "Who may send private messages", (config.allow_pm,)),
    ]  # fmt: skip
    if state.avatar_hash:
        fields.append(Field("muc#roominfo_avatarhash", "text-multi", "Avatar hash", (state.avatar_hash,)))
    return DataForm("result", tuple(fields))
