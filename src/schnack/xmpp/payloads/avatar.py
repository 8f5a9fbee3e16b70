"""XEP-0084: User Avatar (v1.1.4), and the vCard-based avatars of XEP-0153 (v1.1.1) it converts to and from.

XEP-0084 keeps an avatar in two PEP nodes: ``urn:xmpp:avatar:data`` holds the image, base64 in
a ``<data/>`` element, under the item id that is the SHA-1 of the image (§3.1, §4.1); the item of
``urn:xmpp:avatar:metadata`` with the same id describes it with ``<info/>`` elements (bytes,
id, type, optional width, height and url; §4.2), and an empty ``<metadata/>`` says the user has
no avatar (§3.5).

XEP-0153 keeps the image in the vcard-temp ``<PHOTO/>`` (``<TYPE/>`` and base64 ``<BINVAL/>``,
§3.1) and announces its SHA-1 in presence: ``<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>``
(§3.1); an empty ``<photo/>`` means no avatar, a missing one that the client does not know yet
(§4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname, text_of

DATA_NODE = "urn:xmpp:avatar:data"
METADATA_NODE = "urn:xmpp:avatar:metadata"
DATA = qname(DATA_NODE, "data")
METADATA = qname(METADATA_NODE, "metadata")
INFO = qname(METADATA_NODE, "info")
UPDATE_NS = "vcard-temp:x:update"
UPDATE = qname(UPDATE_NS, "x")
PHOTO = qname(UPDATE_NS, "photo")
_VCARD_PHOTO = qname(ns.VCARD, "PHOTO")
_VCARD_TYPE = qname(ns.VCARD, "TYPE")
_VCARD_BINVAL = qname(ns.VCARD, "BINVAL")


class AvatarError(ValueError):
    """An avatar element that breaks XEP-0084 §4 or XEP-0153 §3."""


def sha1_hex(image: bytes) -> str:
    """The id of an image (XEP-0084 §3.1, XEP-0153 §3.1): its SHA-1 as lower-case hex."""
    return hashlib.sha1(image, usedforsecurity=False).hexdigest()


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AvatarError("the image is not valid base64") from None


def _count(value: str | None, name: str, required: bool) -> int | None:
    # Some clients (slixmpp among them) write an optional size they do not know as ''.
    if value is None or (value == "" and not required):
        if required:
            raise AvatarError(f"<info/> needs '{name}'")
        return None
    if not (value.isascii() and value.isdigit()):
        raise AvatarError(f"'{name}' must be a number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class AvatarData:
    """§4.1: the image itself."""

    image: bytes

    @classmethod
    def from_xml(cls, el: Element) -> AvatarData:
        if el.tag != DATA:
            raise AvatarError(f"expected <data xmlns='{DATA_NODE}'/>")
        return cls(_decode_base64(el.text or ""))

    def to_xml(self) -> Element:
        return element(DATA, text=base64.b64encode(self.image).decode())

    @property
    def id(self) -> str:
        return sha1_hex(self.image)


@dataclass(frozen=True)
class Info:
    """§4.2.1: one image's description; an image kept elsewhere than the data node has a url."""

    id: str
    bytes: int
    type: str
    width: int | None = None
    height: int | None = None
    url: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Info:
        item_id, kind = el.get("id"), el.get("type")
        if not item_id or not kind:
            raise AvatarError("<info/> needs 'id' and 'type'")
        size = _count(el.get("bytes"), "bytes", required=True)
        assert size is not None
        return cls(item_id, size, kind, _count(el.get("width"), "width", False),
                   _count(el.get("height"), "height", False), el.get("url") or None)

    def to_xml(self) -> Element:
        attrs = {"id": self.id, "bytes": str(self.bytes), "type": self.type,
                 "width": str(self.width) if self.width is not None else None,
                 "height": str(self.height) if self.height is not None else None, "url": self.url}
        return element(INFO, attrs)


@dataclass(frozen=True)
class AvatarMetadata:
    """§4.2: the descriptions of the current avatar; none when the avatar is switched off (§3.5)."""

    infos: tuple[Info, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> AvatarMetadata:
        if el.tag != METADATA:
            raise AvatarError(f"expected <metadata xmlns='{METADATA_NODE}'/>")
        return cls(tuple(Info.from_xml(info) for info in el.findall(INFO)))

    def to_xml(self) -> Element:
        return element(METADATA, children=[info.to_xml() for info in self.infos])

    @property
    def stored(self) -> Info | None:
        """The description of the image in the data node: the one without a url (XEP-0398 §3.1)."""
        return next((info for info in self.infos if info.url is None), None)


@dataclass(frozen=True)
class VCardPhoto:
    """XEP-0153 §3.1: the vcard-temp ``<PHOTO/>`` with the image inline."""

    type: str
    image: bytes

    @classmethod
    def from_vcard(cls, vcard: Element) -> VCardPhoto | None:
        """The inline photo of a vcard-temp ``<vCard/>``; None without one (or with an EXTVAL only)."""
        photo = vcard.find(_VCARD_PHOTO)
        if photo is None:
            return None
        binval = text_of(photo, _VCARD_BINVAL)
        if not binval or not binval.strip():
            return None
        return cls((text_of(photo, _VCARD_TYPE) or "").strip(), _decode_base64(binval))

    def to_xml(self) -> Element:
        return element(_VCARD_PHOTO, children=[
            element(_VCARD_TYPE, text=self.type),
            element(_VCARD_BINVAL, text=base64.b64encode(self.image).decode()),
        ])  # fmt: skip

    @property
    def id(self) -> str:
        return sha1_hex(self.image)

    def put_in(self, vcard: Element) -> None:
        """Replace the ``<PHOTO/>`` of ``vcard`` with this one."""
        remove_photo(vcard)
        vcard.append(self.to_xml())


def remove_photo(vcard: Element) -> None:
    """Take every ``<PHOTO/>`` out of a vcard-temp ``<vCard/>``."""
    for photo in vcard.findall(_VCARD_PHOTO):
        vcard.remove(photo)


@dataclass(frozen=True)
class PhotoUpdate:
    """XEP-0153 §3.1, §4: the avatar hash in presence; ``hash`` '' for no avatar, None for an ``<x/>``
    without ``<photo/>`` (the client does not know)."""

    hash: str | None

    @classmethod
    def from_xml(cls, el: Element) -> PhotoUpdate:
        if el.tag != UPDATE:
            raise AvatarError(f"expected <x xmlns='{UPDATE_NS}'/>")
        photo = el.find(PHOTO)
        return cls(None if photo is None else (photo.text or "").strip())

    def to_xml(self) -> Element:
        children = [] if self.hash is None else [element(PHOTO, text=self.hash or None)]
        return element(UPDATE, children=children)
