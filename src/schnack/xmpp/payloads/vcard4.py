"""XEP-0292: vCard4 Over XMPP (v0.12): the RFC 6351 ``<vcard/>`` and its mapping from vcard-temp.

XMPP uses the ``<vcard/>`` element of ``urn:ietf:params:xml:ns:vcard-4.0`` as the root (§3),
kept as PEP item ``current`` of the node ``urn:xmpp:vcard4``. :class:`Names` is the part of a
vcard-temp ``<vCard/>`` (XEP-0054) that the mapping of §11 carries over here: the formatted
name, the nicknames and an inline photo, which becomes a ``data:`` URI; and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname, text_of

NS = "urn:ietf:params:xml:ns:vcard-4.0"
NODE = "urn:xmpp:vcard4"
ITEM = "current"
VCARD = qname(NS, "vcard")
_TEMP_FN = qname(ns.VCARD, "FN")
_TEMP_NICKNAME = qname(ns.VCARD, "NICKNAME")
_TEMP_PHOTO = qname(ns.VCARD, "PHOTO")
_TEMP_TYPE = qname(ns.VCARD, "TYPE")
_TEMP_BINVAL = qname(ns.VCARD, "BINVAL")
_TEMP_EXTVAL = qname(ns.VCARD, "EXTVAL")
# RFC 2397: data:[<media type>][;base64],<data>; only base64 images fit a vcard-temp BINVAL.
_DATA_URI = re.compile(r"data:([^;,]*);base64,(.*)", re.DOTALL)


def _text_property(name: str, value: str) -> Element:
    return element(qname(NS, name), children=[element(qname(NS, "text"), text=value)])


@dataclass(frozen=True)
class Names:
    """What §11 maps from vcard-temp: FN, each NICKNAME and the PHOTO (a data: URI for an inline one)."""

    full_name: str | None = None
    nicknames: tuple[str, ...] = ()
    photo: str | None = None

    @classmethod
    def from_vcard_temp(cls, vcard: Element) -> Names:
        full_name = (text_of(vcard, _TEMP_FN) or "").strip() or None
        nicknames = tuple(n.text.strip() for n in vcard.findall(_TEMP_NICKNAME) if n.text and n.text.strip())
        photo = None
        el = vcard.find(_TEMP_PHOTO)
        if el is not None:
            binval = "".join((text_of(el, _TEMP_BINVAL) or "").split())
            extval = (text_of(el, _TEMP_EXTVAL) or "").strip()
            if binval:
                kind = (text_of(el, _TEMP_TYPE) or "").strip() or "application/octet-stream"
                photo = f"data:{kind};base64,{binval}"
            elif extval:
                photo = extval
        return cls(full_name, nicknames, photo)

    def to_vcard4(self) -> Element:
        """The ``<vcard/>`` holding these properties (§3; RFC 6351 §3.3)."""
        vcard = element(VCARD)
        if self.full_name is not None:
            vcard.append(_text_property("fn", self.full_name))
        vcard.extend(_text_property("nickname", nick) for nick in self.nicknames)
        if self.photo is not None:
            vcard.append(element(qname(NS, "photo"), children=[element(qname(NS, "uri"), text=self.photo)]))
        return vcard

    def fill_vcard_temp(self, vcard: Element) -> None:
        """Add to a vcard-temp ``<vCard/>`` the properties it lacks (the mapping of §11 backwards):
        an inline photo from a base64 ``data:`` URI, an EXTVAL from any other URI."""
        if self.full_name and vcard.find(_TEMP_FN) is None:
            vcard.append(element(_TEMP_FN, text=self.full_name))
        if self.nicknames and vcard.find(_TEMP_NICKNAME) is None:
            vcard.extend(element(_TEMP_NICKNAME, text=nick) for nick in self.nicknames)
        if self.photo and vcard.find(_TEMP_PHOTO) is None:
            inline = _DATA_URI.fullmatch(self.photo)
            if inline is not None:
                children = [element(_TEMP_BINVAL, text=inline.group(2))]
                if inline.group(1):
                    children.insert(0, element(_TEMP_TYPE, text=inline.group(1)))
                vcard.append(element(_TEMP_PHOTO, children=children))
            elif not self.photo.startswith("data:"):
                vcard.append(element(_TEMP_PHOTO, children=[element(_TEMP_EXTVAL, text=self.photo)]))

    @classmethod
    def from_vcard4(cls, vcard: Element) -> Names:
        """The same properties read back from a ``<vcard/>``."""
        fn = vcard.find(f"{qname(NS, 'fn')}/{qname(NS, 'text')}")
        nicks = vcard.findall(f"{qname(NS, 'nickname')}/{qname(NS, 'text')}")
        photo = vcard.find(f"{qname(NS, 'photo')}/{qname(NS, 'uri')}")
        return cls(fn.text if fn is not None else None, tuple(n.text or "" for n in nicks),
                   photo.text if photo is not None else None)

