"""The media engine alone: two peer connections on loopback sockets exchange our Opus audio, the
encoder follows the negotiated parameters, and the statistics count what went over the wire."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aioice import Candidate as IceCandidate
from aioice import Connection, stun
from aiortc.rtp import RtpPacket

from schnack.client.calls.decoder import packet_samples
from schnack.client.calls.media import (
    DATA_SAVER,
    NORMAL,
    EncoderSettings,
    LocalCandidate,
    MediaSession,
    OpusTrack,
    ice_servers,
    opus_of,
    recheck_at_once,
    red_of,
    with_profile,
)
from schnack.client.calls.sdp import RtpContents
from schnack.xmpp.payloads.extdisco import Service
from schnack.xmpp.payloads.jingle import Content
from schnack.xmpp.payloads.jingle_rtp import HeaderExtension, Parameter, PayloadType, RtpDescription

from .audio import dominant, loud_part, read_wav, write_tone

SAVER = EncoderSettings(12000, 120, False, True, playback_rate=12000, keepalive=1.0)


def opus(*params: tuple[str, str], ptime: int | None = None) -> PayloadType:
    return PayloadType(111, "opus", 48000, 2, ptime=ptime, parameters=tuple(Parameter(k, v) for k, v in params))


def test_settings_follow_the_peer() -> None:
    assert EncoderSettings.negotiate(NORMAL, None) == EncoderSettings(48000, 40, True, True)
    saver = opus(("maxaveragebitrate", "12000"), ("usedtx", "1"), ("useinbandfec", "0"), ("maxplaybackrate", "12000"),
                 ptime=120)  # fmt: skip
    # The peer's data saver bounds our bitrate, frame and bandwidth; the keepalive is our own.
    assert EncoderSettings.negotiate(NORMAL, saver) == EncoderSettings(12000, 120, False, True, playback_rate=12000)
    assert EncoderSettings.negotiate(DATA_SAVER, opus(("useinbandfec", "1"))) == SAVER
    assert SAVER.cutoff == 6000 and EncoderSettings().cutoff == 8000
    assert EncoderSettings.negotiate(NORMAL, opus(("maxplaybackrate", "8000"))).cutoff == 4000
    assert EncoderSettings.negotiate(NORMAL, opus(("maxplaybackrate", "48000"))).cutoff == 8000
    # A ptime no Opus frame has is rounded to one that exists; a silly bitrate is clamped.
    assert EncoderSettings.negotiate(NORMAL, opus(("maxaveragebitrate", "12"), ptime=50)).frame_ms in (40, 60)
    assert EncoderSettings.negotiate(NORMAL, opus(("maxaveragebitrate", "12"))).bitrate == 6000
    assert EncoderSettings.negotiate(NORMAL, opus(("maxaveragebitrate", "x"))).bitrate == 48000
    # Packets longer than 60 ms are joined from frames of 60 ms at most (RFC 6716 §3.2).
    assert (SAVER.encode_ms, EncoderSettings().encode_ms) == (60, 40)
    assert [replace(SAVER, frame_ms=ms).encode_ms for ms in (40, 80, 100)] == [40, 40, 20]


def test_data_saver_packets_hold_two_60_ms_frames_and_skip_silence(tmp_path: Path) -> None:
    """120 ms packets joined from two 60 ms frames (RFC 6716 §3.2.5: TOC code 2 or 3, one
    configuration); in silence the first frame and then one a second (RFC 7587 §3.1.3)."""
    track = OpusTrack(None)
    track.configure(SAVER)
    tone = read_wav(write_tone(tmp_path / "t.wav", 440, 0.24)).tobytes()
    packets = track.encode(tone[: 5760 * 2]) + track.encode(tone[5760 * 2 :])
    assert [p.timestamp for p in packets] == [0, 5760] and not any(p.red for p in packets)
    for _, payload, _ in packets:
        assert payload[0] & 0x03 in (2, 3) and packet_samples(payload) == 5760
    silence = bytes(5760 * 2)
    sent = [i for i in range(19) if track.encode(silence)]
    # Eight frames after one sent are 0.96 s: the ninth is the first a second later.
    assert sent == [0, 9, 18] and track.packets_suppressed == 16


def test_profile_written_into_the_description() -> None:
    mid = HeaderExtension(1, "urn:ietf:params:rtp-hdrext:sdes:mid")
    content = Content("initiator", "0", description=RtpDescription("audio", (opus(("minptime", "10")), PayloadType(0, "PCMU", 8000)),
                                                                   header_extensions=(mid,)))  # fmt: skip
    # The normal profile keeps the header extensions; the data saver offers none (8 bytes a packet).
    (normal,) = with_profile(RtpContents((content,)), NORMAL).contents
    assert normal.description is not None and normal.description.header_extensions == (mid,)
    (written,) = with_profile(RtpContents((content,)), DATA_SAVER).contents
    assert written.description is not None and written.description.header_extensions == ()
    pt = opus_of(written)
    assert pt is not None and pt.ptime == 120
    params = {p.name: p.value for p in pt.parameters}
    assert params == {"minptime": "10", "useinbandfec": "0", "usedtx": "1", "stereo": "0", "sprop-stereo": "0",
                      "maxaveragebitrate": "12000", "maxplaybackrate": "12000"}
    assert written.description is not None and written.description.payload_types[1] == PayloadType(0, "PCMU", 8000, ptime=120)


def test_red_is_offered_for_our_opus() -> None:
    """RFC 2198 §5: our ``red`` names our Opus payload type for its blocks, in every profile;
    a peer's red counts only if its blocks are Opus."""
    red = PayloadType(63, "red", 48000, 2)
    content = Content("initiator", "0", description=RtpDescription("audio", (opus(), red, PayloadType(0, "PCMU", 8000))))
    for profile in (NORMAL, DATA_SAVER):
        (written,) = with_profile(RtpContents((content,)), profile).contents
        assert red_of(written) == replace(red, parameters=(Parameter("", "111/111"),), ptime=profile.ptime)
    assert red_of(content) == red  # no fmtp: RFC 2198 leaves it optional
    # The fmtp as a value without a name, or (as some write it) as a name alone.
    for other in (Parameter("", "0/0"), Parameter("", "111/0"), Parameter("0/0"), Parameter("111/0")):
        listed = replace(red, parameters=(other,))
        assert red_of(replace(content, description=RtpDescription("audio", (opus(), listed)))) is None
    legacy = replace(red, parameters=(Parameter("111/111"),))
    assert red_of(replace(content, description=RtpDescription("audio", (opus(), legacy)))) == legacy
    assert red_of(replace(content, description=RtpDescription("audio", (red,)))) is None


def test_ice_servers_from_extdisco() -> None:
    services = [
        Service("turn", "turn.example.org", 3478, "tcp", "1:a@example.org", "pw"),
        Service("turn", "turn.example.org", 3478, "udp", "1:a@example.org", "pw"),
        Service("stun", "::1", 3478, "udp"),
        Service("turns", "turn.example.org", 5349, "tcp", "1:a@example.org", "pw"),
        Service("turn", "nocreds.example.org", 3478, "udp"),
    ]
    urls = [s.urls for s in ice_servers(services)]
    assert urls == ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp", "stun:[::1]:3478"]
    assert ice_servers([]) == []


async def connect(caller: MediaSession, callee: MediaSession) -> None:
    offer = await caller.offer()
    answer = await callee.answer(offer)
    await caller.accepted(answer)
    async with asyncio.timeout(60):
        await asyncio.gather(caller.connected.wait(), callee.connected.wait())


async def test_audio_both_ways(tmp_path: Path) -> None:
    caller = MediaSession(source=write_tone(tmp_path / "a.wav", 440, 2.0), sink=tmp_path / "a-heard.wav")
    callee = MediaSession(source=write_tone(tmp_path / "b.wav", 1000, 2.0), sink=tmp_path / "b-heard.wav")
    try:
        assert caller.config.iceServers == []
        await connect(caller, callee)
        async with asyncio.timeout(60):
            await asyncio.gather(caller.sink.heard(2.0), callee.sink.heard(2.0))
    finally:
        a, b = await caller.close(), await callee.close()
    heard_by_caller = loud_part(read_wav(tmp_path / "a-heard.wav"))
    heard_by_callee = loud_part(read_wav(tmp_path / "b-heard.wav"))
    assert len(heard_by_caller) > 48000 and len(heard_by_callee) > 48000
    assert dominant(heard_by_caller, (440, 1000)) == 1000
    assert dominant(heard_by_callee, (440, 1000)) == 440
    assert a.bytes_sent > 0 and a.bytes_received > 0 and a.packets_received > 0
    assert b.packets_sent > 0 and a.duration > 0


async def test_without_stun_or_turn_every_candidate_is_in_the_description() -> None:
    """Host candidates only: the offer and the answer carry every candidate gathered, and none
    trickles afterwards (XEP-0176 §5.3 is for the STUN and TURN servers' candidates)."""
    trickled: list[LocalCandidate] = []
    caller, callee = MediaSession(on_candidate=trickled.append), MediaSession(on_candidate=trickled.append)
    try:
        offer = await caller.offer()
        answer = await callee.answer(offer)
        await caller.accepted(answer)
        async with asyncio.timeout(60):
            await asyncio.gather(caller.connected.wait(), callee.connected.wait())
        for media, contents in ((caller, offer), (callee, answer)):
            described = {(c.ip, c.port, c.type) for content in contents.contents if content.transport is not None
                         for c in content.transport.candidates}  # fmt: skip
            gatherer = media.pc.getTransceivers()[0].sender.transport.transport.iceGatherer
            assert described and described == {(c.ip, c.port, c.type) for c in gatherer.getLocalCandidates()}
    finally:
        await caller.close()
        await callee.close()
    assert trickled == []


class ScriptedPeer(asyncio.DatagramProtocol):
    """The peer's side of ICE written out on a UDP socket: what arrives is queued, nothing is
    answered unless the test says so."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[stun.Message] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.arrived.put_nowait(stun.parse_message(data))

    async def request(self) -> stun.Message:
        """The next Binding request that arrives (responses to the peer's own are skipped)."""
        while (message := await self.arrived.get()).message_class is not stun.Class.REQUEST:
            continue
        return message


async def test_a_check_from_the_peer_repeats_ours_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8445 §7.3.1.4: the peer's check on a pair whose own check is in progress (its first
    request lost, as to a TURN relay without a permission yet) sends that request again at once,
    the same transaction; aioice's retransmission timer is pushed out to a minute here, so the
    copy can only come from the peer's check."""
    monkeypatch.setattr(stun, "RETRY_RTO", 60.0)
    ours = Connection(ice_controlling=True, use_ipv6=False)
    recheck_at_once(ours)
    await ours.gather_candidates()
    local = ours.local_candidates[0]
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(ScriptedPeer, local_addr=(local.host, 0))
    address = transport.get_extra_info("sockname")
    ours.remote_username, ours.remote_password = "peer", "p" * 22
    await ours.add_remote_candidate(IceCandidate(foundation="1", component=1, transport="udp", priority=2130706431,
                                                 host=address[0], port=address[1], type="host"))  # fmt: skip
    connecting = asyncio.ensure_future(ours.connect())
    try:
        async with asyncio.timeout(30):
            first = await peer.request()  # lost: not answered
            check = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
            check.attributes["USERNAME"] = f"{ours.local_username}:peer"
            check.attributes["PRIORITY"] = 1845501695
            check.attributes["ICE-CONTROLLED"] = 1
            check.add_message_integrity(ours.local_password.encode())
            check.add_fingerprint()
            transport.sendto(bytes(check), (local.host, local.port))
            again = await peer.request()
        assert again.transaction_id == first.transaction_id
        assert again.attributes["USERNAME"] == f"peer:{ours.local_username}"
    finally:
        connecting.cancel()
        await ours.close()
        transport.close()


async def test_data_saver_sends_fewer_bytes(tmp_path: Path) -> None:
    """Three seconds of tone then silence: data saver sends longer frames at a lower bitrate and
    suppresses the silence (DTX) once it no longer protects the start of the call."""
    sent = {}
    for profile in (NORMAL, DATA_SAVER):
        caller = MediaSession(profile=profile, source=write_tone(tmp_path / "t.wav", 440, 1.5))
        callee = MediaSession(profile=profile)
        try:
            # The data saver's lean packets from the start: as after two receiver reports without loss.
            caller.peer_lost(0.0)
            caller.peer_lost(0.0)
            await connect(caller, callee)
            assert caller.track.settings == EncoderSettings.negotiate(profile, None) or profile is DATA_SAVER
            async with asyncio.timeout(60):
                await callee.sink.heard(3.0)
        finally:
            stats = await caller.close()
            await callee.close()
        sent[profile.name] = stats.bytes_sent / stats.duration
        if profile is DATA_SAVER:
            # The silence not sent is in the recording all the same.
            assert caller.track.packets_suppressed > 0 and callee.sink.filled > 0
    assert sent["data-saver"] < sent["normal"] / 2, sent


async def test_data_saver_prefers_the_short_srtp_tag() -> None:
    """RFC 5764 §4.1.2: two data savers agree on the 4-byte tag (12 bytes a packet less than
    AES-GCM); with a peer that does not offer it, the call goes on with aiortc's own choice."""
    for caller_profile, callee_profile, expected in ((DATA_SAVER, DATA_SAVER, "SRTP_AES128_CM_SHA1_32"),
                                                      (DATA_SAVER, NORMAL, "SRTP_AEAD_AES_256_GCM")):  # fmt: skip
        caller, callee = MediaSession(profile=caller_profile), MediaSession(profile=callee_profile)
        try:
            await connect(caller, callee)
            assert caller.srtp_profile == callee.srtp_profile == expected
        finally:
            await caller.close()
            await callee.close()


def tamper(contents: RtpContents) -> RtpContents:
    """The description with another certificate's fingerprint, as a man in the middle would write it."""
    out = []
    for content in contents.contents:
        assert content.transport is not None and content.transport.fingerprints
        fingerprints = tuple(replace(f, value=":".join(["AB"] * 32)) for f in content.transport.fingerprints)
        out.append(replace(content, transport=replace(content.transport, fingerprints=fingerprints)))
    return RtpContents(tuple(out), contents.groups)


async def test_a_tampered_fingerprint_fails_the_call() -> None:
    caller, callee = MediaSession(), MediaSession()
    try:
        answer = await callee.answer(tamper(await caller.offer()))
        await caller.accepted(answer)
        async with asyncio.timeout(60):
            await callee.failed.wait()
        assert not callee.connected.is_set() and not callee.fingerprint_ok
    finally:
        await caller.close()
        await callee.close()


async def test_switch_to_data_saver_mid_call(tmp_path: Path) -> None:
    """The sender re-opens its encoder with the data saver settings; audio keeps flowing."""
    caller = MediaSession(source=write_tone(tmp_path / "a.wav", 440, 4.0))
    callee = MediaSession(sink=tmp_path / "heard.wav")
    try:
        await connect(caller, callee)
        async with asyncio.timeout(60):
            await callee.sink.heard(1.0)
        sent_before = caller.track.packets_sent
        # Two receiver reports without loss: the data saver need not protect the call.
        caller.peer_lost(0.0)
        caller.peer_lost(0.0)
        caller.set_profile(DATA_SAVER)
        assert caller.track.settings == SAVER
        async with asyncio.timeout(60):
            await callee.sink.heard(2.5)
        assert caller.track.packets_sent > sent_before
    finally:
        await caller.close()
        await callee.close()
    assert dominant(loud_part(read_wav(tmp_path / "heard.wav")), (440, 1000)) == 440


async def test_rtcp_reports_every_five_seconds(tmp_path: Path) -> None:
    """RFC 3550 §6.2: reports at least 5 s apart (aiortc's own pace is 0.5-1.5 s), and still
    fresh when sent: the round-trip time comes out of them (§6.4.1, LSR/DLSR)."""
    caller = MediaSession(source=write_tone(tmp_path / "a.wav", 440, 9.0))
    callee = MediaSession()
    sender = caller.pc.getTransceivers()[0].sender
    paced = sender._send_rtcp
    reports: list[float] = []

    async def counted(packets: Any) -> None:
        reports.append(asyncio.get_running_loop().time())
        await paced(packets)

    sender._send_rtcp = counted  # type: ignore[method-assign]
    try:
        await connect(caller, callee)
        async with asyncio.timeout(60):
            await callee.sink.heard(8.0)
        stats = await caller.stats()
    finally:
        await caller.close()
        await callee.close()
    # In 8 s: the first report after 0.5-1.5 s, the next 5-6 s later (then the BYE at hang-up).
    assert 1 <= len(reports) <= 3, reports
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(reports[:-1])), reports
    assert stats.rtt is not None and 0 < stats.rtt < 1


async def test_data_saver_protects_its_audio_with_red_while_the_peer_reports_loss(tmp_path: Path) -> None:
    """Two data savers offer RED (RFC 2198): each starts protected, sending RED packets that
    the peer's playout splits; the peer's real receiver reports reach the loss watch (no
    loss on loopback), two without loss relax it to the lean packets, reported loss protects
    again."""
    caller = MediaSession(profile=DATA_SAVER, source=write_tone(tmp_path / "a.wav", 440, 3.0))
    callee = MediaSession(profile=DATA_SAVER)
    seen: list[int] = []
    taken = callee.playout.packet

    def tap(packet: RtpPacket, arrival: float) -> None:
        seen.append(packet.payload_type)
        taken(packet, arrival)

    callee.playout.packet = tap  # type: ignore[method-assign]
    try:
        await connect(caller, callee)
        assert caller.track.red_ready and callee.track.red_ready
        safe = caller.track.settings
        # 60 ms packets at the lean bitrate, each also carrying the one before.
        assert (safe.frame_ms, safe.bitrate, safe.fec, safe.red) == (60, 12000, False, True)
        async with asyncio.timeout(30):
            await callee.sink.heard(1.0)
            await caller.peer_reported.wait()
        assert seen and set(seen) <= callee.playout.red_types and callee.playout.malformed == 0
        assert caller.loss_watch.protecting  # one report without loss is not enough
        caller.peer_lost(0.0)
        lean = caller.track.settings
        assert lean == replace(safe, frame_ms=120, red=False)
        caller.peer_lost(0.08)
        assert caller.track.settings == safe
        for _ in range(5):
            caller.peer_lost(0.0)
        assert caller.track.settings == lean
        async with asyncio.timeout(30):
            await callee.sink.heard(2.5)
        # The lean packets are plain Opus again.
        assert seen[-1] in callee.playout.payload_types
    finally:
        await caller.close()
        await callee.close()


def without_red(contents: RtpContents) -> RtpContents:
    """The description of a peer that does not take RFC 2198 redundancy."""
    out = []
    for content in contents.contents:
        assert content.description is not None
        kept = tuple(pt for pt in content.description.payload_types if (pt.name or "").lower() != "red")
        out.append(replace(content, description=replace(content.description, payload_types=kept)))
    return RtpContents(tuple(out), contents.groups)


async def test_data_saver_protects_with_fec_where_the_peer_has_no_red() -> None:
    caller, callee = MediaSession(profile=DATA_SAVER), MediaSession(profile=DATA_SAVER)
    try:
        answer = await callee.answer(await caller.offer())
        await caller.accepted(without_red(answer))
        assert not caller.track.red_ready
        safe = caller.track.settings
        assert (safe.frame_ms, safe.bitrate, safe.fec, safe.red) == (60, 24000, True, False)
        caller.peer_lost(0.0)
        caller.peer_lost(0.0)
        assert (caller.track.settings.frame_ms, caller.track.settings.fec) == (120, False)
    finally:
        await caller.close()
        await callee.close()


async def test_normal_profile_is_not_switched_by_loss() -> None:
    session = MediaSession(profile=NORMAL)
    try:
        before = session.track.settings
        session.peer_lost(0.2)
        assert session.track.settings == before
    finally:
        await session.close()
