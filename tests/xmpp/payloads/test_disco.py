"""XEP-0030 disco payloads: parsing, building and round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.disco import DiscoError, DiscoInfo, DiscoItem, DiscoItems, Identity
from schnack.xmpp.xml import serialize

INFO = """<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
    <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
  </x>
</query>""".encode()


def test_parse_info() -> None:
    info = DiscoInfo.from_xml(parse_frame(INFO, 10**6))
    assert info.node == "http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w="
    assert info.identities == (
        Identity("client", "pc", "Psi 0.11", "en"),
        Identity("client", "pc", "Ψ 0.11", "el"),
    )
    assert info.features == ("http://jabber.org/protocol/caps", "http://jabber.org/protocol/muc")
    (form,) = info.forms
    assert form.form_type == "urn:xmpp:dataforms:softwareinfo"
    assert form.value("ip_version") == "ipv4"


def test_info_round_trip() -> None:
    info = DiscoInfo.from_xml(parse_frame(INFO, 10**6))
    assert DiscoInfo.from_xml(parse_frame(serialize(info.to_xml()).encode(), 10**6)) == info
    built = DiscoInfo(
        (Identity("server", "im", "schnack"),),
        ("a", "b"),
        (DataForm("result", (Field("FORM_TYPE", "hidden", values=("urn:x",)),)),),
    )
    assert DiscoInfo.from_xml(parse_frame(serialize(built.to_xml()).encode(), 10**6)) == built


def test_items_round_trip() -> None:
    xml = (
        b"<query xmlns='http://jabber.org/protocol/disco#items' node='n'>"
        b"<item jid='conference.localhost' name='Rooms'/><item jid='alice@localhost' node='urn:x'/></query>"
    )
    items = DiscoItems.from_xml(parse_frame(xml, 10**6))
    assert items == DiscoItems(
        (DiscoItem("conference.localhost", "Rooms"), DiscoItem("alice@localhost", None, "urn:x")), "n"
    )
    assert DiscoItems.from_xml(parse_frame(serialize(items.to_xml()).encode(), 10**6)) == items
    assert DiscoItems.from_xml(DiscoItems().to_xml()) == DiscoItems()


@pytest.mark.parametrize(
    ("xml", "kind"),
    [
        (b"<query xmlns='http://jabber.org/protocol/disco#info'><identity type='pc'/></query>", DiscoInfo),
        (b"<query xmlns='http://jabber.org/protocol/disco#info'><identity category='c'/></query>", DiscoInfo),
        (b"<query xmlns='http://jabber.org/protocol/disco#info'><feature/></query>", DiscoInfo),
        (b"<query xmlns='http://jabber.org/protocol/disco#items'/>", DiscoInfo),
        (b"<query xmlns='http://jabber.org/protocol/disco#items'><item name='x'/></query>", DiscoItems),
        (b"<query xmlns='http://jabber.org/protocol/disco#info'/>", DiscoItems),
    ],
)
def test_invalid(xml: bytes, kind: type[DiscoInfo] | type[DiscoItems]) -> None:
    with pytest.raises(DiscoError):
        kind.from_xml(parse_frame(xml, 10**6))
