"""XEP-0402: PEP Native Bookmarks (``urn:xmpp:bookmarks:1``), and the legacy XEP-0048 form it replaces.

A native bookmark is one PEP item per room: the item id is the room's JID and the payload a
``<conference/>`` with the ``name`` and ``autojoin`` attributes and optional ``<nick/>``,
``<password/>`` and ``<extensions/>`` children (§3). XEP-0048 keeps every bookmark in one
``<storage xmlns='storage:bookmarks'/>`` element, each room a ``<conference jid='...'/>``
beside ``<url/>`` bookmarks (§3); the mapping between the two is XEP-0402 §5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from ..jid import JID, JIDError
from ..xml import element, qname, text_of

NS = "urn:xmpp:bookmarks:1"
COMPAT = f"{NS}#compat"
COMPAT_PEP = f"{NS}#compat-pep"
# XEP-0411 §2: the account converts between the two XEP-0048 stores.
CONVERSION = "urn:xmpp:bookmarks-conversion:0"
LEGACY = "storage:bookmarks"
CONFERENCE = qname(NS, "conference")
STORAGE = qname(LEGACY, "storage")
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


class BookmarkError(ValueError):
    """A bookmark that breaks XEP-0402 §3 or XEP-0048 §3."""


def _room(jid: str | None) -> JID:
    if not jid:
        raise BookmarkError("a conference bookmark needs the room's JID")
    try:
        room = JID.parse(jid)
    except JIDError as err:
        raise BookmarkError(f"invalid room JID {jid!r}: {err}") from None
    if room.resource is not None:
        raise BookmarkError(f"a room JID has no resource: {jid!r}")
    return room


def _autojoin(value: str | None) -> bool:
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise BookmarkError(f"autojoin must be true or false, got {value!r}")


@dataclass(frozen=True)
class Conference:
    """One room bookmark (XEP-0402 §3, XEP-0048 §3.2).

    ``extensions`` exist in the native form only; XEP-0402 §5 leaves them out of the legacy one.
    """

    jid: JID
    name: str | None = None
    autojoin: bool = False
    nick: str | None = None
    password: str | None = None
    extensions: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_native(cls, item_id: str | None, el: Element) -> Conference:
        """A native item: its id is the room (§3), its payload the conference."""
        if el.tag != CONFERENCE:
            raise BookmarkError(f"a bookmark item holds a <conference xmlns='{NS}'/>")
        extensions = el.find(qname(NS, "extensions"))
        return cls(
            _room(item_id), el.get("name") or None, _autojoin(el.get("autojoin")),
            text_of(el, qname(NS, "nick")) or None, text_of(el, qname(NS, "password")),
            tuple(extensions) if extensions is not None else (),
        )  # fmt: skip

    def to_native(self) -> Element:
        """The item payload; the item id is ``str(self.jid)``."""
        attrs = {"name": self.name, "autojoin": "true" if self.autojoin else None}
        conference = element(CONFERENCE, attrs)
        if self.nick is not None:
            conference.append(element(qname(NS, "nick"), text=self.nick))
        if self.password is not None:
            conference.append(element(qname(NS, "password"), text=self.password))
        if self.extensions:
            conference.append(element(qname(NS, "extensions"), children=self.extensions))
        return conference

    @classmethod
    def from_legacy(cls, el: Element) -> Conference:
        return cls(
            _room(el.get("jid")), el.get("name") or None, _autojoin(el.get("autojoin")),
            text_of(el, qname(LEGACY, "nick")) or None, text_of(el, qname(LEGACY, "password")),
        )  # fmt: skip

    def to_legacy(self) -> Element:
        attrs = {"jid": str(self.jid), "name": self.name, "autojoin": "true" if self.autojoin else None}
        conference = element(qname(LEGACY, "conference"), attrs)
        if self.nick is not None:
            conference.append(element(qname(LEGACY, "nick"), text=self.nick))
        if self.password is not None:
            conference.append(element(qname(LEGACY, "password"), text=self.password))
        return conference


@dataclass(frozen=True)
class Url:
    """A web page bookmark (XEP-0048 §3.3), which has no native form and stays in legacy storage."""

    url: str
    name: str | None = None

    def to_xml(self) -> Element:
        return element(qname(LEGACY, "url"), {"name": self.name, "url": self.url})


@dataclass(frozen=True)
class Storage:
    """The legacy ``<storage xmlns='storage:bookmarks'/>`` element (XEP-0048 §3)."""

    conferences: tuple[Conference, ...] = ()
    urls: tuple[Url, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Storage:
        if el.tag != STORAGE:
            raise BookmarkError(f"expected <storage xmlns='{LEGACY}'/>")
        conferences = tuple(Conference.from_legacy(c) for c in el.findall(qname(LEGACY, "conference")))
        urls = []
        for url in el.findall(qname(LEGACY, "url")):
            address = url.get("url")
            if not address:
                raise BookmarkError("a url bookmark needs its url")
            urls.append(Url(address, url.get("name") or None))
        return cls(conferences, tuple(urls))

    def to_xml(self) -> Element:
        return element(STORAGE, children=[
            *(conference.to_legacy() for conference in self.conferences), *(url.to_xml() for url in self.urls),
        ])  # fmt: skip
