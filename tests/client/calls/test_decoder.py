"""The receive path's Opus decoder: libopus (RFC 6716) through ctypes, with loss concealment and
in-band FEC, on packets from the same libopus encoder the sending track uses (PyAV)."""

from __future__ import annotations

import array
import fractions
import math

import av
import numpy as np
import pytest
from av.audio.frame import AudioFrame

from schnack.client.calls.decoder import OpusDecoder, OpusError, has_fec, join, packet_samples

RATE = 48000


def voice(seconds: float) -> array.array[int]:
    """Something speech-like enough for SILK's voice activity detection: a 140 Hz buzz with its
    harmonics, its pitch gliding and its loudness changing four times a second, and breath noise."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / RATE
    level = 0.7 + 0.3 * np.abs(np.sin(2 * np.pi * 2 * t))
    buzz = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(7).normal(0, 800, len(t))
    return array.array("h", (5000 * level * buzz + noise).astype(np.int16).tobytes())


def encode(pcm: array.array[int], *, frame_ms: int = 20, fec: bool = True, bitrate: int = 24000,
           application: str = "voip") -> list[bytes]:  # fmt: skip
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = RATE, "mono", "s16", bitrate
    codec.time_base = fractions.Fraction(1, RATE)
    codec.options = {"application": application, "frame_duration": str(frame_ms), "fec": "1" if fec else "0",
                     "packet_loss": "10" if fec else "0", "vbr": "on"}  # fmt: skip
    codec.open()
    size = RATE * frame_ms // 1000
    packets = []
    for start in range(0, len(pcm) - size + 1, size):
        frame = AudioFrame(format="s16", layout="mono", samples=size)
        frame.planes[0].update(pcm[start : start + size].tobytes())
        frame.sample_rate, frame.pts, frame.time_base = RATE, start, fractions.Fraction(1, RATE)
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets


def samples(pcm: bytes) -> array.array[int]:
    return array.array("h", pcm)


def snr(decoded: bytes, reference: bytes) -> float:
    """How close ``decoded`` is to ``reference``, in dB (higher is closer)."""
    a, b = samples(decoded), samples(reference)
    assert len(a) == len(b)
    noise = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    return 10 * math.log10(sum(y * y for y in b) / max(noise, 1))


def clean_decode(packets: list[bytes]) -> list[bytes]:
    decoder = OpusDecoder()
    return [decoder.decode(p) for p in packets]


def test_packet_durations_and_bad_packets() -> None:
    pcm = voice(0.5)
    assert {packet_samples(p) for p in encode(pcm, frame_ms=20)} == {960}
    assert {packet_samples(p) for p in encode(pcm, frame_ms=60)} == {2880}
    with pytest.raises(OpusError):
        packet_samples(b"")
    with pytest.raises(OpusError):
        packet_samples(bytes([0x03]))  # code 3 without its frame count byte (RFC 6716 §3.2.5)


def test_fec_flag_is_read_from_the_silk_header() -> None:
    pcm = voice(1.0)
    with_fec = encode(pcm, fec=True)
    # libopus adds FEC to the frames it judges active speech: most, not all.
    assert sum(has_fec(p) for p in with_fec) > len(with_fec) // 4
    assert not has_fec(with_fec[0])  # nothing before the first packet to protect
    assert not any(has_fec(p) for p in encode(pcm, fec=False))
    # CELT-only packets (TOC configurations 16-31) never carry FEC.
    celt = encode(pcm, fec=True, application="lowdelay")
    assert all(p[0] >> 3 >= 16 for p in celt) and not any(has_fec(p) for p in celt)
    assert not has_fec(b"")


def test_concealment_continues_the_sound() -> None:
    packets = encode(voice(1.0))
    reference = clean_decode(packets)
    decoder = OpusDecoder()
    for packet in packets[:30]:
        decoder.decode(packet)
    concealed = decoder.conceal(960)
    assert len(concealed) == 960 * 2
    # Not silence: libopus carries the voice on into the gap.
    assert max(abs(x) for x in samples(concealed)) > 1000
    assert snr(concealed, reference[30]) > snr(bytes(len(concealed)), reference[30])
    # Odd lengths come in whole 2.5 ms; several frames at once are fine.
    assert len(decoder.conceal(1000)) == 1080 * 2
    assert len(decoder.conceal(3 * 960)) == 3 * 960 * 2


def test_fec_recovers_a_lost_packet() -> None:
    packets = encode(voice(2.0))
    reference = clean_decode(packets)
    gains = []
    for lost in [n for n in range(20, 95) if has_fec(packets[n + 1])][::3]:
        by_fec, by_plc = OpusDecoder(), OpusDecoder()
        for packet in packets[:lost]:
            by_fec.decode(packet)
            by_plc.decode(packet)
        recovered = by_fec.recover(packets[lost + 1], 960)
        concealed = by_plc.conceal(960)
        gains.append((snr(recovered, reference[lost]), snr(concealed, reference[lost])))
        # The stream goes on undisturbed after the recovered packet.
        assert snr(by_fec.decode(packets[lost + 1]), reference[lost + 1]) > 5
    assert len(gains) >= 5
    fec_snr = sorted(g[0] for g in gains)[len(gains) // 2]
    plc_snr = sorted(g[1] for g in gains)[len(gains) // 2]
    assert fec_snr > 5 and fec_snr > plc_snr + 3, gains


def test_recover_without_fec_conceals() -> None:
    packets = encode(voice(1.0), fec=False)
    decoder = OpusDecoder()
    for packet in packets[:20]:
        decoder.decode(packet)
    assert len(decoder.recover(packets[21], 960)) == 960 * 2
    assert len(decoder.recover(packets[22], 3 * 960)) == 3 * 960 * 2  # more than one packet missing


def test_frame_sizes_change_mid_stream() -> None:
    """A profile switch mid-call: 20 ms packets, then 60 ms ones, into the same decoder."""
    pcm = voice(2.0)
    first, second = encode(pcm[:RATE], frame_ms=20), encode(pcm[RATE:], frame_ms=60, fec=False, bitrate=10000)
    decoder = OpusDecoder()
    out = b"".join(decoder.decode(p) for p in first + second)
    assert len(out) == (len(first) * 960 + len(second) * 2880) * 2
    with pytest.raises(OpusError):
        decoder.decode(bytes([0xFF, 0xFF, 0xFF]))


def test_join_builds_120_ms_packets_from_60_ms_frames() -> None:
    """RFC 6716 §3.2: two 60 ms frames in one packet decode to what the two packets decode to."""
    packets = encode(voice(0.6), frame_ms=60, fec=False, bitrate=12000)
    assert len(packets) == 10 and all(p[0] & 0x03 == 0 for p in packets)
    joined = [j for pair in zip(packets[::2], packets[1::2], strict=True) for j in join(pair)]
    assert len(joined) == 5 and all(packet_samples(j) == 5760 for j in joined)
    # One TOC byte instead of two, one byte for the first frame's length.
    assert sum(map(len, joined)) == sum(map(len, packets))
    assert b"".join(clean_decode(joined)) == b"".join(clean_decode(packets))
    # No packet holds more than 120 ms: a third frame starts the next one.
    assert [packet_samples(j) for j in join(packets[:3])] == [5760, 2880]


def test_join_keeps_frames_that_cannot_share_a_packet() -> None:
    pcm = voice(0.2)
    # SILK frames of 20 and 60 ms have TOCs of their own (RFC 6716 §3.1).
    short = encode(pcm, frame_ms=20, fec=False, bitrate=12000)[0]
    long = encode(pcm, frame_ms=60, fec=False, bitrate=12000)[0]
    assert join([short, long]) == [short, long]
    assert join([long]) == [long] and join([]) == []
    with pytest.raises(OpusError):
        join([long, b""])
