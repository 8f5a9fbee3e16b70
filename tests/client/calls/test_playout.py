"""The playout (jitter buffer, libopus decoder and clock together) on real Opus packets, fed with
the arrival times a network would give them; what it plays is read back from its WAV file."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
from aiortc.rtp import RtpPacket
from av.audio.frame import AudioFrame

from bench.calls_offline import Collected
from schnack.client.calls.media import (
    FRAME,
    RATE,
    SILENCE_RMS,
    TICK,
    EncoderSettings,
    OpusTrack,
    Outgoing,
    Playout,
    WavSink,
)
from schnack.client.calls.red import Block, pack, unpack

from .audio import read_wav

PT = 111
RED = 63


def tone_bursts(bursts: list[tuple[float, float]], seconds: float) -> np.ndarray:
    """A 700 Hz tone in the (start, length) ``bursts``, silence elsewhere, 16-bit 48 kHz."""
    pcm = np.zeros(int(seconds * RATE), np.int16)
    for start, length in bursts:
        t = np.arange(int(length * RATE)) / RATE
        first = int(start * RATE)
        pcm[first : first + len(t)] = (13000 * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
    return pcm


def dtx_packets(pcm: np.ndarray) -> list[tuple[int, bytes]]:
    """``pcm`` as 20 ms Opus packets (timestamp, payload), 32 kbit/s with FEC, and silence
    suppressed as the sending track does it: the first silent frame of a pause is sent, then
    nothing until the sound comes back."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = RATE, "mono", "s16", 32000
    codec.time_base = fractions.Fraction(1, RATE)
    codec.options = {"application": "voip", "frame_duration": "20", "fec": "1", "packet_loss": "10"}
    codec.open()
    packets = []
    silence_sent = False
    for at in range(0, len(pcm) - FRAME + 1, FRAME):
        chunk = pcm[at : at + FRAME]
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = RATE, at, codec.time_base
        payload = b"".join(bytes(p) for p in codec.encode(frame))
        silent = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) < SILENCE_RMS
        if silent and silence_sent:
            continue
        silence_sent = silent
        packets.append((at, payload))
    return packets


def burst_energies(played: np.ndarray, starts: list[float], length: float) -> list[float]:
    """The energy of each burst in what was played: the loud stretch beginning nearest each
    start (the playout adds its delay), relative to a whole tone of ``length``."""
    whole = (13000**2 / 2) * length * RATE
    loud = np.abs(played.astype(np.float64)) > 2000
    energies = []
    for start in starts:
        window = played[int(start * RATE) : int((start + 0.4) * RATE)].astype(np.float64)
        flags = loud[int(start * RATE) : int((start + 0.4) * RATE)]
        energies.append(float(np.sum(window[flags] ** 2)) / whole if flags.any() else 0.0)
    return energies


def red_stream(pcm: np.ndarray) -> list[Outgoing]:
    """``pcm`` as the data saver's protected packets: 60 ms, 12 kbit/s, each a RED packet
    carrying the one before (RFC 2198), built by the sending track."""
    track = OpusTrack(None)
    track.configure(EncoderSettings(12000, 60, False, True, playback_rate=12000, keepalive=1.0, red=True))
    track.use_red(RED, PT)
    step = RATE * 60 // 1000
    return [p for at in range(0, len(pcm) - step + 1, step) for p in track.encode(pcm[at : at + step].tobytes())]


def play_red(packets: list[tuple[int, Outgoing]], seconds: float) -> tuple[bytes, Playout]:
    """What the playout plays of ``packets`` (sequence number, packet), each arriving 10 ms
    after it was spoken, on a simulated clock."""
    sink = Collected()
    playout = Playout(sink)
    playout.payload_types.add(PT)
    playout.red_types.add(RED)
    pending = sorted(packets, key=lambda p: p[1].timestamp)
    now = 0.0
    while now < seconds:
        while pending and (pending[0][1].timestamp + 2880) / RATE + 0.01 <= now:
            seq, packet = pending.pop(0)
            rtp = RtpPacket(payload_type=RED if packet.red else PT, sequence_number=seq, timestamp=packet.timestamp,
                            payload=packet.payload)  # fmt: skip
            playout.packet(rtp, now)
        playout.tick(now)
        now += TICK
    return bytes(sink.pcm), playout


async def test_a_lost_red_packet_plays_from_the_next_ones_copy() -> None:
    """RFC 2198: the copy is the lost packet bit for bit, so what plays is what would have
    played had nothing been lost; garbage in RED packets is dropped and counted."""
    sent = list(enumerate(red_stream(tone_bursts([(0.0, 1.5)], 1.5))))
    assert all(packet.red for _, packet in sent)
    clean, _ = play_red(sent, 2.0)
    lossy, playout = play_red([p for p in sent if p[0] != 10], 2.0)
    assert lossy == clean
    stats = playout.buffer.stats
    assert (stats.redundant, stats.lost, stats.concealed) == (1, 0, 0)
    # Malformed payloads (headers cut short, a block running past the end) are dropped whole;
    # a redundant block that is no Opus is left out and its primary still plays.
    seq, first = sent[3]
    junk = [b"", b"\xef\x00\x2d", b"\xef\x00\x2c\x0a\x6f" + bytes(5)]
    broken_copy = pack((Block(PT, 2880, b""),), Block(PT, 0, unpack(first.payload)[-1].data))
    garbled = [(40000 + n, Outgoing(first.timestamp, payload, red=True)) for n, payload in enumerate(junk)]
    with_junk, playout = play_red([*garbled, *(p if p[0] != seq else (seq, first._replace(payload=broken_copy))
                                               for p in sent)], 2.0)  # fmt: skip
    assert with_junk == clean
    assert playout.malformed == len(junk) + 1


async def test_a_talk_spurt_arriving_late_after_a_pause_plays_whole(tmp_path: Path) -> None:
    """Early in a call: 300 ms of tone, a pause, then isolated 100 ms bursts. The first burst
    after the pause comes 60 ms later than the stream did so far (the path's delay grew while the
    sender was silent); its packets arrive after the time the jitter buffer had planned for
    them, which it had filled with silence. They must still be played, whole: the silence
    becomes extra delay, shed again in the next pause. (They used to be dropped as late, and
    the buffer then skipped the burst's remaining packets as "silence" while shrinking its
    delay back: about a quarter of the burst's energy arrived.)"""
    bursts = [(0.0, 0.3), (0.6, 0.1), (1.2, 0.1), (1.8, 0.1)]
    packets = dtx_packets(tone_bursts(bursts, 2.4))
    slow_from, slow_until = int(0.6 * RATE), int(0.8 * RATE)
    start = 100.0
    arrivals = sorted(
        (start + (ts + FRAME) / RATE + (0.065 if slow_from <= ts < slow_until else 0.005), seq, ts, payload)
        for seq, (ts, payload) in enumerate(packets)
    )
    sink = WavSink(tmp_path / "played.wav")
    playout = Playout(sink)
    playout.payload_types.add(PT)
    sink.open()
    now = start
    pending = list(arrivals)
    while now < start + 3.0:
        while pending and pending[0][0] <= now:
            arrival, seq, ts, payload = pending.pop(0)
            playout.packet(RtpPacket(payload_type=PT, sequence_number=seq, timestamp=ts, payload=payload), arrival)
        playout.tick(now)
        now += TICK
    await sink.stop()
    played = np.frombuffer(read_wav(tmp_path / "played.wav").tobytes(), np.int16)
    energies = burst_energies(played, [s for s, _ in bursts[1:]], 0.1)
    assert all(e > 0.85 for e in energies), energies
    assert playout.buffer.stats.late == 0
