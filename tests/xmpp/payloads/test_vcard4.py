"""XEP-0292 vCard4: the properties mapped from vcard-temp (§11) and written as ``<vcard/>``."""

from __future__ import annotations

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.vcard4 import Names
from schnack.xmpp.xml import serialize


def test_names_from_vcard_temp_to_vcard4_and_back() -> None:
    temp = parse_frame(
        b"<vCard xmlns='vcard-temp'><FN> Alice Liddell </FN><NICKNAME>alice</NICKNAME><NICKNAME>al</NICKNAME>"
        b"<PHOTO><TYPE>image/png</TYPE><BINVAL>iVBO\nRw0K</BINVAL></PHOTO><ORG><ORGNAME>Wonderland</ORGNAME></ORG>"
        b"</vCard>", 10**6)
    names = Names.from_vcard_temp(temp)
    assert names == Names("Alice Liddell", ("alice", "al"), "data:image/png;base64,iVBORw0K")
    vcard = names.to_vcard4()
    assert serialize(vcard) == (
        "<vcard xmlns=\"urn:ietf:params:xml:ns:vcard-4.0\"><fn><text>Alice Liddell</text></fn>"
        "<nickname><text>alice</text></nickname><nickname><text>al</text></nickname>"
        "<photo><uri>data:image/png;base64,iVBORw0K</uri></photo></vcard>"
    )
    assert Names.from_vcard4(parse_frame(serialize(vcard).encode(), 10**6)) == names


def test_empty_and_external_photo() -> None:
    assert Names.from_vcard_temp(parse_frame(b"<vCard xmlns='vcard-temp'/>", 100)) == Names()
    assert serialize(Names().to_vcard4()) == "<vcard xmlns=\"urn:ietf:params:xml:ns:vcard-4.0\"/>"
    ext = parse_frame(b"<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>https://a/b.png</EXTVAL></PHOTO></vCard>", 1000)
    assert Names.from_vcard_temp(ext).photo == "https://a/b.png"


def test_fill_vcard_temp_adds_only_what_it_lacks() -> None:
    temp = parse_frame(b"<vCard xmlns='vcard-temp'><NICKNAME>kept</NICKNAME></vCard>", 1000)
    Names("Alice", ("alice", "al"), "data:image/png;base64,iVBORw0K").fill_vcard_temp(temp)
    assert serialize(temp) == (
        "<vCard xmlns=\"vcard-temp\"><NICKNAME>kept</NICKNAME><FN>Alice</FN>"
        "<PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0K</BINVAL></PHOTO></vCard>"
    )
    external = parse_frame(b"<vCard xmlns='vcard-temp'/>", 100)
    Names(photo="https://example.org/a.png").fill_vcard_temp(external)
    assert serialize(external) == (
        "<vCard xmlns=\"vcard-temp\"><PHOTO><EXTVAL>https://example.org/a.png</EXTVAL></PHOTO></vCard>"
    )
    # A data: URI that is not base64 has no vcard-temp form.
    plain = parse_frame(b"<vCard xmlns='vcard-temp'/>", 100)
    Names(photo="data:,hello").fill_vcard_temp(plain)
    assert len(plain) == 0
