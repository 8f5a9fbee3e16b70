"""XEP-0166 Jingle: the XEPs' session-initiate, session-info and terminate examples, errors, round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.jingle import (
    Content,
    Info,
    Jingle,
    Reason,
    error_condition,
    jingle_error,
)
from schnack.xmpp.payloads.jingle_ice import IceUdpTransport, JinglePayloadError
from schnack.xmpp.payloads.jingle_rtp import Group, RtpDescription
from schnack.xmpp.xml import serialize

# XEP-0167 §6.1 (Example 1): an audio session-initiate over ICE-UDP, with a XEP-0338 group.
INITIATE = b"""<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'
        initiator='romeo@montague.lit/orchard' sid='a73sjjvkla37jfea'>
  <group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'><content name='voice'/></group>
  <content creator='initiator' name='voice'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
      <payload-type id='96' name='speex' clockrate='16000'/>
      <payload-type id='97' name='speex' clockrate='8000'/>
      <payload-type id='18' name='G729'/>
      <payload-type id='0' name='PCMU'/>
      <payload-type id='103' name='L16' clockrate='16000' channels='2'/>
      <payload-type id='98' name='x-ISAC' clockrate='8000'/>
    </description>
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' pwd='asd88fgpdd777uzjYhagZg' ufrag='8hhy'>
      <candidate component='1' foundation='1' generation='0' id='el0747fg11' ip='10.0.1.1' network='1'
                 port='8998' priority='2130706431' protocol='udp' type='host'/>
    </transport>
  </content>
</jingle>"""

# XEP-0166 §6.7 (Example 12) and XEP-0167 §7.2 (Example 13).
TERMINATE = b"""<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='a73sjjvkla37jfea'>
  <reason><success/><text>Sorry, gotta go!</text></reason>
</jingle>"""
RINGING = b"""<jingle xmlns='urn:xmpp:jingle:1' action='session-info' initiator='romeo@montague.lit/orchard'
        sid='a73sjjvkla37jfea'><ringing xmlns='urn:xmpp:jingle:apps:rtp:info:1'/></jingle>"""
# XEP-0166 §7.4 (Example 22).
ALTERNATIVE = b"""<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='a73sjjvkla37jfea'>
  <reason><alternative-session><sid>b84tkkwlmb48kgfb</sid></alternative-session></reason>
</jingle>"""


def parse(data: bytes) -> Jingle:
    return Jingle.from_xml(parse_frame(data, 10**6))


def round_trip(jingle: Jingle) -> Jingle:
    return parse(serialize(jingle.to_xml()).encode())


def test_session_initiate_example() -> None:
    jingle = parse(INITIATE)
    assert (jingle.action, jingle.sid, jingle.initiator) == (
        "session-initiate", "a73sjjvkla37jfea", "romeo@montague.lit/orchard",
    )  # fmt: skip
    (content,) = jingle.contents
    assert (content.creator, content.name, content.senders) == ("initiator", "voice", "both")
    assert content.description is not None and len(content.description.payload_types) == 6
    assert content.transport is not None and content.transport.ufrag == "8hhy"
    assert jingle.groups == (Group("BUNDLE", ("voice",)),)
    assert round_trip(jingle) == jingle


def test_terminate_and_info_examples() -> None:
    terminate = parse(TERMINATE)
    assert terminate.reason == Reason("success", "Sorry, gotta go!")
    ringing = parse(RINGING)
    assert ringing.info == Info("{urn:xmpp:jingle:apps:rtp:info:1}ringing")
    alternative = parse(ALTERNATIVE)
    assert alternative.reason == Reason("alternative-session", alternative_sid="b84tkkwlmb48kgfb")
    for jingle in (terminate, ringing, alternative):
        assert round_trip(jingle) == jingle


def test_mute_info_keeps_its_attributes() -> None:
    mute = Jingle("session-info", "s1", info=Info("{urn:xmpp:jingle:apps:rtp:info:1}mute", (("creator", "initiator"), ("name", "voice"))))
    assert round_trip(mute) == mute


def test_unknown_application_and_transport_are_named() -> None:
    jingle = parse(
        b"<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='x'>"
        b"<content creator='initiator' name='file'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/>"
        b"<transport xmlns='urn:xmpp:jingle:transports:s5b:1'/></content></jingle>"
    )
    (content,) = jingle.contents
    assert content.description is None and content.other_description == "urn:xmpp:jingle:apps:file-transfer:5"
    assert content.transport is None and content.other_transport == "urn:xmpp:jingle:transports:s5b:1"
    assert round_trip(jingle) == jingle


def test_content_with_everything() -> None:
    jingle = Jingle(
        "content-add", "sid", contents=(
            Content("responder", "v", "initiator", "session", RtpDescription("video"), IceUdpTransport("u", "p")),
        ),
    )  # fmt: skip
    assert round_trip(jingle) == jingle


@pytest.mark.parametrize(
    "data",
    [
        b"<jingle xmlns='urn:xmpp:jingle:1' action='session-dance' sid='x'/>",
        b"<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'/>",
        b"<jingle xmlns='urn:xmpp:jingle:1' sid='x'/>",
        b"<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='x'><reason><nope/></reason></jingle>",
        b"<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='x'><content name='a' creator='x'/></jingle>",
        b"<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='x'><content creator='initiator'/></jingle>",
        b"<jingle xmlns='urn:xmpp:jingle:0' action='session-initiate' sid='x'/>",
    ],
)
def test_bad_jingle(data: bytes) -> None:
    with pytest.raises(JinglePayloadError):
        parse(data)


def test_errors_carry_the_jingle_condition() -> None:
    err = jingle_error("unknown-session")
    el = err.to_xml()
    assert err.condition == "item-not-found" and err.type == "cancel"
    assert error_condition(el) == "unknown-session"
    assert serialize(el) == (
        '<error xmlns="jabber:client" type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
        '<unknown-session xmlns="urn:xmpp:jingle:errors:1"/></error>'
    )
    assert jingle_error("out-of-order").condition == "unexpected-request"
    assert jingle_error("tie-break").condition == "conflict"
    info = jingle_error("unsupported-info")
    assert (info.condition, info.type) == ("feature-not-implemented", "modify")
