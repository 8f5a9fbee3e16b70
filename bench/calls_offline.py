"""Calls without a network: bytes and speech quality of one encoder setting, with and without loss.

``python -m bench.calls_offline`` encodes both sides of the conversation of :mod:`bench.calls`
with the sending track's own code (:meth:`OpusTrack.encode`: libopus through PyAV, frames of at
most 60 ms joined into packets, DTX with its keepalive; with ``--red`` each packet an RFC 2198
packet carrying the one before), drops a seeded random share of the
packets as the benchmark's proxy does, plays the rest through the receive path (:class:`Playout`:
jitter buffer, libopus decoding with concealment and FEC) on a simulated clock with a fixed
network delay (``--jitter-ms`` adds a seeded random share), and scores what comes out with
PESQ-WB against what was said. It takes seconds where a call takes minutes, so settings can be compared before one goes into ``make bench-calls``.

Printed: KB/min of one direction (mean of the two sides), the Opus payload plus
``--header-bytes`` a packet (48: IPv4 20, UDP 8, TURN 4, RTP 12, a 4-byte SRTP tag; 60 with
aiortc's AES-GCM tag); PESQ-WB without loss and at each loss rate, the mean over both sides and
the seeds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiortc.rtp import RtpPacket

from schnack.client.calls.media import DATA_SAVER, RATE, TICK, EncoderSettings, OpusTrack, Playout, WavSink

from .calls import conversation, read_mono, score

PAYLOAD_TYPE = 111
RED_PAYLOAD_TYPE = 63
NETWORK_DELAY = 0.02


@dataclass(frozen=True)
class Setting(EncoderSettings):
    """Encoder settings, and the frame libopus encodes if not the track's choice (``frames`` ms;
    0: the track's, at most 60 ms, joined into packets of ``frame_ms``)."""

    frames: int = 0

    @property
    def encode_ms(self) -> int:
        return self.frames or super().encode_ms


@dataclass(frozen=True)
class Sent:
    """A packet as it left: when (seconds from the start), its RTP timestamp and payload, and
    whether that is RED (RFC 2198) rather than Opus."""

    time: float
    timestamp: int
    payload: bytes
    red: bool = False


class Collected(WavSink):
    """The played audio, kept in memory (the simulated clock runs without an event loop)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.pcm = bytearray()

    def write(self, pcm: bytes, *, filled: int = 0) -> None:
        self.pcm += pcm
        self.samples += len(pcm) // 2
        self.filled += filled


def send(setting: Setting, speech: Path) -> tuple[list[Sent], float]:
    """The packets the track sends for ``speech``, and its length in seconds."""
    pcm = read_mono(speech, RATE).astype("<i2").tobytes()
    track = OpusTrack(None)
    track.configure(setting)
    if setting.red:
        track.use_red(RED_PAYLOAD_TYPE, PAYLOAD_TYPE)
    samples = RATE * setting.frame_ms // 1000
    sent = []
    for start in range(0, len(pcm) // 2 - samples + 1, samples):
        leaves = (start + samples) / RATE  # once the frame has been spoken
        sent += [Sent(leaves, *packet) for packet in track.encode(pcm[2 * start : 2 * (start + samples)])]
    return sent, len(pcm) / 2 / RATE


def play(sent: Sequence[Sent], seconds: float, loss: float, seed: int, jitter: float = 0.0) -> bytes:
    """What the receive path plays (16-bit mono 48 kHz) when a seeded ``loss`` share of ``sent``
    never arrives and the rest arrives :data:`NETWORK_DELAY` after it left, plus up to ``jitter``
    seconds (uniform, seeded; packets stay in order)."""
    # Separate generators: the same seed loses the same packets whatever the jitter.
    losing, delaying = random.Random(seed), random.Random(-seed)
    arriving = []
    for seq, p in enumerate(sent):
        lost, extra = losing.random() < loss, delaying.uniform(0.0, jitter)
        if not lost:
            arriving.append((p.time + NETWORK_DELAY + extra, seq, p))
    arriving.sort(key=lambda a: a[0])
    sink = Collected()
    playout = Playout(sink)
    playout.payload_types.add(PAYLOAD_TYPE)
    playout.red_types.add(RED_PAYLOAD_TYPE)
    now, index = 0.0, 0
    while now < seconds + 1.0:
        while index < len(arriving) and arriving[index][0] <= now:
            arrival, seq, packet = arriving[index]
            rtp = RtpPacket(payload_type=RED_PAYLOAD_TYPE if packet.red else PAYLOAD_TYPE, sequence_number=seq & 0xFFFF,
                            timestamp=packet.timestamp, payload=packet.payload)  # fmt: skip
            playout.packet(rtp, arrival)
            index += 1
        playout.tick(now)
        now += TICK
    return bytes(sink.pcm)


def pesq_wb(reference: Path, pcm: bytes, workdir: Path) -> float:
    heard = workdir / "heard.wav"
    with wave.open(str(heard), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)
    return score(reference, heard)[0]


def measure(setting: Setting, sides: Sequence[Path], *, losses: Sequence[float], seeds: Sequence[int],
            header_bytes: int, workdir: Path, jitter: float = 0.0) -> tuple[float, dict[float, float]]:  # fmt: skip
    """KB/min of one direction (mean of ``sides``) and PESQ-WB per loss rate (mean of sides and seeds)."""
    rates: list[float] = []
    scores: dict[float, list[float]] = {loss: [] for loss in losses}
    for side in sides:
        sent, seconds = send(setting, side)
        rates.append(sum(len(p.payload) + header_bytes for p in sent) / 1000 / seconds * 60)
        for loss in losses:
            for seed in seeds if loss else seeds[:1]:
                scores[loss].append(pesq_wb(side, play(sent, seconds, loss, seed, jitter), workdir))
    return statistics.mean(rates), {loss: statistics.mean(values) for loss, values in scores.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.calls_offline", description=__doc__.split("\n\n")[0])
    saver = EncoderSettings.negotiate(DATA_SAVER, None)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the conversation (default 60)")
    parser.add_argument("--bitrate", type=int, default=saver.bitrate, help=f"bit/s (default {saver.bitrate})")
    parser.add_argument("--packet-ms", type=int, default=saver.frame_ms, help=f"default {saver.frame_ms}")
    parser.add_argument("--frame-ms", type=int, default=0,
                        help="the frame libopus encodes (default: the track's choice, at most 60)")  # fmt: skip
    parser.add_argument("--playback-rate", type=int, default=saver.playback_rate,
                        help=f"maxplaybackrate, Hz (default {saver.playback_rate})")  # fmt: skip
    parser.add_argument("--keepalive", type=float, default=saver.keepalive,
                        help=f"seconds between DTX packets in silence (default {saver.keepalive:g})")  # fmt: skip
    parser.add_argument("--fec", action="store_true", help="libopus in-band FEC (default: none, as the data saver)")
    parser.add_argument("--loss-hint", type=int, default=EncoderSettings.loss_percent,
                        help=f"the loss libopus is told to expect with --fec, percent "
                             f"(default {EncoderSettings.loss_percent})")  # fmt: skip
    parser.add_argument("--red", action="store_true",
                        help="RFC 2198: each packet also carries the one before (as the data saver's protected mode)")  # fmt: skip
    parser.add_argument("--header-bytes", type=int, default=48, help="per packet (default 48)")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="each packet up to this much later than the fixed delay, uniform (default 0)")  # fmt: skip
    parser.add_argument("--loss", default="0,5", help="loss rates in percent, comma-separated (default 0,5)")
    parser.add_argument("--seeds", default="1,2,3", help="loss patterns, comma-separated (default 1,2,3)")
    args = parser.parse_args(argv)
    setting = Setting(args.bitrate, args.packet_ms, fec=args.fec, dtx=True, loss_percent=args.loss_hint,
                      playback_rate=args.playback_rate, keepalive=args.keepalive, red=args.red,
                      frames=args.frame_ms)  # fmt: skip
    losses = [float(x) / 100 for x in args.loss.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-calls-offline-") as temporary:
        workdir = Path(temporary)
        sides = conversation(workdir / "speech", args.seconds)
        rate, scores = measure(setting, sides, losses=losses, seeds=[int(s) for s in args.seeds.split(",")],
                               header_bytes=args.header_bytes, workdir=workdir,
                               jitter=args.jitter_ms / 1000)  # fmt: skip
    figures = ", ".join(f"{score:.2f} at {loss:.0%}" for loss, score in scores.items())
    fec = f", FEC for {args.loss_hint} % loss" if args.fec else ""
    fec += ", RED" if args.red else ""
    print(f"{args.bitrate} bit/s, {args.packet_ms} ms packets of {setting.encode_ms} ms frames{fec}, "
          f"maxplaybackrate {args.playback_rate}, keepalive {args.keepalive:g} s, jitter {args.jitter_ms:g} ms: "
          f"{rate:.1f} KB/min one way; PESQ-WB {figures}")  # fmt: skip


if __name__ == "__main__":
    main()
