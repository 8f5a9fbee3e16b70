"""The client side of PEP (XEP-0163) that OMEMO needs: publish with options, retrieve, retract, delete.

Publishing uses XEP-0060 §7.1.5 publish-options: on a new node they configure it; on an
existing node they are preconditions, and a node configured otherwise answers conflict
(precondition-not-met). The node is then reconfigured (§8.2) and the item published again,
which is how clients move an existing node to the access model OMEMO needs. Options a service
may not know (``pubsub#max_items`` = ``max`` is recent) can be named as optional: if the
service refuses the publication with them, it is published once more without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.dataforms import DataForm, Field
from ...xmpp.payloads.pubsub import (
    NODE_CONFIG,
    PUBLISH_OPTIONS,
    PUBSUB,
    Configure,
    Delete,
    Item,
    Items,
    Publish,
    Retract,
)
from ...xmpp.xml import element, qname
from ..errors import XmppError

if TYPE_CHECKING:
    from ..client import Client

_IQ = qname(ns.CLIENT, "iq")


def _form(form_type: str, options: Mapping[str, str]) -> DataForm:
    fields = [Field("FORM_TYPE", "hidden", values=(form_type,))]
    fields.extend(Field(var, values=(value,)) for var, value in options.items())
    return DataForm("submit", tuple(fields))


class Pep:
    """PEP requests on the account's own nodes, and retrieval from anyone's."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def _request(self, type: str, payload: Element, to: JID | None = None) -> Element:
        attrs = {"type": type, "to": str(to) if to is not None else None}
        return await self.client.iq(element(_IQ, attrs, children=[payload]))

    async def publish(self, node: str, item_id: str, payload: Element, options: Mapping[str, str],
                      optional: frozenset[str] = frozenset()) -> None:
        """Publish ``payload`` as item ``item_id`` of our ``node``, configured with ``options``."""
        try:
            await self._publish(node, item_id, payload, options)
        except XmppError:
            reduced = {key: value for key, value in options.items() if key not in optional}
            if len(reduced) == len(options):
                raise
            await self._publish(node, item_id, payload, reduced)

    async def _publish(self, node: str, item_id: str, payload: Element, options: Mapping[str, str]) -> None:
        request = Publish(node, (Item(item_id, payload),), _form(PUBLISH_OPTIONS, options)).to_xml()
        try:
            await self._request("set", request)
        except XmppError as err:
            # §7.1.5: conflict is what an existing node configured otherwise answers.
            if err.condition != "conflict":
                raise
            await self._request("set", Configure(node, _form(NODE_CONFIG, options)).to_xml())
            await self._request("set", request)

    async def items(self, jid: JID, node: str, *, item_id: str | None = None,
                    max_items: int | None = None) -> tuple[Item, ...] | None:
        """§6.5: the items of ``jid``'s ``node`` (one by id, or the last ``max_items``); None if
        the node does not exist."""
        request = Items(node, (Item(item_id),) if item_id is not None else (), max_items).to_xml()
        try:
            reply = await self._request("get", request, jid)
        except XmppError as err:
            if err.condition == "item-not-found":
                return None
            raise
        found = reply.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
        if found is None:
            return ()
        return tuple(Item.from_xml(item) for item in found.findall(qname(PUBSUB, "item")))

    async def retract(self, node: str, item_id: str) -> None:
        """§7.2: delete one of our items."""
        await self._request("set", Retract(node, (item_id,)).to_xml())

    async def delete(self, node: str) -> None:
        """§8.4: delete one of our nodes."""
        await self._request("set", Delete(node).to_xml())
