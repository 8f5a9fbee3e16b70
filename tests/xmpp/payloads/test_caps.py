"""XEP-0115 entity capabilities: the verification string against the XEP's worked examples."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.caps import Caps, CapsError, compute_ver, verification_string
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.disco import DiscoInfo, Identity

FEATURES = (
    "http://jabber.org/protocol/muc",
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/disco#items",
)


def test_simple_example_5_2() -> None:
    info = DiscoInfo((Identity("client", "pc", "Exodus 0.9.1"),), FEATURES)
    assert verification_string(info) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
        "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
    )
    assert compute_ver(info) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_complex_example_5_3() -> None:
    xml = """<query xmlns='http://jabber.org/protocol/disco#info'>
      <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
      <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
      <feature var='http://jabber.org/protocol/caps'/>
      <feature var='http://jabber.org/protocol/disco#info'/>
      <feature var='http://jabber.org/protocol/disco#items'/>
      <feature var='http://jabber.org/protocol/muc'/>
      <x xmlns='jabber:x:data' type='result'>
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
        <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>
        <field var='os'><value>Mac</value></field>
        <field var='os_version'><value>10.5.1</value></field>
        <field var='software'><value>Psi</value></field>
        <field var='software_version'><value>0.11</value></field>
      </x>
    </query>"""
    info = DiscoInfo.from_xml(parse_frame(xml.encode(), 10**6))
    assert verification_string(info) == (
        "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
        "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
        "http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<"
        "os_version<10.5.1<software<Psi<software_version<0.11<"
    )
    assert compute_ver(info) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_order_of_input_does_not_matter() -> None:
    form_a = DataForm(
        "result", (Field("FORM_TYPE", "hidden", values=("urn:a",)), Field("z", values=("2", "1")))
    )
    form_b = DataForm("result", (Field("FORM_TYPE", "hidden", values=("urn:b",)),))
    one = DiscoInfo((Identity("a", "b"), Identity("a", "a")), ("y", "x"), (form_b, form_a))
    two = DiscoInfo((Identity("a", "a"), Identity("a", "b")), ("x", "y"), (form_a, form_b))
    assert verification_string(one) == verification_string(two) == "a/a//<a/b//<x<y<urn:a<z<1<2<urn:b<"


def test_forms_without_form_type_are_ignored() -> None:
    plain = DiscoInfo((Identity("a", "b"),), ("x",))
    untyped = DiscoInfo((Identity("a", "b"),), ("x",), (DataForm("result", (Field("k", values=("v",)),)),))
    assert compute_ver(untyped) == compute_ver(plain)


def test_other_hashes() -> None:
    info = DiscoInfo((Identity("client", "pc", "Exodus 0.9.1"),), FEATURES)
    assert len(compute_ver(info, "sha-256")) == 44
    with pytest.raises(CapsError):
        compute_ver(info, "md4")


def test_caps_element_round_trip() -> None:
    caps = Caps("https://schnack.im", "QgayPKawpkPSDYmwT/WM94uAlu0=")
    assert caps.disco_node == "https://schnack.im#QgayPKawpkPSDYmwT/WM94uAlu0="
    assert Caps.from_xml(caps.to_xml()) == caps
    el = parse_frame(
        b"<c xmlns='http://jabber.org/protocol/caps' hash='sha-256' node='n' ver='v'/>", 10**6
    )
    assert Caps.from_xml(el) == Caps("n", "v", "sha-256")


@pytest.mark.parametrize(
    "xml",
    [
        b"<c xmlns='http://jabber.org/protocol/caps' node='n' ver='v'/>",
        b"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' ver='v'/>",
        b"<c xmlns='urn:other' hash='sha-1' node='n' ver='v'/>",
    ],
)
def test_invalid_caps(xml: bytes) -> None:
    with pytest.raises(CapsError):
        Caps.from_xml(parse_frame(xml, 10**6))
