"""Call media over aiortc: ICE (RFC 8445), DTLS-SRTP (RFC 5764), our own Opus (RFC 7587) sender and receive path.

This is the one module that touches aiortc. A :class:`MediaSession` is one RTCPeerConnection
with one audio track each way. ICE servers are only those the server handed out (XEP-0215): an
empty list when there are none, since aiortc's default points at a public STUN server.

Our candidates trickle (XEP-0176 §5.3): aiortc gathers every candidate inside
``setLocalDescription``, host, server-reflexive and relayed alike, so an offer would wait for the
STUN answer and the TURN allocation. Its ICE agent (aioice) is kept from the servers while it
gathers, so the description carries the host candidates alone; the servers are then asked as
aioice would, each candidate found is added to the running ICE agent and handed to the caller of
:class:`MediaSession` for a ``transport-info``.

aiortc's own Opus encoder ignores every format parameter (96 kbit/s stereo, 20 ms, no FEC, no
DTX), so the sending track encodes itself with libopus through PyAV and hands aiortc finished
packets, which its sender only packs into RTP (RFC 7587 §4). How we encode follows both our
:class:`Profile` and what the peer asked for in its ``a=fmtp``/``a=ptime`` (RFC 7587 §6.1): the
lower bitrate, the longer frame, FEC only if the receiver decodes it, DTX if either side wants it.
Every description also offers redundant audio (RFC 2198, ``red/48000/2``, :mod:`.red`), which the
data saver sends while the peer reports loss, if the peer's description has it too.

aiortc's receive side (a 4-packet jitter buffer, no concealment) is replaced too: :class:`Playout`
takes the RTP packets from aiortc's receiver, orders and times them in our adaptive jitter
buffer (:mod:`.jitter`), decodes them with libopus' loss concealment and FEC recovery
(:mod:`.decoder`) and writes the audio at a steady clock.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import copy
import fractions
import ipaddress
import logging
import math
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import av
from aioice import Candidate as IceCandidate
from aioice import mdns, stun
from aioice.ice import (
    CandidatePair,
    Connection,
    StunProtocol,
    TransportPolicy,
    relayed_candidate,
    server_reflexive_candidate,
)
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCDtlsTransport, SRTPProtectionProfile
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import AnyRtcpPacket, RtcpRrPacket, RtcpSrPacket, RtpPacket
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCTransportStats,
)
from av.audio.frame import AudioFrame
from av.packet import Packet
from av.stream import Stream
from pylibsrtp import Policy

from ...xmpp.payloads.extdisco import Service
from ...xmpp.payloads.jingle import Content
from ...xmpp.payloads.jingle_ice import Candidate
from ...xmpp.payloads.jingle_rtp import Parameter, PayloadType
from .decoder import OpusDecoder, OpusError, has_fec, join, packet_samples
from .jitter import Action, JitterBuffer, Unit
from .protection import LossWatch, fraction, protected
from .red import RedError, Redundancy, unpack
from .sdp import RtpContents, SessionDescription, candidate_to_sdp, parse_candidate, to_jingle, to_sdp

log = logging.getLogger(__name__)

RATE = 48000
TIME_BASE = fractions.Fraction(1, RATE)
# RFC 6716 §2.1.4: the frame durations an Opus packet may hold, in ms (2.5 ms is not offered).
FRAME_MS = (10, 20, 40, 60, 80, 100, 120)
# RFC 7587 §6.1: 6 to 510 kbit/s.
MIN_BITRATE, MAX_BITRATE = 6000, 510000
# Below this RMS (of 32767) a frame counts as silence for DTX: about -60 dBFS.
SILENCE_RMS = 33.0
# RFC 7587 §6.1 maxplaybackrate (Hz) → the audio bandwidth FFmpeg's libopus wrapper takes as
# ``cutoff`` (Hz) and passes on as OPUS_SET_MAX_BANDWIDTH: narrow-, medium-, wide-, super-wide-
# and fullband (RFC 6716 §2).
CUTOFFS = ((8000, 4000), (12000, 6000), (16000, 8000), (24000, 12000))
FULLBAND_CUTOFF = 20000
# aiortc sends its RTCP reports every 0.5-1.5 s; RFC 3550 §6.2 recommends at least 5 s between
# them (libwebrtc sends audio reports every 5 s). This much is added after each report.
RTCP_PAUSE = 4.5
# RFC 5764 §4.1.2 SRTP_AES128_CM_HMAC_SHA1_32: a 4-byte tag on each RTP packet (SRTCP keeps
# 10). aiortc offers only profiles with a 16-byte (AES-GCM) or 10-byte tag, and picks AES-GCM.
SRTP_AES128_CM_SHA1_32 = SRTPProtectionProfile(
    libsrtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    openssl_profile=b"SRTP_AES128_CM_SHA1_32",
    key_length=16,
    salt_length=14,
)
# RFC 2198 redundant audio as WebRTC offers it (payload type 63, as libwebrtc numbers it). aiortc
# knows no such codec: it would leave it out of its descriptions, and its receiver would drop
# RED packets before counting them for the receiver reports. Known, they reach our playout.
RED_CODEC = RTCRtpCodecParameters(mimeType="audio/red", clockRate=48000, channels=2, payloadType=63)
if all(c.mimeType.lower() != RED_CODEC.mimeType for c in CODECS["audio"]):
    CODECS["audio"].insert(1, RED_CODEC)
# The playout clock: 20 ms of audio to the sink per tick.
TICK = 0.02
FRAME = RATE // 50
# How often the sender looks for a new receiver report from the peer, in seconds.
LOSS_POLL = 1.0
# How far the playout clock may fall behind (a stalled event loop) and still catch up, in seconds:
# about what a sound card's own buffer bridges. Behind by more, the time missed is played as
# silence, as a sound card does in an underrun, and the buffer's timeline waits: catching up
# would play the stall's packets before they have been read.
MAX_CATCH_UP = 0.04


class MediaError(RuntimeError):
    """The media engine could not do what a call needs (no Opus in the offer, a broken description)."""


@dataclass(frozen=True)
class Profile:
    """How we want to receive audio, written into our ``a=fmtp``/``a=ptime`` (RFC 7587 §6.1):
    ``playback_rate`` is ``maxplaybackrate`` (the audio bandwidth, half of it); and how we send
    silence: with DTX one packet per ``keepalive`` seconds of it.
    ``header_extensions``: whether our description offers RTP header extensions (XEP-0294).
    Without them the peer sends none (RFC 8285 §6: only negotiated ones are sent): 8 bytes less
    per packet (aiortc's ``mid`` and ``ssrc-audio-level``), which a single audio stream does
    not need (it is told apart by its SSRC, XEP-0339).
    ``short_srtp_tag``: whether DTLS-SRTP offers the 4-byte tag first (RFC 5764 §4.1.2), chosen
    when the peer offers it too. It is fixed by the DTLS handshake, so it follows the profile a
    call starts with.
    ``loss_protection``: whether the sender protects its audio (RFC 2198 RED, or FEC for a peer
    without it) at the start of a call and while the peer reports loss (:mod:`.protection`)."""

    name: str
    bitrate: int
    ptime: int
    fec: bool
    dtx: bool
    playback_rate: int = 16000
    keepalive: float = 0.4
    header_extensions: bool = True
    short_srtp_tag: bool = False
    loss_protection: bool = False


# Measured with `make bench-calls` (docs/benchmarks.md, "Calls"). The normal profile sends 40 ms
# packets of one 40 ms frame at 48 kbit/s: each packet carries 60 bytes of headers (IPv4 20, UDP 8,
# TURN 4, RTP 12, aiortc's 16-byte AES-GCM tag), 24 kbit/s of them with 20 ms packets, half of that
# with 40 ms, which the audio gets instead; and the FEC of a 40 ms frame rebuilds all of a lost
# packet. PESQ-WB 4.06 and 0.23 lost to 5 % loss, where 20 ms packets at 32 kbit/s scored 3.92
# and lost 0.33, for 391 KB/min instead of 361 and 111 ms mouth-to-ear instead of 69 (60 ms packets
# at 48 kbit/s: 4.07 and 0.16 for 370 KB/min, but 149 ms). DTX moves fewer bytes than none
# (silence is half of a conversation). Wideband (16 kHz playback, audio up to 8 kHz, "HD voice"):
# at such bitrates libopus would otherwise go
# fullband and spend bits above 8 kHz, where speech carries little (PESQ-WB 4.25 instead of 3.98
# on the benchmark's speech without FEC). The data saver: 120 ms packets halve the 60 bytes of
# headers each packet carries (IPv4 20, UDP 8, TURN 4, RTP 12, the SRTP tag 16 with aiortc's
# AES-GCM), and the 4-byte SRTP tag takes 12 more off; each packet holds two 60 ms frames
# (offline PESQ-WB 3.70, where libopus' own 120 ms packets of as many bytes, 13-14 kbit/s,
# score 3.50-3.61); mediumband (12 kHz playback) scores higher than wideband at 12 kbit/s;
# libopus adds no FEC below 16 kbit/s (and then only told to expect 25 % loss), which would not
# fit the data plan: redundancy (RED, or FEC) is added only while the peer reports loss and at the
# start of a call (:mod:`.protection`). libopus' DTX sends
# a frame every 400 ms of silence; nothing needs one that often (the receiver plays silence until
# the next packet, RTCP and ICE consent keep the path alive), so the data saver sends one a second.
NORMAL = Profile("normal", 48000, 40, fec=True, dtx=True, playback_rate=16000)
DATA_SAVER = Profile("data-saver", 12000, 120, fec=False, dtx=True, playback_rate=12000, keepalive=1.0,
                     header_extensions=False, short_srtp_tag=True, loss_protection=True)  # fmt: skip


@dataclass(frozen=True)
class EncoderSettings:
    """What the sending encoder does: mono, this bitrate and frame length, FEC, DTX; at most the
    bandwidth of ``playback_rate``; during silence a packet every ``keepalive`` seconds; with
    ``red``, each packet carries the one before as a redundant block (RFC 2198, :mod:`.red`)."""

    bitrate: int = NORMAL.bitrate
    frame_ms: int = NORMAL.ptime
    fec: bool = NORMAL.fec
    dtx: bool = NORMAL.dtx
    # The loss libopus is told to expect: with FEC, how strongly it protects the previous frame.
    # 10 % rather than 5 %: on speech at 5 % loss, PESQ-WB 2.75 instead of 2.33, for 0.16 less
    # without loss (docs/benchmarks.md, "Calls").
    loss_percent: int = 10
    playback_rate: int = NORMAL.playback_rate
    keepalive: float = NORMAL.keepalive
    red: bool = False

    @property
    def cutoff(self) -> int:
        """The audio bandwidth for libopus: the widest one ``playback_rate`` can play."""
        return next((cut for rate, cut in CUTOFFS if self.playback_rate <= rate), FULLBAND_CUTOFF)

    @property
    def encode_ms(self) -> int:
        """The frames libopus encodes, at most 60 ms: a longer packet is joined from them
        (:func:`.decoder.join`; 120 ms from two of 60 ms, as libopus does it itself but spending
        the bitrate asked for)."""
        if self.frame_ms <= 60:
            return self.frame_ms
        return next(ms for ms in (60, 40, 20) if self.frame_ms % ms == 0)

    @classmethod
    def negotiate(cls, ours: Profile, theirs: PayloadType | None) -> EncoderSettings:
        """RFC 7587 §6.1: the peer's wishes bound what our profile would send."""
        bitrate, frame_ms, fec, dtx = ours.bitrate, ours.ptime, ours.fec, ours.dtx
        playback_rate = ours.playback_rate
        if theirs is not None:
            params = {p.name.lower(): (p.value or "") for p in theirs.parameters}
            with contextlib.suppress(KeyError, ValueError):
                bitrate = min(bitrate, int(params["maxaveragebitrate"]))
            with contextlib.suppress(KeyError, ValueError):
                playback_rate = min(playback_rate, max(8000, int(params["maxplaybackrate"])))
            fec = fec and params.get("useinbandfec") == "1"
            dtx = dtx or params.get("usedtx") == "1"
            if theirs.ptime is not None:
                frame_ms = max(frame_ms, theirs.ptime)
            if theirs.maxptime is not None:
                frame_ms = min(frame_ms, theirs.maxptime)
        bitrate = max(MIN_BITRATE, min(MAX_BITRATE, bitrate))
        frame_ms = min(FRAME_MS, key=lambda ms: (abs(ms - frame_ms), ms))
        return cls(bitrate, frame_ms, fec, dtx, playback_rate=playback_rate, keepalive=ours.keepalive)


def opus_of(content: Content) -> PayloadType | None:
    """The content's Opus payload type (RFC 7587 §7: ``opus/48000/2``), if it offers one."""
    description = content.description
    if description is None:
        return None
    return next((pt for pt in description.payload_types if (pt.name or "").lower() == "opus"), None)


def red_of(content: Content) -> PayloadType | None:
    """The content's RFC 2198 payload type for redundant Opus (``red/48000/2``), if it offers one:
    its ``fmtp`` (``111/111``, RFC 2198 §5) names only the Opus payload type, or nothing."""
    opus = opus_of(content)
    if content.description is None or opus is None:
        return None
    for pt in content.description.payload_types:
        if (pt.name or "").lower() == "red" and pt.clockrate == RATE:
            # The nameless fmtp value, or (as nodes of before the empty name wrote it) a name alone.
            listed = [t for p in pt.parameters if not p.name or p.value is None
                      for t in (p.name or p.value or "").split("/")]
            if all(t == str(opus.id) for t in listed):
                return pt
    return None


def with_profile(contents: RtpContents, profile: Profile) -> RtpContents:
    """Our description with the Opus parameters of ``profile`` (RFC 7587 §6.1) and its ptime;
    its ``red`` carries redundant Opus (RFC 2198 §5: ``<opus>/<opus>``, one redundant block)."""
    wanted = {
        "minptime": "10",
        "useinbandfec": "1" if profile.fec else "0",
        "usedtx": "1" if profile.dtx else "0",
        "stereo": "0",
        "sprop-stereo": "0",
        "maxaveragebitrate": str(profile.bitrate),
        "maxplaybackrate": str(profile.playback_rate),
    }
    out = []
    for content in contents.contents:
        description = content.description
        if description is not None:
            types = []
            opus = opus_of(content)
            for pt in description.payload_types:
                params = pt.parameters
                if (pt.name or "").lower() == "opus":
                    kept = tuple(p for p in pt.parameters if p.name.lower() not in wanted)
                    params = kept + tuple(Parameter(k, v) for k, v in wanted.items())
                elif (pt.name or "").lower() == "red" and opus is not None:
                    params = (Parameter("", f"{opus.id}/{opus.id}"),)
                # SDP has one ptime per m= section (RFC 8866 §6.4), so every payload type carries it.
                types.append(replace(pt, parameters=params, ptime=profile.ptime))
            described = replace(description, payload_types=tuple(types))
            if not profile.header_extensions:
                described = replace(described, header_extensions=(), extmap_allow_mixed=False)
            out.append(replace(content, description=described))
        else:
            out.append(content)
    return RtpContents(tuple(out), contents.groups)


def ice_servers(services: Sequence[Service]) -> list[RTCIceServer]:
    """XEP-0215 services as WebRTC ICE servers (RFC 7064/7065 URIs); TLS relays are left out,
    since aiortc's TURN client speaks UDP and TCP."""
    servers = []
    for s in services:
        host = f"[{s.host}]" if ":" in s.host else s.host
        if s.type == "stun":
            servers.append(RTCIceServer(urls=f"stun:{host}:{s.port or 3478}"))
        elif s.type == "turn" and s.username and s.password:
            transport = s.transport or "udp"
            url = f"turn:{host}:{s.port or 3478}?transport={transport}"
            servers.append(RTCIceServer(urls=url, username=s.username, credential=s.password))
    # aioice takes one STUN and one TURN server: the UDP relay first, it needs no TCP framing.
    servers.sort(key=lambda s: "transport=udp" not in str(s.urls))
    return servers


# -- sending ------------------------------------------------------------------------------------


def pcm_frames(path: Path | None) -> Iterator[bytes]:
    """16-bit mono 48 kHz PCM from an audio file (anything FFmpeg reads), then silence forever."""
    if path is not None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        with av.open(str(path)) as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    yield bytes(out.planes[0])[: out.samples * 2]
            for out in resampler.resample(None):
                yield bytes(out.planes[0])[: out.samples * 2]
    silence = bytes(RATE // 50 * 2)
    while True:
        yield silence


def check_audio_file(path: Path) -> None:
    """:class:`MediaError` unless FFmpeg reads an audio stream from ``path``."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path} has no audio")
    except av.FFmpegError as err:
        raise MediaError(f"{path} is not an audio file FFmpeg reads: {err}") from None


def rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def _codec_options(s: EncoderSettings) -> tuple[int, int, bool, int, int]:
    """What libopus is opened with: the encoder is kept while these stay (a new one would start
    from nothing, mid-word perhaps). The data saver's lean packets and its RED-protected ones
    are the same frames; only the packets differ."""
    return s.bitrate, s.encode_ms, s.fec, s.loss_percent if s.fec else 0, s.cutoff


class Outgoing(NamedTuple):
    """A packet the track sends: its RTP timestamp, payload, and whether it is RED (RFC 2198)
    rather than plain Opus."""

    timestamp: int
    payload: bytes
    red: bool = False


class OpusTrack(MediaStreamTrack):
    """The audio we send, already Opus-encoded, paced in real time.

    aiortc's sender passes a track's :class:`av.Packet` to its encoder's ``pack``, which only
    wraps the bytes in RTP; so this track owns the encoder. :meth:`configure` may be called at
    any time (a profile switch): the next frame is encoded with the new settings. Once the peer
    takes RED (:meth:`use_red`), settings with ``red`` wrap each packet with the one before; the
    sender's codec (:meth:`steer`) then carries the payload type of each packet.
    """

    kind = "audio"

    def __init__(self, source: Path | Iterator[bytes] | None) -> None:
        super().__init__()
        # A file (or silence), or a live source of 16-bit mono 48 kHz PCM such as audio.Microphone.
        self._pcm = pcm_frames(source) if source is None or isinstance(source, Path) else source
        self._buffer = b""
        self._settings = EncoderSettings()
        self._encoder: av.AudioCodecContext | None = None
        self._samples = 0
        self._start: float | None = None
        # The RTP timestamp of the last packet sent (the DTX keepalive counts from it).
        self._last_sent = -math.inf
        self._silence_sent = False
        # Packets encoded but not yet handed to the sender.
        self._pending: deque[Outgoing] = deque()
        # RFC 2198: the peer's red payload type, the redundancy, and the sender's codec whose
        # payload type goes on each packet (Opus as negotiated, or red).
        self._red_type: int | None = None
        self._redundancy: Redundancy | None = None
        self._codec: RTCRtpCodecParameters | None = None
        self._plain_type: int | None = None
        self.packets_sent = 0
        self.packets_suppressed = 0

    @property
    def settings(self) -> EncoderSettings:
        return self._settings

    @property
    def started(self) -> float | None:
        """The event loop's time when the first sample was "spoken"."""
        return self._start

    @property
    def red_ready(self) -> bool:
        """Whether the peer takes RED packets (its description offers ``red`` for our Opus)."""
        return self._redundancy is not None

    def configure(self, settings: EncoderSettings) -> None:
        if _codec_options(settings) != _codec_options(self._settings):
            self._encoder = None
        self._settings = settings

    def use_red(self, red_type: int | None, opus_type: int) -> None:
        """The peer's RED payload type (None: it takes none) and the Opus one its blocks carry."""
        self._red_type = red_type
        self._redundancy = None if red_type is None else Redundancy(opus_type)

    def steer(self, codec: RTCRtpCodecParameters) -> None:
        """The codec aiortc's sender puts on every packet (:func:`steer_payload_types`): its
        payload type follows each packet from now on."""
        self._codec = codec
        self._plain_type = codec.payloadType

    def _open(self) -> av.AudioCodecContext:
        s = self._settings
        codec = av.CodecContext.create("libopus", "w")
        assert isinstance(codec, av.AudioCodecContext)
        codec.sample_rate = RATE
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = s.bitrate
        codec.time_base = TIME_BASE
        codec.options = {
            "application": "voip",
            "frame_duration": str(s.encode_ms),
            "fec": "1" if s.fec else "0",
            "packet_loss": str(s.loss_percent if s.fec else 0),
            "vbr": "on",
            "cutoff": str(s.cutoff),
        }
        codec.open()
        return codec

    def _next_pcm(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += next(self._pcm)
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk

    async def recv(self) -> Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        while not self._pending:
            frame_samples = RATE * self._settings.frame_ms // 1000
            self._pending.extend(self.encode(self._next_pcm(frame_samples * 2)))
            # Real time: a frame leaves once it has been "spoken".
            await asyncio.sleep(max(0.0, self._start + self._samples / RATE - loop.time()))
        return self._packet(*self._pending.popleft())

    def encode(self, pcm: bytes) -> list[Outgoing]:
        """The next ``frame_ms`` of 16-bit PCM encoded: the packets to send, each with its RTP
        timestamp (more than one when its frames cannot share a packet, RFC 7587 §4.2), or none
        for silence that DTX leaves out; RED packets with the one before when the settings ask
        for it and the peer takes them."""
        if self._encoder is None:
            self._encoder = self._open()
        frame_samples = len(pcm) // 2
        frame = AudioFrame(format="s16", layout="mono", samples=frame_samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.time_base = TIME_BASE
        frame.pts = self._samples
        at = self._samples
        self._samples += frame_samples
        packets = self._encoder.encode(frame)
        if not packets:
            return []
        silent = rms(pcm) < SILENCE_RMS
        keepalive_due = (at - self._last_sent) / RATE >= self._settings.keepalive
        if self._settings.dtx and silent and self._silence_sent and not keepalive_due:
            # RFC 7587 §3.1.3: during silence nothing needs to be sent. The first silent
            # frame is: the receiver decodes it and knows the pause is silence, rather than
            # concealing the last syllable on into it.
            self.packets_suppressed += 1
            return []
        self._silence_sent = silent
        self._last_sent = at
        out = []
        for payload in join([bytes(p) for p in packets]):
            if self._redundancy is None:
                out.append(Outgoing(at, payload))
            elif self._settings.red:
                out.append(Outgoing(at, self._redundancy.wrap(at, payload), red=True))
            else:
                self._redundancy.sent_plain(at, payload)
                out.append(Outgoing(at, payload))
            at += packet_samples(payload)
        return out

    def _packet(self, at: int, payload: bytes, red: bool) -> Packet[Stream]:
        self.packets_sent += 1
        if self._codec is not None:
            self._codec.payloadType = self._red_type if red else self._plain_type
        packet = Packet(payload)
        packet.pts = at
        packet.time_base = TIME_BASE
        return packet


# -- receiving ----------------------------------------------------------------------------------


class WavSink:
    """Writes the received audio, 16-bit mono 48 kHz, to a WAV file (or only counts it).

    The playout writes to it at a steady clock, so the recording keeps the call's timing: what
    never arrived (silence the sender suppressed with DTX, concealed loss) is in it too, counted
    in ``filled``.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.samples = 0
        self.filled = 0
        # The event loop's time of the first sample played: the recording's sample n was played n/RATE after.
        self.started: float | None = None
        self._wav: wave.Wave_write | None = None
        self._progress = asyncio.Event()

    def open(self) -> None:
        if self.path is not None and self._wav is None:
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 -- open for the whole call, closed in stop()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(RATE)

    def write(self, pcm: bytes, *, filled: int = 0) -> None:
        """``pcm`` played now, ``filled`` samples of it made up for audio that never came."""
        if self.started is None:
            self.started = asyncio.get_running_loop().time()
        self.samples += len(pcm) // 2
        self.filled += filled
        self._progress.set()
        if self._wav is not None:
            self._wav.writeframes(pcm)

    async def heard(self, seconds: float) -> None:
        """Until ``seconds`` of audio have been received."""
        while self.samples < seconds * RATE:
            self._progress.clear()
            await self._progress.wait()

    async def stop(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None


class Playout:
    """The receive path: RTP packets taken from aiortc's receiver before its own jitter buffer,
    our adaptive :class:`JitterBuffer`, libopus decoding with loss concealment and FEC recovery
    (:mod:`.decoder`), and 20 ms of PCM to the sink on every tick of a steady clock.

    Opus decodes any frame size, so a profile switch mid-call (20 ms to 120 ms frames, another
    bitrate) needs nothing here: each packet says its own duration (RFC 6716 §3.1).
    """

    def __init__(self, sink: WavSink) -> None:
        self.sink = sink
        self.buffer = JitterBuffer(rate=RATE, frame=FRAME)
        # The Opus payload types of both descriptions (RFC 7587 §7; the sender should use the
        # receiver's, RFC 3264 §5.1, but some reuse their own); telephone-event is not audio.
        self.payload_types: set[int] = set()
        # The RED payload types (RFC 2198) of both descriptions: Opus in redundant blocks.
        self.red_types: set[int] = set()
        self.malformed = 0
        try:
            self._decoder = OpusDecoder()
        except OpusError as err:
            raise MediaError(f"cannot decode the call's audio: {err}") from None
        self._pcm = bytearray()
        self._quiet = True
        # Concealment ran since the last packet; and silence followed it (a pause, not a loss).
        self._concealed = False
        self._paused_after_concealment = False
        self._task: asyncio.Task[None] | None = None

    def start(self, receiver: RTCRtpReceiver) -> None:
        """Take ``receiver``'s RTP packets and start the clock (once: a renegotiation keeps the receiver)."""
        if self._task is not None:
            return
        handle = receiver._handle_rtp_packet
        own_decoder_stopped = False

        async def tapped(packet: RtpPacket, arrival_time_ms: int) -> None:
            nonlocal own_decoder_stopped
            if not own_decoder_stopped:
                # aiortc's decoder thread would decode every packet once more into a track nobody
                # reads; _handle_disconnect is how aiortc itself stops it. Its packet statistics
                # (for RTCP receiver reports) keep running.
                receiver._handle_disconnect()
                own_decoder_stopped = True
            await handle(packet, arrival_time_ms)
            self.packet(packet, asyncio.get_running_loop().time())

        receiver._handle_rtp_packet = tapped  # type: ignore[method-assign]
        self.sink.open()
        self._task = asyncio.create_task(self._run())

    def packet(self, packet: RtpPacket, arrival: float) -> None:
        if packet.payload_type in self.red_types:
            self._red(packet, arrival)
            return
        if packet.payload_type not in self.payload_types:
            return
        try:
            samples = packet_samples(packet.payload)
        except OpusError:
            self.malformed += 1
            return
        self.buffer.put(packet.sequence_number, packet.timestamp, packet.payload, samples, arrival,
                        fec=has_fec(packet.payload))  # fmt: skip

    def _red(self, packet: RtpPacket, arrival: float) -> None:
        """RFC 2198: the primary block is the packet; the redundant blocks before it are copies
        of the packets before it, the last block of the one just before (each packet repeats
        the packets sent before it, as libwebrtc and our track send them). A malformed packet
        is dropped, a malformed block left out, and both counted."""
        try:
            *redundant, primary = unpack(packet.payload)
            samples = packet_samples(primary.data) if primary.payload_type in self.payload_types else 0
        except (RedError, OpusError):
            self.malformed += 1
            return
        if not samples:
            return
        copies: list[tuple[int, int, bytes, int]] = []
        for back, block in enumerate(reversed(redundant), start=1):
            try:
                count = packet_samples(block.data) if block.payload_type in self.payload_types else 0
            except OpusError:
                self.malformed += 1
                continue
            # A copy ends before the primary begins; one that would overlap it is not a copy.
            if count and block.offset >= count:
                seq = (packet.sequence_number - back) & 0xFFFF
                copies.append((seq, (packet.timestamp - block.offset) & 0xFFFFFFFF, block.data, count))
        self.buffer.put(packet.sequence_number, packet.timestamp, primary.data, samples, arrival,
                        fec=has_fec(primary.data), red=True)  # fmt: skip
        for copy_of in copies:
            self.buffer.put_copy(*copy_of)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()
        while True:
            clock += TICK
            await asyncio.sleep(clock - loop.time())
            behind = int((loop.time() - clock) / TICK)
            if behind * TICK > MAX_CATCH_UP and self.sink.started is not None:
                self.sink.write(bytes(behind * FRAME * 2), filled=behind * FRAME)
                clock += behind * TICK
            self.tick(clock)

    def tick(self, now: float) -> None:
        """One tick of the playout clock at ``now``: 20 ms to the sink, if the stream has begun."""
        filled = 0
        while len(self._pcm) < FRAME * 2:
            unit = self.buffer.pop(now, len(self._pcm) // 2, quiet=self._quiet)
            if unit is None:
                return
            pcm = self._render(unit)
            self._pcm += pcm
            if unit.action in (Action.CONCEAL, Action.SILENCE):
                filled += len(pcm) // 2
        out = bytes(self._pcm[: FRAME * 2])
        del self._pcm[: FRAME * 2]
        self.sink.write(out, filled=min(filled, FRAME))

    def _render(self, unit: Unit) -> bytes:
        if unit.action is Action.SILENCE:
            pcm = bytes(unit.samples * 2)
            self._paused_after_concealment = self._concealed
        else:
            if unit.action is not Action.CONCEAL and self._paused_after_concealment:
                # A talk spurt after the pause: decoded afresh, not faded in from the concealment.
                self._decoder.reset()
            self._concealed = unit.action is Action.CONCEAL
            self._paused_after_concealment = False
            try:
                if unit.action is Action.PLAY:
                    pcm = self._decoder.decode(unit.payload)[unit.skip * 2 :]
                elif unit.action is Action.RECOVER:
                    pcm = self._decoder.recover(unit.payload, unit.samples)
                else:
                    pcm = self._decoder.conceal(unit.samples)
            except OpusError:
                log.debug("undecodable Opus packet, concealed", exc_info=True)
                pcm = self._decoder.conceal(unit.samples)
        quiet = rms(pcm) < SILENCE_RMS
        if not unit.audible and quiet:
            return b""
        # The buffer sheds delay by dropping what it takes for silence, judging by what played
        # last; a packet that decodes to sound (the first of a talk spurt) is played all the same.
        self._quiet = quiet
        return pcm

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sink.stop()


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStats:
    """A call's traffic: bytes on the wire both ways (SRTP/SRTCP/DTLS with their headers, from
    the DTLS transport), packets lost as the receiver counts them (RFC 3550 §6.4.1), the
    round-trip time from RTCP receiver reports, and the audio received; then what the receive
    path did with the packets that were not there in time: rebuilt from the next packet's FEC,
    concealed, or come too late to be played, and the delay its jitter buffer added on average;
    and the packets that never came but played from a redundant copy (RFC 2198) a later one
    brought."""

    duration: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    rtt: float | None = None
    audio_received: float = 0.0
    packets_recovered: int = 0
    packets_concealed: int = 0
    packets_late: int = 0
    jitter_delay: float = 0.0
    packets_redundant: int = 0

    @property
    def loss(self) -> float:
        expected = self.packets_received + self.packets_lost
        return self.packets_lost / expected if expected else 0.0


# -- RTCP ---------------------------------------------------------------------------------------


def pace_rtcp(part: RTCRtpSender | RTCRtpReceiver, pause: float = RTCP_PAUSE) -> None:
    """Reports every 5-6 s instead of every 0.5-1.5 s (RFC 3550 §6.2's minimum interval).

    aiortc's report loop (``_run_rtcp``) sleeps 0.5-1.5 s, builds a sender report (with its
    NTP time, RFC 3550 §6.4.1) or receiver report (loss, jitter, LSR/DLSR, §6.4.2) and awaits
    ``_send_rtcp``; waiting ``pause`` after each report has gone out stretches the loop while
    every report still leaves as soon as it is built, so round-trip times stay right. Only the
    reports wait: a BYE (the call ending) and feedback (NACK, PLI) go at once.
    """
    if getattr(part, "_schnack_paced", False):
        return
    send = part._send_rtcp

    async def paced(packets: AnyRtcpPacket | list[AnyRtcpPacket]) -> None:
        await send(packets)  # type: ignore[arg-type]  # the sender takes a list, the receiver one packet
        sent = packets if isinstance(packets, list) else [packets]
        if any(isinstance(p, RtcpSrPacket | RtcpRrPacket) for p in sent):
            await asyncio.sleep(pause)

    part._send_rtcp = paced  # type: ignore[method-assign]
    part._schnack_paced = True  # type: ignore[union-attr]


# -- payload types ------------------------------------------------------------------------------


def steer_payload_types(sender: RTCRtpSender, track: OpusTrack) -> None:
    """Let ``track`` choose each packet's payload type: Opus or RED (RFC 2198).

    aiortc's sender puts the payload type of the first codec negotiated on every packet, and
    has no encoder for ``red`` (a peer listing it first would stop the sender). So the sender
    gets a copy of the Opus codec as its first, which the track (:meth:`OpusTrack.steer`)
    gives the payload type of the packet it hands over; the sender reads it for that packet."""
    if getattr(sender, "_schnack_steered", False):
        return
    send = sender.send

    async def sending(parameters: RTCRtpSendParameters) -> None:
        opus = next((c for c in parameters.codecs if c.mimeType.lower() == "audio/opus"), None)
        if opus is not None:
            own = copy.copy(opus)
            track.steer(own)
            parameters = replace(parameters, codecs=[own, *(c for c in parameters.codecs if c is not opus)])
        await send(parameters)

    sender.send = sending  # type: ignore[method-assign]
    sender._schnack_steered = True  # type: ignore[attr-defined]


# -- SRTP ---------------------------------------------------------------------------------------


def prefer_short_srtp_tag(transport: RTCDtlsTransport) -> None:
    """Offer SRTP_AES128_CM_HMAC_SHA1_32 first in the DTLS ``use_srtp`` extension (RFC 5764
    §4.1.2), before aiortc's own profiles: each RTP packet then carries a 4-byte tag instead of
    AES-GCM's 16. A peer that does not offer it (libwebrtc does not by default) gets one of
    the others; the DTLS server picks. RFC 3711 §7.5 allows a tag shorter than 80 bits where
    bandwidth is scarce; a forged packet gets through once in 2**32 tries and then costs one
    packet of audio, and encryption is unchanged (AES-128). SRTCP keeps its 10-byte tag."""
    if transport._srtp_profiles[:1] != [SRTP_AES128_CM_SHA1_32]:
        transport._srtp_profiles = [SRTP_AES128_CM_SHA1_32, *SRTP_PROFILES]


# -- our trickled candidates --------------------------------------------------------------------


@dataclass(frozen=True)
class LocalCandidate:
    """One of our candidates found after our description went out, for a ``transport-info``
    (XEP-0176 §5.3): the content it belongs to, and our ICE credentials that go with it."""

    content: str
    candidate: Candidate
    ufrag: str
    pwd: str


def ice_transports(pc: RTCPeerConnection) -> list[RTCIceTransport]:
    """The peer connection's ICE transports, each once (transceivers may share one)."""
    return list(dict.fromkeys(t.receiver.transport.transport for t in pc.getTransceivers()))


@contextlib.contextmanager
def host_candidates_only(transports: Sequence[RTCIceTransport]) -> Iterator[list[RTCIceTransport]]:
    """While the block runs, the transports that have not gathered yet know no STUN or TURN
    server, so that aiortc's ``setLocalDescription`` (which gathers in ``RTCIceGatherer.gather``)
    returns with the host candidates alone instead of waiting for the STUN answer and the TURN
    allocation; the transports are yielded, for :func:`gather_late` to find the others."""
    fresh = [t for t in transports if t.iceGatherer.state == "new"]
    servers = [(t._connection.stun_server, t._connection.turn_server) for t in fresh]
    for transport in fresh:
        transport._connection.stun_server = transport._connection.turn_server = None
    try:
        yield fresh
    finally:
        for transport, (stun, turn) in zip(fresh, servers, strict=True):
            transport._connection.stun_server, transport._connection.turn_server = stun, turn


async def gather_late(connection: Connection,
                      found: Callable[[IceCandidate, StunProtocol | None], Awaitable[None]]) -> None:  # fmt: skip
    """The server-reflexive and relayed candidates (RFC 8445 §5.1.1.2) of an aioice connection
    that gathered its host candidates without them, as aioice's ``get_component_candidates``
    finds them (STUN from each IPv4 host socket, one TURN allocation per component), each handed
    to ``found`` as it comes, with the relay's socket. Unlike aioice this waits as long as the
    servers take (nothing waits for them now); cancelling it cancels the searches, and a TURN
    allocation cancelled half-way closes its socket."""
    searches: list[Coroutine[object, object, tuple[IceCandidate, StunProtocol | None]]] = []
    if connection.stun_server is not None:
        searches += [server_reflexive_candidate(p, connection.stun_server) for p in connection._protocols
                     if ipaddress.ip_address(p.local_candidate.host).version == 4]  # fmt: skip
    if connection.turn_server is not None:
        searches += [relayed_candidate(
            component=component,
            # RFC 9429 §3.5.3: relay-only, the relay's related address does not give the host's away.
            hide_related_address=connection._transport_policy is TransportPolicy.RELAY,
            protocol_factory=lambda: StunProtocol(connection),
            turn_server=connection.turn_server,
            turn_username=connection.turn_username,
            turn_password=connection.turn_password,
            turn_ssl=connection.turn_ssl,
            turn_transport=connection.turn_transport,
        ) for component in sorted(connection._components)]  # fmt: skip

    async def one(search: Coroutine[object, object, tuple[IceCandidate, StunProtocol | None]]) -> None:
        try:
            candidate, protocol = await search
        except Exception as err:
            # As aioice does: a server that does not answer costs its candidate, not the call.
            log.info("no candidate from the STUN or TURN server: %r", err)
            return
        await found(candidate, protocol)

    async with asyncio.TaskGroup() as searching:
        for search in searches:
            searching.create_task(one(search))


def add_local_candidate(connection: Connection, candidate: IceCandidate, protocol: StunProtocol | None) -> None:
    """A candidate found after the connectivity checks may have started, into the ICE agent.

    aioice pairs local with remote candidates when a remote one arrives (``_pair_remote_candidate``)
    and when ``connect`` starts; a socket added later is paired here with the remote candidates
    already known, as aioice would have paired it (RFC 8445 §6.1.2.2; a relay not with an mDNS
    name, whose address the TURN server would learn, draft-ietf-mmusic-mdns-ice-candidates
    §3.3.2), and its pairs are checked by the running check loop, which picks up frozen pairs
    until the check list completes. The socket also answers the peer's checks from now on. A
    server-reflexive candidate brings no socket: it is sent from its host socket, whose pairs
    stand for it (RFC 8445 §6.1.2.4), so it only goes to the peer."""
    connection._local_candidates.append(candidate)
    if protocol is None:
        return
    connection._protocols.append(protocol)
    if connection._check_list_done:
        return
    for remote in connection._remote_candidates:
        if candidate.type == "relay" and mdns.is_mdns_hostname(remote.host):
            continue
        if candidate.can_pair_with(remote) and connection._find_pair(protocol, remote) is None:
            connection._check_list.append(CandidatePair(protocol, remote))
    connection.sort_check_list()


def recheck_at_once(connection: Connection) -> None:
    """RFC 8445 §7.3.1.4: a check from the peer on a pair whose own check is in progress makes
    the agent check the pair again at once, still taking the answer to the first check. aioice
    only notes the peer's check, and the pair waits for its own check's retransmission, 500 ms
    after the first. A first check from a relay is lost whenever the peer's TURN server has no
    permission for it yet (RFC 8656 §9: the peer has sent nothing to it), which is the rule when
    both sides learn each other's relay at the same moment, as when both trickle: the side that
    checked first would connect half a second after the other. The check's request goes out
    again at once, as the retransmission it is (same transaction, RFC 8489 §6.2.1), so an answer
    to either copy completes it and nothing already under way is lost."""
    incoming = connection.check_incoming

    def check_incoming(message: stun.Message, addr: tuple[str, int], protocol: StunProtocol) -> None:
        incoming(message, addr, protocol)
        if not any(p.state is CandidatePair.State.IN_PROGRESS and p.protocol is protocol and p.remote_addr == addr
                   for p in connection._check_list):  # fmt: skip
            return
        for transaction in list(protocol.transactions.values()):
            # aioice keeps a transaction's request and address to itself (Transaction.__retry).
            held = vars(transaction)
            if held.get("_Transaction__addr") == addr:
                protocol.send_stun(held["_Transaction__request"], addr)

    connection.check_incoming = check_incoming  # type: ignore[method-assign]


def _keep(tasks: set[asyncio.Task[None]], work: Coroutine[object, object, None]) -> None:
    """Run ``work`` as a task held in ``tasks`` until it is done."""
    task = asyncio.ensure_future(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


# -- the peer connection ------------------------------------------------------------------------


class MediaSession:
    """One call's RTCPeerConnection: Jingle contents in and out, our Opus track, a WAV sink.

    Our offer and answer carry the host candidates; the server-reflexive and relayed ones are
    gathered afterwards, added to the ICE agent, and handed to ``on_candidate`` as they are
    found, for the peer to learn in a ``transport-info`` (trickle ICE, XEP-0176 §5.3)."""

    def __init__(self, *, services: Sequence[Service] = (), relay_only: bool = False,
                 profile: Profile = NORMAL, source: Path | Iterator[bytes] | None = None,
                 sink: Path | WavSink | None = None,
                 on_candidate: Callable[[LocalCandidate], None] | None = None) -> None:
        # First what may fail (no libopus): nothing else is set up yet.
        self.sink = sink if isinstance(sink, WavSink) else WavSink(sink)
        self.playout = Playout(self.sink)
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self.config = RTCConfiguration(iceServers=ice_servers(services), iceTransportPolicy=policy)
        self.pc = RTCPeerConnection(self.config)
        self.profile = profile
        self._short_srtp_tag = profile.short_srtp_tag
        self.track = OpusTrack(source)
        self._remote_opus: PayloadType | None = None
        self._started: float | None = None
        self._ended: float | None = None
        self._final: CallStats | None = None
        self.loss_watch = LossWatch(start_protected=True)
        self.peer_reported = asyncio.Event()
        self._watching: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        # The connection closed without our :meth:`close`: aiortc closes it when DTLS ends, after
        # the peer's close_notify (it hung up) or once ICE consent expired (RFC 7675 §5.1: the
        # network is gone); it never reports "failed" then.
        self.lost = asyncio.Event()
        self.on_candidate = on_candidate
        # Our STUN and TURN searches (:meth:`_set_local`), and ICE started on a transport whose
        # first candidate came from one of them.
        self._gathering: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self.pc.addTrack(self.track)
        self._prepare()
        self.pc.on("track", self._track)
        self.pc.on("connectionstatechange", self._state_changed)

    def _track(self, track: MediaStreamTrack) -> None:
        """The peer's audio: its receiver's packets go to our playout, not to aiortc's decoder."""
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        self._prepare()
        self.playout.start(receiver)

    def _prepare(self) -> None:
        """Every transceiver's reports at RFC 3550's pace (:func:`pace_rtcp`), before they start;
        and the short SRTP tag offered if the call starts with a profile that wants it, before
        the DTLS handshake (a transceiver made for the peer's offer gets it too)."""
        for transceiver in self.pc.getTransceivers():
            pace_rtcp(transceiver.sender)
            pace_rtcp(transceiver.receiver)
            if transceiver.sender.track is self.track:
                steer_payload_types(transceiver.sender, self.track)
            if self._short_srtp_tag:
                prefer_short_srtp_tag(transceiver.sender.transport)

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._started is None:
            self._started = time.monotonic()
            self.connected.set()
            self._watching = asyncio.create_task(self._watch_loss())
        elif state == "failed":
            self.failed.set()
        elif state == "closed" and self._ended is None:
            self.lost.set()

    def _local(self, writer: str) -> RtpContents:
        self._prepare()
        description = self.pc.localDescription
        contents = with_profile(to_jingle(SessionDescription.parse(description.sdp), writer), self.profile)
        self.playout.payload_types.update(pt.id for c in contents.contents if (pt := opus_of(c)) is not None)
        self.playout.red_types.update(pt.id for c in contents.contents if (pt := red_of(c)) is not None)
        return contents

    def _remote(self, contents: RtpContents) -> None:
        content = next((c for c in contents.contents if opus_of(c) is not None), None)
        opus = None if content is None else opus_of(content)
        if content is None or opus is None:
            raise MediaError("the peer offers no Opus audio")
        self._remote_opus = opus
        self.playout.payload_types.add(opus.id)
        red = red_of(content)
        if red is not None:
            self.playout.red_types.add(red.id)
        self.track.use_red(None if red is None else red.id, opus.id)
        self._configure()

    def _configure(self) -> None:
        """The sending encoder: what the profile and the peer's wishes give, protected while the
        peer reports loss if the profile says so: with RED if the peer takes it, else with FEC."""
        settings = EncoderSettings.negotiate(self.profile, self._remote_opus)
        if self.profile.loss_protection and self.loss_watch.protecting:
            settings = protected(settings, red=self.track.red_ready)
        self.track.configure(settings)

    async def _watch_loss(self) -> None:
        """Each new RTCP receiver report about our stream (RFC 3550 §6.4.1) into the loss watch;
        the encoder follows when protection goes on or off."""
        seen: dict[str, object] = {}
        while True:
            await asyncio.sleep(LOSS_POLL)
            for transceiver in self.pc.getTransceivers():
                report = await transceiver.sender.getStats()
                for s in report.values():
                    if not isinstance(s, RTCRemoteInboundRtpStreamStats) or seen.get(s.id) == s.timestamp:
                        continue
                    seen[s.id] = s.timestamp
                    self.peer_lost(fraction(int(s.fractionLost)))

    def peer_lost(self, lost: float) -> None:
        """A receiver report from the peer: it lost this fraction of our packets since its last."""
        before = self.loss_watch.protecting
        self.peer_reported.set()
        if self.loss_watch.report(lost) != before:
            protection = "RED" if self.track.red_ready else "FEC"
            log.info("peer reports %.1f %% loss: %s", 100 * self.loss_watch.smoothed,
                     "lean packets again" if before else f"protecting the audio with {protection}")  # fmt: skip
            self._configure()

    async def offer(self) -> RtpContents:
        """Caller: the offer (XEP-0167 §6.2) with our host candidates; the others trickle."""
        await self._set_local(await self.pc.createOffer())
        return self._local("initiator")

    async def answer(self, offer: RtpContents) -> RtpContents:
        """Callee: take the offer and return the answer (XEP-0167 §6.4) with our host
        candidates; the others trickle."""
        self._remote(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(str(to_sdp(offer, "initiator")), "offer"))
        await self._set_local(await self.pc.createAnswer())
        return self._local("responder")

    async def _set_local(self, description: RTCSessionDescription) -> None:
        """``setLocalDescription`` with the host candidates alone; the STUN and TURN servers are
        asked afterwards, while the description travels (:func:`gather_late`)."""
        with host_candidates_only(ice_transports(self.pc)) as fresh:
            await self.pc.setLocalDescription(description)
        for transport in fresh:
            recheck_at_once(transport._connection)
            _keep(self._gathering, self._gather_late(transport))

    async def _gather_late(self, transport: RTCIceTransport) -> None:
        connection = transport._connection

        async def found(candidate: IceCandidate, protocol: StunProtocol | None) -> None:
            if connection._closing:
                if protocol is not None:
                    await protocol.close()
                return
            add_local_candidate(connection, candidate, protocol)
            self._announce(transport, candidate)
            if transport.state == "new":
                # aiortc starts ICE (after setting either description) only on a transport that
                # has candidates; relay-only, the first one is the relay found after both. A
                # second start of a transport waits for the first and starts nothing more.
                _keep(self._starting, self.pc._RTCPeerConnection__connect())  # type: ignore[attr-defined]

        await gather_late(connection, found)

    def _announce(self, transport: RTCIceTransport, candidate: IceCandidate) -> None:
        mid = next((t.mid for t in self.pc.getTransceivers()
                    if t.receiver.transport.transport is transport and t.mid is not None), None)  # fmt: skip
        jingle = parse_candidate(candidate.to_sdp())
        if self.on_candidate is None or mid is None or jingle is None:
            return
        parameters = transport.iceGatherer.getLocalParameters()
        self.on_candidate(LocalCandidate(mid, jingle, parameters.usernameFragment or "", parameters.password or ""))

    async def accepted(self, answer: RtpContents) -> None:
        """Caller: the callee's answer; ICE and DTLS start."""
        self._remote(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(str(to_sdp(answer, "responder")), "answer"))

    async def add_candidate(self, content: str, candidate: Candidate) -> None:
        """A trickled remote candidate (XEP-0176 §5.3)."""
        from aiortc.sdp import candidate_from_sdp

        parsed = candidate_from_sdp(candidate_to_sdp(candidate).removeprefix("candidate:"))
        parsed.sdpMid = content
        await self.pc.addIceCandidate(parsed)

    def set_profile(self, profile: Profile) -> None:
        """Send with another profile from the next frame on, within what the peer asked for."""
        self.profile = profile
        self._configure()

    def peer_asks(self, opus: PayloadType) -> None:
        """The peer's new Opus parameters mid-call (its description-info): from the next frame on,
        send within them, as after the offer and answer (RFC 7587 §6.1)."""
        self._remote_opus = opus
        self.playout.payload_types.add(opus.id)
        self._configure()

    @property
    def srtp_profile(self) -> str | None:
        """The SRTP protection profile DTLS agreed on (RFC 5764 §4.1.2), once connected."""
        for transceiver in self.pc.getTransceivers():
            transport = transceiver.sender.transport
            if transport.state == "connected" and transport._ssl is not None:
                selected = transport._ssl.get_selected_srtp_profile()
                return selected.decode() if selected else None
        return None

    @property
    def fingerprint_ok(self) -> bool:
        """Whether DTLS completed against the fingerprint in the peer's description (RFC 5763 §5)."""
        return self._started is not None

    async def stats(self) -> CallStats:
        """The traffic so far (or, once closed, of the whole call)."""
        if self._final is not None:
            return self._final
        report = await self.pc.getStats()
        sent = received = packets_sent = packets_received = lost = 0
        rtt: float | None = None
        for s in report.values():
            if isinstance(s, RTCTransportStats):
                sent += s.bytesSent
                received += s.bytesReceived
            elif isinstance(s, RTCOutboundRtpStreamStats):
                packets_sent += s.packetsSent
            elif isinstance(s, RTCInboundRtpStreamStats):
                packets_received += s.packetsReceived
                lost += max(0, s.packetsLost)
            elif isinstance(s, RTCRemoteInboundRtpStreamStats) and s.roundTripTime:
                rtt = s.roundTripTime
        end = self._ended or time.monotonic()
        duration = end - self._started if self._started is not None else 0.0
        played = self.playout.buffer.stats
        return CallStats(duration, sent, received, packets_sent, packets_received, lost, rtt,
                         self.sink.samples / RATE, played.recovered, played.concealed, played.late,
                         played.mean_delay, played.redundant)  # fmt: skip

    async def close(self) -> CallStats:
        """Hang up the media; the final statistics are kept."""
        if self._final is not None:
            return self._final
        self._ended = time.monotonic()
        try:
            final = await self.stats()
        except Exception:
            log.debug("no statistics from a broken connection", exc_info=True)
            final = CallStats()
        if self._watching is not None:
            self._watching.cancel()
            # A watch that failed on a broken connection must not stop the hang-up.
            await asyncio.gather(self._watching, return_exceptions=True)
        for task in list(self._gathering):
            task.cancel()
        await asyncio.gather(*self._gathering, return_exceptions=True)
        await self.playout.stop()
        await self.pc.close()
        # As aiortc's own starts, ours end once the transports are closed.
        await asyncio.gather(*self._starting, return_exceptions=True)
        self._final = final
        return final
