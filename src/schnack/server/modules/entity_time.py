"""XEP-0202: Entity Time of the server, which clients read to stamp messages by the server's clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp.payloads.entity_time import NS as TIME
from ...xmpp.payloads.entity_time import EntityTime
from ...xmpp.stanza import Stanza
from ...xmpp.xml import qname
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session


class EntityTimeModule(Module[Any]):
    """Answers time queries to the server's domains (XEP-0202 §3) in UTC.

    The zone is always UTC ("+00:00"): what a server's zone is says nothing to its users, and
    a client wants only the time, to tell how far its own clock is off.
    """

    name = "time"
    features = (TIME,)

    def setup(self) -> None:
        self.iq("host", qname(TIME, "time"), get=self.time)

    async def time(self, stanza: Stanza, _origin: Session | None) -> Element:
        return stanza.result(EntityTime(datetime.now(UTC)).to_xml())
