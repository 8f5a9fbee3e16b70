"""XEP-0353 Jingle Message Initiation: the XEP's examples, the verification device, round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.jingle import Reason
from schnack.xmpp.payloads.jingle_ice import JinglePayloadError
from schnack.xmpp.payloads.jingle_rtp import RtpDescription
from schnack.xmpp.payloads.jmi import JingleMessage, find
from schnack.xmpp.xml import serialize

# XEP-0353 §3.1 (Example 1), §3.2, §3.3, §3.4, §3.5 and §3.6.
PROPOSE = b"""<message from='romeo@montague.example/orchard' to='juliet@capulet.example' type='chat'
         id='ca3cf894-5325-482f-a412-a6e9f832298d' xmlns='jabber:client'>
  <propose xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>
  </propose>
  <store xmlns='urn:xmpp:hints'/>
</message>"""
EXAMPLES = [
    b"<ringing xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'/>",
    b"<proceed xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'/>",
    b"""<reject xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
      <reason xmlns='urn:xmpp:jingle:1'><busy/><text>Busy</text></reason></reject>""",
    b"""<retract xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
      <reason xmlns='urn:xmpp:jingle:1'><cancel/><text>Retracted</text></reason></retract>""",
    b"""<finish xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
      <reason xmlns='urn:xmpp:jingle:1'><success/><text>Success</text></reason>
      <migrated to='989a46a6-f202-4910-a7c3-83c6ba3f3947'/></finish>""",
    b"""<reject xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
      <reason xmlns='urn:xmpp:jingle:1'><expired/></reason><tie-break/></reject>""",
]


def parse(data: bytes) -> JingleMessage:
    return JingleMessage.from_xml(parse_frame(data, 10**6))


def round_trip(message: JingleMessage) -> JingleMessage:
    return parse(serialize(message.to_xml()).encode())


def test_propose_in_a_message() -> None:
    message = find(parse_frame(PROPOSE, 10**6))
    assert message == JingleMessage("propose", "ca3cf894-5325-482f-a412-a6e9f832298d", (RtpDescription("audio"),))
    assert message.media == ("audio",)
    assert round_trip(message) == message


def test_examples_round_trip() -> None:
    parsed = [parse(data) for data in EXAMPLES]
    assert [m.kind for m in parsed] == ["ringing", "proceed", "reject", "retract", "finish", "reject"]
    assert parsed[2].reason == Reason("busy", "Busy")
    assert parsed[4].migrated_to == "989a46a6-f202-4910-a7c3-83c6ba3f3947"
    assert parsed[5].tie_break and not parsed[2].tie_break
    for message in parsed:
        assert round_trip(message) == message


def test_proceed_names_the_verifying_device() -> None:
    proceed = parse(
        b"<proceed xmlns='urn:xmpp:jingle-message:0' id='x'>"
        b"<device xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' id='1234'/></proceed>"
    )
    assert proceed.device == 1234
    assert round_trip(proceed) == proceed


def test_legacy_accept_is_read() -> None:
    """XEP-0353 v0.3 §3.3, which Conversations and Dino still send to their own bare JID."""
    accept = parse(b"<accept xmlns='urn:xmpp:jingle-message:0' id='x'/>")
    assert accept == JingleMessage("accept", "x")


def test_no_jmi_in_a_plain_message() -> None:
    assert find(parse_frame(b"<message xmlns='jabber:client'><body>hi</body></message>", 10**6)) is None


@pytest.mark.parametrize(
    "data",
    [
        b"<propose xmlns='urn:xmpp:jingle-message:0' id='x'/>",
        b"<ringing xmlns='urn:xmpp:jingle-message:0'/>",
        b"<accept xmlns='urn:xmpp:jingle-message:0'/>",
        b"<finish xmlns='urn:xmpp:jingle-message:0' id='x'><migrated/></finish>",
    ],
)
def test_bad_messages(data: bytes) -> None:
    with pytest.raises(JinglePayloadError):
        parse(data)
