"""XEP-0030: Service Discovery (v2.5) of this client, announced with XEP-0115: Entity
Capabilities (v1.6).

Another entity asking our full JID for disco#info (§3.1) learns what this client speaks: the
delivery receipts, chat markers, chat states and corrections that the other features implement,
pings, and the XEP-0163 "+notify" of the OMEMO device lists of the versions loaded, so that PEP
services send us our contacts' device list changes (omemo/adapter.py relies on them). Our
presence carries the XEP-0115 ``<c/>`` with the hash of that answer (§4), so that contacts'
clients (Conversations, for one, sends chat states only to clients that announce them) know it
without asking; a query naming the caps node (§6.2) is answered alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.payloads import chatstates, correction, markers, receipts
from ...xmpp.payloads.caps import Caps, compute_ver
from ...xmpp.payloads.disco import INFO, DiscoInfo, Identity
from ...xmpp.stanza import Stanza
from ...xmpp.xml import Element
from ..omemo.protocol import device_list_node

if TYPE_CHECKING:
    from ..client import Client
    from .presence import Presence

NODE = "https://schnack.im"
IDENTITY = Identity("client", "pc", "schnack")
FEATURES = (ns.DISCO_INFO, ns.CAPS, ns.PING, receipts.NS, markers.NS, chatstates.NS, correction.NS)


class Disco:
    """Answers disco#info about this client and makes the caps element for its presence."""

    def __init__(self, client: Client, presence: Presence) -> None:
        notify = (f"{device_list_node(namespace)}+notify" for namespace in client.omemo.settings.namespaces)
        self.info = DiscoInfo(identities=(IDENTITY,), features=tuple(sorted((*FEATURES, *notify))))
        self.caps = Caps(NODE, compute_ver(self.info))
        client.handle_iq("get", INFO, self._info)
        presence.on_announce(self.caps.to_xml)

    def _info(self, stanza: Stanza) -> Element:
        """§3.1, and XEP-0115 §6.2 for the caps node; any other node is not ours (§3.2)."""
        query = stanza.payload
        node = query.get("node") if query is not None else None
        if node is not None and node != self.caps.disco_node:
            raise StanzaError("item-not-found", "no such node")
        return DiscoInfo(self.info.identities, self.info.features, node=node).to_xml()
