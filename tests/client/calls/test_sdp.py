"""Jingle ↔ SDP: SDP text round trips, real offers from Chromium and aiortc, the XEP examples,
aiortc accepting what we write, and property-based round trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from hypothesis import given
from hypothesis import strategies as st

from schnack.client.calls.sdp import (
    RtpContents,
    SdpError,
    SessionDescription,
    candidate_from_sdp,
    candidate_id,
    candidate_to_sdp,
    to_jingle,
    to_sdp,
)
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.jingle import Content, Jingle
from schnack.xmpp.payloads.jingle_ice import Candidate, EncryptedFingerprint, Fingerprint, IceUdpTransport
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

DATA = Path(__file__).parent / "data"
# Captured from Chromium 156.0.8078.114 (Debian bookworm package), headless, for a page that ran
# new RTCPeerConnection(), addTransceiver('audio'), addTransceiver('video'), createOffer() and
# setLocalDescription(), printing localDescription.sdp; it gathered no candidates there.
# The file keeps Chromium's CRLF line ends; normalised here in case a checkout converted them.
CHROMIUM_OFFER = (DATA / "chromium-156-offer.sdp").read_bytes().decode().replace("\r\n", "\n").replace("\n", "\r\n")

# XEP-0167 §6.1 (Example 1) with the XEP-0320 §3 fingerprint, XEP-0338 BUNDLE and rtcp-mux that
# WebRTC needs, and Opus / telephone-event as XEP-0167 §8 lists them.
XEP_INITIATE = b"""<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'
        initiator='romeo@montague.lit/orchard' sid='a73sjjvkla37jfea'>
  <group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'><content name='voice'/></group>
  <content creator='initiator' name='voice'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
      <payload-type id='111' name='opus' clockrate='48000' channels='2'>
        <parameter name='useinbandfec' value='1'/>
      </payload-type>
      <payload-type id='96' name='speex' clockrate='16000'/>
      <payload-type id='0' name='PCMU' clockrate='8000'/>
      <payload-type id='103' name='L16' clockrate='16000' channels='2'/>
      <payload-type id='126' name='telephone-event' clockrate='8000'/>
      <rtcp-mux/>
    </description>
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' pwd='asd88fgpdd777uzjYhagZg' ufrag='8hhy'>
      <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2</fingerprint>
      <candidate component='1' foundation='1' generation='0' id='el0747fg11' ip='10.0.1.1' network='1'
                 port='8998' priority='2130706431' protocol='udp' type='host'/>
      <candidate component='1' foundation='2' generation='0' id='y3s2b30v3r' ip='192.0.2.3' network='1'
                 port='45664' priority='1694498815' protocol='udp' rel-addr='10.0.1.1' rel-port='8998' type='srflx'/>
    </transport>
  </content>
</jingle>"""


def contents_of(jingle: Jingle) -> RtpContents:
    return RtpContents(jingle.contents, jingle.groups)


def through_sdp(contents: RtpContents, writer: str = "initiator") -> RtpContents:
    """Jingle → SDP text → Jingle."""
    return to_jingle(SessionDescription.parse(str(to_sdp(contents, writer))), writer)


def with_derived_ids(contents: RtpContents) -> RtpContents:
    """SDP has no candidate ids: those read from SDP are derived from the candidate."""

    def fix(content: Content) -> Content:
        assert content.transport is not None
        candidates = tuple(replace(c, id=candidate_id(c)) for c in content.transport.candidates)
        return replace(content, transport=replace(content.transport, candidates=candidates))

    return RtpContents(tuple(fix(c) for c in contents.contents), contents.groups)


def test_sdp_text_round_trip() -> None:
    parsed = SessionDescription.parse(CHROMIUM_OFFER)
    assert str(parsed) == CHROMIUM_OFFER
    assert [m.kind for m in parsed.media] == ["audio", "video"]


def test_chromium_offer_to_jingle() -> None:
    contents = to_jingle(SessionDescription.parse(CHROMIUM_OFFER))
    assert contents.groups == (Group("BUNDLE", ("0", "1")),)
    audio, video = contents.contents
    assert (audio.name, audio.creator, audio.senders) == ("0", "initiator", "both")
    assert audio.description is not None and audio.transport is not None
    desc = audio.description
    assert desc.rtcp_mux and desc.extmap_allow_mixed
    opus = desc.payload_types[0]
    assert (opus.id, opus.name, opus.clockrate, opus.channels) == (111, "opus", 48000, 2)
    assert opus.parameters == (Parameter("minptime", "10"), Parameter("useinbandfec", "1"))
    assert opus.feedback == (RtcpFeedback("transport-cc"),)
    assert [pt.name for pt in desc.payload_types] == [
        "opus", "red", "G722", "PCMU", "PCMA", "CN", "telephone-event", "telephone-event",
    ]  # fmt: skip
    assert desc.header_extensions[0] == HeaderExtension(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    assert desc.sources and desc.sources[0].parameters[0].name == "cname"
    fingerprint = audio.transport.fingerprint
    assert fingerprint is not None and fingerprint.hash == "sha-256" and fingerprint.setup == "actpass"
    assert audio.transport.ufrag and audio.transport.pwd
    assert video.description is not None and video.description.source_groups[0].semantics == "FID"
    assert RtcpFeedback("nack", "pli") in video.description.payload_types[0].feedback


def test_chromium_offer_maps_back_to_the_same_jingle() -> None:
    contents = to_jingle(SessionDescription.parse(CHROMIUM_OFFER))
    assert through_sdp(contents) == contents


def test_xep_example_to_sdp_and_back() -> None:
    contents = contents_of(Jingle.from_xml(parse_frame(XEP_INITIATE, 10**6)))
    sdp = to_sdp(contents, session_id=42)
    text = str(sdp)
    for line in (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 96 0 103 126", "a=group:BUNDLE voice", "a=mid:voice",
        "a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1", "a=rtpmap:0 PCMU/8000",
        "a=ice-ufrag:8hhy", "a=ice-pwd:asd88fgpdd777uzjYhagZg", "a=setup:actpass", "a=rtcp-mux",
        "a=fingerprint:sha-256 02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2",
        "a=candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host generation 0 network-id 1",
        "a=candidate:2 1 udp 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998 generation 0 network-id 1",
        "a=sendrecv",
    ):  # fmt: skip
        assert line + "\r\n" in text, line
    assert through_sdp(contents) == with_derived_ids(contents)


RED_INITIATE = b"""<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='r3d'>
  <content creator='initiator' name='0'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
      <payload-type id='111' name='opus' clockrate='48000' channels='2' ptime='120'>
        <parameter name='useinbandfec' value='0'/>
      </payload-type>
      <payload-type id='63' name='red' clockrate='48000' channels='2' ptime='120'>
        <parameter name='' value='111/111'/>
      </payload-type>
    </description>
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' pwd='asd88fgpdd777uzjYhagZg' ufrag='8hhy'/>
  </content>
</jingle>"""


def test_red_payload_type_round_trips() -> None:
    """RFC 2198 redundant Opus as WebRTC offers it (``red/48000/2``, ``a=fmtp:63 111/111``):
    the fmtp has no name=value pairs, so it is one XEP-0167 parameter with the empty name and the
    value (Conversations refuses a parameter without a value); Jingle → SDP → Jingle and SDP →
    Jingle → XML → Jingle → SDP give back what went in."""
    jingle = Jingle.from_xml(parse_frame(RED_INITIATE, 10**6))
    contents = contents_of(jingle)
    assert contents.contents[0].description is not None
    red = contents.contents[0].description.payload_types[1]
    assert red == PayloadType(63, "red", 48000, 2, ptime=120, parameters=(Parameter("", "111/111"),))
    written = jingle.to_xml().find(".//{urn:xmpp:jingle:apps:rtp:1}payload-type[@name='red']/{*}parameter")
    assert written is not None and (written.get("name"), written.get("value")) == ("", "111/111")
    text = str(to_sdp(contents))
    assert "m=audio 9 RTP/AVPF 111 63\r\n" in text
    assert "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n" in text
    assert through_sdp(contents) == contents
    # Chromium's offer: its red reaches the XML and comes back as the same SDP lines.
    chromium = to_jingle(SessionDescription.parse(CHROMIUM_OFFER))
    sent = Jingle("session-initiate", "r3d", contents=chromium.contents, groups=chromium.groups)
    read = Jingle.from_xml(parse_frame(serialize(sent.to_xml()).encode(), 10**6))
    assert read.contents == chromium.contents
    (audio, *_) = str(to_sdp(contents_of(read))).split("m=video")
    assert "a=rtpmap:63 red/48000/2\r\n" in audio and "a=fmtp:63 111/111\r\n" in audio


@pytest.mark.parametrize("parameter", ["<parameter name='111/111'/>", "<parameter value='111/111'/>"])
def test_a_nameless_format_parameter_written_otherwise_is_read(parameter: str) -> None:
    """Other writers put red's ``111/111`` in the name alone, or in the value without a name."""
    initiate = RED_INITIATE.replace(b"<parameter name='' value='111/111'/>", parameter.encode())
    text = str(to_sdp(contents_of(Jingle.from_xml(parse_frame(initiate, 10**6)))))
    assert "a=fmtp:63 111/111\r\n" in text


def test_senders_follow_the_writer() -> None:
    contents = contents_of(Jingle.from_xml(parse_frame(XEP_INITIATE, 10**6)))
    (content,) = contents.contents
    for senders, initiator_writes, responder_writes in (
        ("initiator", "sendonly", "recvonly"), ("responder", "recvonly", "sendonly"), ("none", "inactive", "inactive"),
    ):  # fmt: skip
        one = RtpContents((replace(content, senders=senders),), contents.groups)
        assert f"a={initiator_writes}\r\n" in str(to_sdp(one, "initiator"))
        assert f"a={responder_writes}\r\n" in str(to_sdp(one, "responder"))
        assert through_sdp(one, "responder").contents[0].senders == senders


async def test_aiortc_offer_and_answer_through_jingle() -> None:
    """aiortc's real offer maps to Jingle and back; aiortc accepts our SDP and its answer maps too."""
    # No ICE servers: aiortc would otherwise ask a public STUN server; host candidates are enough.
    caller, callee = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        caller.addTransceiver("audio")
        await caller.setLocalDescription(await caller.createOffer())
        offer_text = caller.localDescription.sdp
        offer = SessionDescription.parse(offer_text)
        assert str(offer) == offer_text.replace("\r\n", "\n").replace("\n", "\r\n")
        offer_jingle = to_jingle(offer, "initiator")
        assert through_sdp(offer_jingle) == offer_jingle
        (content,) = offer_jingle.contents
        assert content.transport is not None and content.transport.candidates, "aiortc gathers host candidates"
        assert content.transport.fingerprint is not None and content.transport.fingerprint.setup == "actpass"

        # The callee only ever sees SDP written from Jingle, as after a session-initiate.
        callee.addTransceiver("audio")
        await callee.setRemoteDescription(RTCSessionDescription(str(to_sdp(offer_jingle, "initiator")), "offer"))
        answer = await callee.createAnswer()
        assert answer is not None
        answer_jingle = to_jingle(SessionDescription.parse(answer.sdp), "responder")
        (accepted,) = answer_jingle.contents
        assert accepted.name == content.name and accepted.creator == "initiator"
        assert accepted.transport is not None and accepted.transport.fingerprint is not None
        assert accepted.transport.fingerprint.setup == "active"
        assert accepted.description is not None
        assert "opus" in [pt.name for pt in accepted.description.payload_types]
        assert through_sdp(answer_jingle, "responder") == answer_jingle
        await caller.setRemoteDescription(RTCSessionDescription(str(to_sdp(answer_jingle, "responder")), "answer"))
        assert caller.signalingState == "stable"
    finally:
        await caller.close()
        await callee.close()


def test_encrypted_fingerprint_must_be_opened_first() -> None:
    contents = contents_of(Jingle.from_xml(parse_frame(XEP_INITIATE, 10**6)))
    (content,) = contents.contents
    assert content.transport is not None
    sealed = replace(
        content.transport, fingerprints=(),
        encrypted_fingerprints=(EncryptedFingerprint("sha-256", "<encrypted xmlns='eu.siacs.conversations.axolotl'/>"),),
    )  # fmt: skip
    with pytest.raises(SdpError, match="decrypt"):
        to_sdp(RtpContents((replace(content, transport=sealed),), contents.groups))


def test_trickled_candidates() -> None:
    line = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 network-id 3"
    candidate = candidate_from_sdp("a=" + line)
    assert candidate is not None
    assert (candidate.type, candidate.ip, candidate.port, candidate.network) == ("srflx", "203.0.113.7", 46154, 3)
    assert candidate_to_sdp(candidate) == line
    assert candidate_from_sdp("candidate:1 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v=1\r\n",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio\r\n",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio \u00b2 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nbogus\r\n",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nt=0 0\r\n",
    ],
)
def test_bad_sdp(text: str) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(text)


@pytest.mark.parametrize(
    "media",
    [
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/fast\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp x 1.2.3.4 5 typ host\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 1 1.2.3.4\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF x\r\na=mid:0\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF \u00b2\r\na=mid:0\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=fingerprint:sha-256\r\n",
    ],
)
def test_unmappable_sdp(media: str) -> None:
    sdp = SessionDescription.parse("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + media)
    with pytest.raises(SdpError):
        to_jingle(sdp)


# -- property-based round trips -------------------------------------------------------------------

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/.", min_size=1, max_size=8)
feedback = st.lists(
    st.builds(RtcpFeedback, tokens.filter(lambda t: t != "trr-int"), st.none() | tokens), max_size=2
).map(tuple)


@st.composite
def payload_types(draw: st.DrawFn, ptime: int | None) -> PayloadType:
    named = draw(st.booleans())
    return PayloadType(
        id=draw(st.integers(0, 127)),
        name=draw(tokens.filter(lambda t: "/" not in t)) if named else None,
        clockrate=draw(st.integers(8000, 96000)) if named else None,
        channels=draw(st.integers(1, 2)) if named else 1,
        ptime=ptime,
        parameters=draw(st.lists(st.builds(Parameter, tokens, tokens), max_size=3).map(tuple)),
        feedback=draw(feedback),
        trr_int=draw(st.none() | st.integers(0, 5000)),
    )


@st.composite
def candidates(draw: st.DrawFn) -> Candidate:
    candidate = Candidate(
        component=draw(st.integers(1, 2)), foundation=draw(tokens), generation=draw(st.integers(0, 3)), id="",
        ip=str(draw(st.ip_addresses())), port=draw(st.integers(0, 65535)), priority=draw(st.integers(0, 2**31)),
        protocol="udp", type=draw(st.sampled_from(["host", "srflx", "relay", "prflx"])),
        network=draw(st.integers(0, 9)), rel_addr=draw(st.none() | st.ip_addresses().map(str)),
        rel_port=draw(st.none() | st.integers(0, 65535)),
    )  # fmt: skip
    return replace(candidate, id=candidate_id(candidate))


@st.composite
def contents(draw: st.DrawFn, writer: str) -> Content:
    ptime = draw(st.none() | st.sampled_from([10, 20, 60]))
    ids = draw(st.lists(st.integers(0, 127), unique=True, max_size=4))
    types = tuple(replace(draw(payload_types(ptime)), id=i) for i in ids)
    ssrcs = draw(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=2))
    description = RtpDescription(
        media=draw(st.sampled_from(["audio", "video"])),
        payload_types=types,
        rtcp_mux=draw(st.booleans()),
        feedback=draw(feedback),
        trr_int=draw(st.none() | st.integers(0, 5000)),
        header_extensions=tuple(
            HeaderExtension(i, draw(tokens), draw(st.sampled_from(["both", "initiator", "responder", "none"])))
            for i in draw(st.lists(st.integers(1, 14), unique=True, max_size=3))
        ),
        extmap_allow_mixed=draw(st.booleans()),
        sources=tuple(
            Source(s, tuple(draw(st.lists(st.builds(Parameter, tokens, tokens), min_size=1, max_size=2)))) for s in ssrcs
        ),
        source_groups=tuple(SourceGroup(draw(tokens), tuple(ssrcs)) for _ in range(draw(st.integers(0, 1)))),
    )
    fingerprint = draw(st.none() | st.builds(
        Fingerprint, st.sampled_from(["sha-256", "sha-1"]), tokens.map(str.upper),
        st.none() | st.sampled_from(["actpass", "active", "passive"]),
    ))  # fmt: skip
    transport = IceUdpTransport(
        draw(st.none() | tokens), draw(st.none() | tokens), tuple(draw(st.lists(candidates(), max_size=3))),
        () if fingerprint is None else (fingerprint,),
    )
    senders = draw(st.sampled_from(["both", "initiator", "responder", "none"]))
    return Content("initiator", "", senders, description=description, transport=transport)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[str, RtpContents]:
    writer = draw(st.sampled_from(["initiator", "responder"]))
    names = draw(st.lists(tokens, unique=True, min_size=1, max_size=3))
    found = tuple(replace(draw(contents(writer)), name=name) for name in names)
    groups = (Group("BUNDLE", tuple(names)),) if draw(st.booleans()) else ()
    return writer, RtpContents(found, groups)


@given(sessions())
def test_any_session_round_trips_through_sdp(session: tuple[str, RtpContents]) -> None:
    writer, rtp = session
    assert through_sdp(rtp, writer) == rtp
