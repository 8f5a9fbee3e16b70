"""XEP-0167 RTP descriptions with XEP-0293, 0294, 0338 and 0339: the XEPs' examples and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.jingle_ice import JinglePayloadError
from schnack.xmpp.payloads.jingle_rtp import (
    Group,
    HeaderExtension,
    Parameter,
    PayloadType,
    RtcpFeedback,
    RtpDescription,
    Source,
    SourceGroup,
)
from schnack.xmpp.xml import serialize

# XEP-0167 §6.1 (Example 1), with Opus and telephone-event as WebRTC offers them, XEP-0293 §3
# feedback, XEP-0294 §3 header extensions and XEP-0339 §3 sources added.
DESCRIPTION = b"""<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
  <payload-type id='111' name='opus' clockrate='48000' channels='2'>
    <parameter name='minptime' value='10'/>
    <parameter name='useinbandfec' value='1'/>
    <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='transport-cc'/>
  </payload-type>
  <payload-type id='96' name='speex' clockrate='16000'/>
  <payload-type id='0' name='PCMU'/>
  <payload-type id='103' name='L16' clockrate='16000' channels='2'/>
  <payload-type id='126' name='telephone-event' clockrate='8000'>
    <parameter name='events' value='0-15'/>
  </payload-type>
  <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='nack' subtype='pli'/>
  <rtcp-fb-trr-int xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' value='100'/>
  <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1' uri='urn:ietf:params:rtp-hdrext:ssrc-audio-level'/>
  <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='2' uri='urn:ietf:params:rtp-hdrext:toffset' senders='initiator'/>
  <extmap-allow-mixed xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0'/>
  <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='1656081975'>
    <parameter name='cname' value='Yv/wvbCdsDW2Prgd'/>
    <parameter name='msid' value='MLTJKIHilGn71fNQoszkQ4jlPTuS5vJyKVIv MLTJKIHilGn71fNQoszkQ4jlPTuS5vJyKVIva0'/>
  </source>
  <ssrc-group xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' semantics='FID'>
    <source ssrc='2301230316'/>
    <source ssrc='386328120'/>
  </ssrc-group>
  <rtcp-mux/>
</description>"""


def parse(data: bytes) -> RtpDescription:
    return RtpDescription.from_xml(parse_frame(data, 10**6))


def round_trip(desc: RtpDescription) -> RtpDescription:
    return parse(serialize(desc.to_xml()).encode())


def test_xep_example() -> None:
    desc = parse(DESCRIPTION)
    assert desc.media == "audio" and desc.rtcp_mux and desc.extmap_allow_mixed
    opus, speex, pcmu, l16, dtmf = desc.payload_types
    assert opus == PayloadType(
        111, "opus", 48000, 2, parameters=(Parameter("minptime", "10"), Parameter("useinbandfec", "1")),
        feedback=(RtcpFeedback("transport-cc"),),
    )  # fmt: skip
    assert (speex.clockrate, pcmu.name, pcmu.clockrate, l16.channels) == (16000, "PCMU", None, 2)
    assert dtmf.parameters == (Parameter("events", "0-15"),)
    assert desc.feedback == (RtcpFeedback("nack", "pli"),) and desc.trr_int == 100
    assert desc.header_extensions == (
        HeaderExtension(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        HeaderExtension(2, "urn:ietf:params:rtp-hdrext:toffset", "initiator"),
    )
    assert desc.sources[0].ssrc == 1656081975 and desc.sources[0].parameters[0] == Parameter("cname", "Yv/wvbCdsDW2Prgd")
    assert desc.source_groups == (SourceGroup("FID", (2301230316, 386328120)),)
    assert round_trip(desc) == desc


def test_group_xep_0338_example() -> None:
    el = parse_frame(
        b"<group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'>"
        b"<content name='voice'/><content name='webcam'/></group>", 10**6
    )
    group = Group.from_xml(el)
    assert group == Group("BUNDLE", ("voice", "webcam"))
    assert Group.from_xml(parse_frame(serialize(group.to_xml()).encode(), 10**6)) == group


@pytest.mark.parametrize(
    "child",
    [
        "<payload-type id='200' name='opus'/>",
        "<payload-type name='opus'/>",
        "<payload-type id='96' channels='0'/>",
        "<payload-type id='96'><parameter/></payload-type>",
        "<payload-type id='96'><parameter name='' value=''/></payload-type>",
        "<rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1'/>",
        "<rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1' uri='x' senders='all'/>",
        "<source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='-1'/>",
    ],
)
def test_bad_descriptions(child: str) -> None:
    with pytest.raises(JinglePayloadError):
        parse(f"<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>{child}</description>".encode())


def test_description_needs_media() -> None:
    with pytest.raises(JinglePayloadError):
        parse(b"<description xmlns='urn:xmpp:jingle:apps:rtp:1'/>")


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=10)
parameters = st.lists(st.builds(Parameter, names, names | st.none()), max_size=3).map(tuple)
feedback = st.lists(st.builds(RtcpFeedback, names, names | st.none()), max_size=2).map(tuple)
payload_types = st.builds(
    PayloadType, st.integers(0, 127), names | st.none(), st.none() | st.integers(8000, 96000),
    st.integers(1, 2), st.none() | st.integers(10, 120), st.none() | st.integers(10, 120), parameters, feedback,
    st.none() | st.integers(0, 1000),
)  # fmt: skip


@given(
    st.builds(
        RtpDescription,
        st.sampled_from(["audio", "video"]),
        st.lists(payload_types, max_size=4).map(tuple),
        st.none() | st.integers(0, 2**32 - 1),
        st.booleans(),
        feedback,
        st.none() | st.integers(0, 1000),
        st.lists(st.builds(HeaderExtension, st.integers(1, 14), names, st.sampled_from(["both", "initiator"])), max_size=2).map(tuple),
        st.booleans(),
        st.lists(st.builds(Source, st.integers(0, 2**32 - 1), parameters), max_size=2).map(tuple),
        st.lists(st.builds(SourceGroup, names, st.lists(st.integers(0, 2**32 - 1), max_size=2).map(tuple)), max_size=2).map(tuple),
    )
)
def test_any_description_round_trips(desc: RtpDescription) -> None:
    assert round_trip(desc) == desc
