"""XEP-0084 avatar data and metadata, the XEP-0153 vCard photo and presence update."""

from __future__ import annotations

import base64
import hashlib

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.avatar import (
    AvatarData,
    AvatarError,
    AvatarMetadata,
    Info,
    PhotoUpdate,
    VCardPhoto,
    remove_photo,
)
from schnack.xmpp.xml import serialize

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_ID = hashlib.sha1(PNG).hexdigest()


def parse(xml: str) -> object:
    return parse_frame(xml.encode(), 10**6)


def test_data_round_trip_and_id() -> None:
    data = AvatarData(PNG)
    again = AvatarData.from_xml(parse_frame(serialize(data.to_xml()).encode(), 10**6))
    assert again == data and data.id == PNG_ID
    # Line breaks inside the base64 text are allowed.
    text = base64.b64encode(PNG).decode()
    wrapped = "\n".join(text[i:i + 20] for i in range(0, len(text), 20))
    el = parse_frame(f"<data xmlns='urn:xmpp:avatar:data'>{wrapped}</data>".encode(), 10**6)
    assert AvatarData.from_xml(el).image == PNG


@pytest.mark.parametrize("xml", [
    "<data xmlns='urn:xmpp:avatar:data'>not base64!</data>",
    "<data xmlns='urn:example'>aGk=</data>",
    "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='a' type='image/png'/></metadata>",
    "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='a' bytes='x' type='image/png'/></metadata>",
    "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='1' type='image/png'/></metadata>",
])  # fmt: skip
def test_bad_elements(xml: str) -> None:
    el = parse_frame(xml.encode(), 10**6)
    with pytest.raises(AvatarError):
        if el.tag.endswith("}data"):
            AvatarData.from_xml(el)
        else:
            AvatarMetadata.from_xml(el)


def test_metadata_round_trip_and_the_stored_image() -> None:
    xml = ("<metadata xmlns='urn:xmpp:avatar:metadata'>"
           "<info id='abc' bytes='12345' type='image/gif' width='64' height='64' url='https://example.org/a.gif' />"
           f"<info id='{PNG_ID}' bytes='{len(PNG)}' type='image/png' width='1' height='1' />"
           "</metadata>")  # fmt: skip
    el = parse_frame(xml.encode(), 10**6)
    metadata = AvatarMetadata.from_xml(el)
    assert serialize(metadata.to_xml()) == serialize(el)
    assert metadata.stored == Info(PNG_ID, len(PNG), "image/png", 1, 1)
    unknown_size = parse_frame(b"<metadata xmlns='urn:xmpp:avatar:metadata'><info id='a' bytes='3' type='image/png'"
                               b" width='' height=''/></metadata>", 1000)
    assert AvatarMetadata.from_xml(unknown_size).infos == (Info("a", 3, "image/png"),)
    empty = AvatarMetadata.from_xml(parse_frame(b"<metadata xmlns='urn:xmpp:avatar:metadata'/>", 100))
    assert empty == AvatarMetadata() and empty.stored is None


def test_vcard_photo() -> None:
    vcard = parse_frame(
        b"<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>"
        + base64.encodebytes(PNG) + b"</BINVAL></PHOTO></vCard>", 10**6)
    photo = VCardPhoto.from_vcard(vcard)
    assert photo == VCardPhoto("image/png", PNG) and photo.id == PNG_ID
    other = VCardPhoto("image/gif", b"GIF89a")
    other.put_in(vcard)
    assert VCardPhoto.from_vcard(vcard) == other
    assert [child.tag.rpartition("}")[2] for child in vcard] == ["FN", "PHOTO"]
    remove_photo(vcard)
    assert VCardPhoto.from_vcard(vcard) is None
    extval = parse_frame(b"<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>https://a/b</EXTVAL></PHOTO></vCard>", 1000)
    assert VCardPhoto.from_vcard(extval) is None
    broken = parse_frame(b"<vCard xmlns='vcard-temp'><PHOTO><BINVAL>%%%</BINVAL></PHOTO></vCard>", 1000)
    with pytest.raises(AvatarError):
        VCardPhoto.from_vcard(broken)


@pytest.mark.parametrize(("xml", "photo_hash"), [
    (f"<x xmlns='vcard-temp:x:update'><photo>{PNG_ID}</photo></x>", PNG_ID),
    ("<x xmlns='vcard-temp:x:update'><photo /></x>", ""),
    ("<x xmlns='vcard-temp:x:update' />", None),
])  # fmt: skip
def test_photo_update_round_trip(xml: str, photo_hash: str | None) -> None:
    el = parse_frame(xml.encode(), 1000)
    update = PhotoUpdate.from_xml(el)
    assert update.hash == photo_hash
    assert serialize(update.to_xml()) == serialize(el)
