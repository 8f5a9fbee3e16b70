"""The roster (RFC 6121 §2): fetching it, changing it, and following the server's pushes.

The roster is fetched after every login, before presence is announced: that is what makes the
session "interested" in roster pushes (§2.1.6) and lets the server probe the contacts (§4.3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.roster import QUERY, RosterError, RosterItem, RosterQuery
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..errors import XmppError
from ..feed import Feed

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_IQ = qname(ns.CLIENT, "iq")


@dataclass(frozen=True)
class Contact:
    """One roster item (RFC 6121 §2.1.2).

    ``subscription`` is none, to (we see their presence), from (they see ours), both, or remove
    (in an update: the contact was deleted); ``pending`` means we asked to see their presence and
    they have not answered; ``approved`` that we let them see ours before they asked.
    """

    jid: JID
    name: str | None = None
    subscription: str = "none"
    pending: bool = False
    approved: bool = False
    groups: tuple[str, ...] = ()

    @classmethod
    def from_item(cls, item: RosterItem) -> Contact:
        return cls(item.jid, item.name, item.subscription, item.ask, item.approved, item.groups)


class Roster:
    """The account's contact list, as the server last told it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.contacts: dict[JID, Contact] = {}
        self.updates: Feed[Contact] = Feed()
        client.handle_iq("set", QUERY, self._push)
        client.on_connect(self._on_connect)

    async def _on_connect(self) -> None:
        try:
            await self.fetch()
        except XmppError as err:
            log.warning("the server refused the roster: %s", err)

    async def fetch(self) -> list[Contact]:
        """§2.1.3: the whole roster."""
        reply = await self.client.iq(element(_IQ, {"type": "get"}, children=[element(QUERY)]))
        query = reply.find(QUERY)
        try:
            items = RosterQuery.from_xml(query).items if query is not None else ()
        except RosterError as err:
            raise XmppError("bad-request", f"the server sent a broken roster: {err}") from None
        self.contacts = {item.jid: Contact.from_item(item) for item in items}
        self.client.store.save_roster(self.contacts.values())
        return list(self.contacts.values())

    async def set(self, jid: JID, name: str | None, groups: Sequence[str]) -> None:
        """§2.3: add or update an item."""
        item = RosterItem(jid.bare, name, groups=tuple(groups))
        item_el = item.to_xml()
        # A roster set carries no subscription state: the server keeps that (§2.1.2.5).
        del item_el.attrib["subscription"]
        await self.client.iq(element(_IQ, {"type": "set"}, children=[element(QUERY, children=[item_el])]))

    async def remove(self, jid: JID) -> None:
        """§2.5: delete an item."""
        query = RosterQuery((RosterItem(jid.bare, subscription="remove"),)).to_xml()
        await self.client.iq(element(_IQ, {"type": "set"}, children=[query]))

    def _push(self, stanza: Stanza) -> Element | None:
        """§2.1.6: a push from the account's server (no 'from', or the account's bare JID)."""
        if stanza.from_ is not None and stanza.from_ != self.client.account:
            raise StanzaError("service-unavailable")
        try:
            query = RosterQuery.from_xml(stanza.el[0])
        except RosterError as err:
            raise StanzaError(err.condition, err.text) from None
        if len(query.items) != 1:
            raise StanzaError("bad-request", "a roster push carries exactly one item")
        contact = Contact.from_item(query.items[0])
        if contact.subscription == "remove":
            self.contacts.pop(contact.jid, None)
        else:
            self.contacts[contact.jid] = contact
        self.client.store.update_contact(contact)
        self.updates.publish(contact)
        return None
