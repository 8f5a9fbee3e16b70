"""XEP-0352: Client State Indication: the stream feature and the ``<active/>``/``<inactive/>`` nonzas."""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..xml import element, qname

NS = "urn:xmpp:csi:0"
# §4.1: offered among the stream features once the client has authenticated.
FEATURE = qname(NS, "csi")
ACTIVE = qname(NS, "active")
INACTIVE = qname(NS, "inactive")


@dataclass(frozen=True)
class ClientState:
    """§4.2: what the client says about itself; a stream begins active."""

    active: bool = True

    @classmethod
    def from_xml(cls, el: Element) -> ClientState:
        if el.tag == ACTIVE:
            return cls(active=True)
        if el.tag == INACTIVE:
            return cls(active=False)
        raise ValueError(f"{el.tag} is not a client state indication")

    def to_xml(self) -> Element:
        return element(ACTIVE if self.active else INACTIVE)
