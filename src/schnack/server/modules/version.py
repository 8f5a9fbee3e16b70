"""XEP-0092: Software Version of the server."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ... import __version__
from ...xmpp import ns
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, sub
from ..config import bounded
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session


@dataclass(frozen=True)
class VersionOptions:
    """Whether to tell the operating system (some operators prefer not to)."""

    show_os: bool = bounded(False)


class Version(Module[VersionOptions]):
    """Answers jabber:iq:version queries to the server's domains (XEP-0092 §2)."""

    name = "version"
    features = (ns.VERSION,)
    Options = VersionOptions

    def setup(self) -> None:
        self.iq("host", qname(ns.VERSION, "query"), get=self.version)

    async def version(self, stanza: Stanza, _origin: Session | None) -> Element:
        query = element(qname(ns.VERSION, "query"))
        sub(query, qname(ns.VERSION, "name"), text="schnack")
        sub(query, qname(ns.VERSION, "version"), text=__version__)
        if self.options.show_os:
            sub(query, qname(ns.VERSION, "os"), text=f"{platform.system()} {platform.release()}")
        return stanza.result(query)
