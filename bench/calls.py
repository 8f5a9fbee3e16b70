"""Voice calls: bytes on the wire and speech quality, with and without packet loss.

``python -m bench.calls`` (``make bench-calls``) has two schnack clients hold a turn-taking
conversation of espeak-ng speech (each talks about half of the time, the other listening)
through ``schnack serve`` on loopback, once per profile (normal, data saver) and loss rate.

Loopback has no loss and the kernel here no ``tc netem``, so the media is forced through a small
UDP proxy: both clients call relay-only (``relay_only``) through a private coturn, and the TURN
server the schnack server hands out (XEP-0215) is :class:`LossProxy`, which forwards to coturn.
The proxy drops a seeded random share of the RTP packets the clients send (the audio; STUN,
DTLS and RTCP pass), so each audio packet crosses one lossy leg: the loss rate is end to end.

Measured per profile and loss rate:

- **bytes per minute** of one client, both directions, counted at the proxy as UDP datagrams
  with their IPv4 (20) and UDP (8) headers, from the moment audio flows to the end of the
  conversation. TURN's ChannelData framing adds 4 bytes per packet to what a direct path carries;
- **PESQ-WB** (ITU-T P.862.2, the ``pesq`` package) of what each side heard against what the
  other side said, both at 16 kHz, aligned by cross-correlation first; the lower of the two;
- **call set-up**: from ``Client.call`` (the callee answers as soon as it rings) until both
  sides play audio;
- **mouth-to-ear delay**: from when a sample was spoken into the sending track until it was
  played at the other side (packetization, network, jitter buffer and playout clock);
- the receive path's counts: packets lost, rebuilt from FEC, played from a redundant copy
  (RFC 2198 RED), concealed, late.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from pesq import pesq

from schnack.client import Client
from schnack.client.calls.calls import Call, IncomingCall
from schnack.client.calls.media import CallStats

from .ports import free_port
from .servers import SchnackDriver, Target

PASSWORD = "bench-calls-password"
SPEECH_RATE = 16000
HEADERS = 28  # IPv4 (20) + UDP (8) per datagram
TIMEOUT = 60.0
# Turns of the conversation, alternating between the caller and the callee.
LINES = (
    "Hello, it is good to hear you. Did the parcel arrive this morning?",
    "Yes, it came just after nine. The box was a little wet, but everything inside is fine.",
    "Great. I was worried, because the rain started right when they collected it.",
    "No harm done. Shall we meet on Thursday to go through the plans for the garden?",
    "Thursday works for me. Would four in the afternoon suit you, or is that too early?",
    "Four is perfect. I will bring the drawings and the list of plants we talked about.",
    "Please bring the seeds as well. The tomatoes need to go in before the end of the month.",
    "I will. Do you think the old apple tree should stay where it is, near the fence?",
    "I would keep it. It gives shade in summer, and the children love climbing it.",
    "Fair enough. Then the new beds go along the south wall, where the sun is strongest.",
    "Exactly. And we can put the bench under the tree, so we can sit there in the evening.",
    "Lovely. I have to go now, the train is arriving. See you on Thursday at four.",
)
VOICES = ("en-us", "en-gb")


# -- speech -------------------------------------------------------------------------------------


def read_mono(path: Path, rate: int) -> np.ndarray:
    """Any audio file as 16-bit mono samples at ``rate`` (FFmpeg resamples)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def conversation(directory: Path, seconds: float) -> tuple[Path, Path]:
    """Two 16 kHz WAV files of ``seconds`` each: the caller's and the callee's side of a
    conversation whose turns alternate, each side silent while the other speaks."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    directory.mkdir(parents=True, exist_ok=True)
    pause = np.zeros(SPEECH_RATE // 2, np.int16)
    sides: list[list[np.ndarray]] = [[], []]
    total = 0
    turn = 0
    while total < seconds * SPEECH_RATE:
        line = LINES[turn % len(LINES)]
        raw = directory / f"line{turn % len(LINES)}-{turn % 2}.wav"
        if not raw.exists():
            subprocess.run([espeak, "-v", VOICES[turn % 2], "-s", "150", "-w", str(raw), line],
                           check=True, capture_output=True, timeout=60)  # fmt: skip
        spoken = np.concatenate([read_mono(raw, SPEECH_RATE), pause])
        sides[turn % 2].append(spoken)
        sides[(turn + 1) % 2].append(np.zeros(len(spoken), np.int16))
        total += len(spoken)
        turn += 1
    length = int(seconds * SPEECH_RATE)
    paths = (directory / "caller.wav", directory / "callee.wav")
    for path, parts in zip(paths, sides, strict=True):
        samples = np.concatenate(parts)[:length]
        if not samples.any():
            raise ValueError(f"{seconds:g} s is too short a conversation: one side never speaks")
        _write_wav(path, samples, SPEECH_RATE)
    return paths


# -- the lossy path -----------------------------------------------------------------------------


def is_rtp(datagram: bytes) -> bool:
    """Whether a datagram from a TURN client is ChannelData (RFC 8656 §12.4) carrying RTP:
    first byte 128-191 (RFC 7983 §7) and not an RTCP packet type (RFC 5761 §4: 64-95 masked)."""
    if len(datagram) < 6 or not 0x40 <= datagram[0] <= 0x4F:
        return False
    first, second = datagram[4], datagram[5]
    return 128 <= first <= 191 and not 64 <= (second & 0x7F) <= 95


@dataclass
class Leg:
    """One client's traffic through the proxy, in datagrams and bytes (with IP and UDP headers)."""

    sent_packets: int = 0
    sent_bytes: int = 0
    received_packets: int = 0
    received_bytes: int = 0
    dropped: int = 0
    rtp: int = 0
    rtp_bytes: int = 0  # of sent_bytes

    @property
    def total_bytes(self) -> int:
        return self.sent_bytes + self.received_bytes


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: LossProxy, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy.to_client(self.client, data)


class LossProxy(asyncio.DatagramProtocol):
    """A UDP relay in front of a TURN server: one upstream socket per client (so the TURN server
    tells the clients apart), a seeded random share ``loss`` of the clients' RTP dropped, and
    every datagram counted per client (:class:`Leg`)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.loss = 0.0
        self.legs: dict[tuple[str, int], Leg] = {}
        self._random = random.Random()
        self._listener: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self.port = 0

    def set_loss(self, loss: float, seed: int = 1) -> None:
        """Drop ``loss`` of the RTP from now on, the same packets for the same ``seed``."""
        self.loss = loss
        self._random.seed(seed)

    async def start(self) -> LossProxy:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self._listener = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        leg = self.legs.setdefault(addr, Leg())
        leg.sent_packets += 1
        leg.sent_bytes += len(data) + HEADERS
        if is_rtp(data):
            leg.rtp += 1
            leg.rtp_bytes += len(data) + HEADERS
            if self._random.random() < self.loss:
                leg.dropped += 1
                return
        upstream = self._upstreams.get(addr)
        if upstream is not None:
            upstream.sendto(data)
        elif addr in self._pending:
            self._pending[addr].append(data)
        else:
            self._pending[addr] = [data]
            asyncio.get_running_loop().create_task(self._connect(addr))

    async def _connect(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Upstream(self, client), remote_addr=self.upstream)
        self._upstreams[client] = transport
        for data in self._pending.pop(client, []):
            transport.sendto(data)

    def to_client(self, client: tuple[str, int], data: bytes) -> None:
        leg = self.legs.setdefault(client, Leg())
        leg.received_packets += 1
        leg.received_bytes += len(data) + HEADERS
        if self._listener is not None:
            self._listener.sendto(data, client)

    def snapshot(self) -> dict[tuple[str, int], Leg]:
        return {addr: Leg(**asdict(leg)) for addr, leg in self.legs.items()}

    def close(self) -> None:
        for transport in self._upstreams.values():
            transport.close()
        if self._listener is not None:
            self._listener.close()


@contextlib.contextmanager
def coturn(schnack_config: Path, port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's turnserver on ``port``, configured by ``schnack admin turn-config --loopback``
    from a schnack configuration naming that port."""
    turnserver_path = shutil.which("turnserver")
    if turnserver_path is None:
        raise RuntimeError("coturn is not installed (apt-get install coturn)")
    made = subprocess.run([sys.executable, "-m", "schnack.cli", "admin", "turn-config", "--loopback", "-c",
                           str(schnack_config)], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"schnack admin turn-config failed: {made.stderr.strip()}")
    with turnserver(turnserver_path, made.stdout, workdir) as process:
        yield process


@contextlib.contextmanager
def turnserver(binary: str, config_text: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run coturn's ``binary`` with ``config_text`` (its files and log in ``workdir``) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "turnserver.conf"
    conf.write_text(config_text)
    command = [binary, "-c", str(conf), "--pidfile", str(workdir / "turnserver.pid"),
               "--db", str(workdir / "turndb"), "--log-file", "stdout", "--simple-log"]  # fmt: skip
    with (workdir / "turnserver.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def coturn_ready(process: subprocess.Popen[bytes], port: int) -> None:
    """Until coturn answers a STUN Binding request (RFC 8489 §6) on its UDP port."""
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, secrets.token_bytes(12))
    deadline = time.monotonic() + TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"turnserver exited with {process.returncode}")
            sock.sendto(request, ("127.0.0.1", port))
            try:
                if sock.recv(2048)[8:20] == request[8:20]:
                    return
            except OSError:
                continue
    raise RuntimeError(f"turnserver does not answer on port {port}")


def extdisco(port: int, secret: str) -> str:
    """The ``[modules.extdisco]`` TOML of a UDP TURN relay on 127.0.0.1:``port``."""
    return (
        '[modules]\nenable = ["extdisco"]\n[modules.extdisco]\n'
        f'turn_host = "127.0.0.1"\nturn_port = {port}\nturn_transports = ["udp"]\n'
        f'secret = "{secret}"\nlifetime = 3600\n'
    )


class CallsServer(SchnackDriver):
    """``schnack serve`` as the benchmarks run it, handing out ``turn_port`` as its TURN relay."""

    def __init__(self, turn_port: int, secret: str) -> None:
        super().__init__()
        self.turn_port = turn_port
        self.secret = secret

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        argv = super().prepare(usernames, password)
        config = self.dir / "schnack.toml"
        config.write_text(config.read_text() + extdisco(self.turn_port, self.secret))
        return argv


@contextlib.asynccontextmanager
async def relay_path(workdir: Path) -> AsyncIterator[tuple[Target, LossProxy]]:
    """coturn, the loss proxy in front of it, and a schnack server handing the proxy out as its
    TURN relay, with the users ``caller`` and ``callee``."""
    secret = secrets.token_urlsafe(24)
    turn_port = free_port(udp=True)
    relay_config = workdir / "relay.toml"
    relay_config.write_text('domains = ["bench.localhost"]\n' + extdisco(turn_port, secret))
    with coturn(relay_config, turn_port, workdir / "coturn") as process:
        await asyncio.to_thread(coturn_ready, process, turn_port)
        proxy = await LossProxy(("127.0.0.1", turn_port)).start()
        try:
            with CallsServer(proxy.port, secret) as server:
                target = await asyncio.to_thread(server.start, ["caller", "callee"], PASSWORD)
                yield target, proxy
        finally:
            proxy.close()


# -- one call -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """One call's results; bytes per minute per client (mean of the two), both directions, and
    of those the audio (RTP: what both clients sent)."""

    profile: str
    loss: float
    seconds: float
    bytes_per_minute: float
    rtp_bytes_per_minute: float
    pesq_caller_heard: float
    pesq_callee_heard: float
    setup: float
    delay: float
    dropped: int
    stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pesq(self) -> float:
        return min(self.pesq_caller_heard, self.pesq_callee_heard)


def align(reference: np.ndarray, heard: np.ndarray) -> tuple[np.ndarray, int]:
    """``heard`` shifted to line up with ``reference`` (the lag of the cross-correlation's
    peak), cut or padded to its length; and that lag in samples."""
    size = 1 << int(np.ceil(np.log2(len(reference) + len(heard))))
    spectrum = np.fft.rfft(heard.astype(np.float64), size) * np.conj(np.fft.rfft(reference.astype(np.float64), size))
    correlation = np.fft.irfft(spectrum, size)
    lag = int(np.argmax(correlation))
    if lag > size // 2:
        lag -= size
    shifted = heard[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, heard.dtype), heard])
    shifted = shifted[: len(reference)]
    if len(shifted) < len(reference):
        shifted = np.concatenate([shifted, np.zeros(len(reference) - len(shifted), heard.dtype)])
    return shifted, lag


def score(reference: Path, heard: Path) -> tuple[float, int]:
    """PESQ-WB of ``heard`` against ``reference`` at 16 kHz after alignment, and the lag."""
    said = read_mono(reference, SPEECH_RATE)
    aligned, lag = align(said, read_mono(heard, SPEECH_RATE))
    return float(pesq(SPEECH_RATE, said.astype(np.float64), aligned.astype(np.float64), "wb")), lag


async def _rings(client: Client) -> IncomingCall:
    async for incoming in client.incoming_calls():
        return incoming
    raise RuntimeError("the call never rang")


async def _playing(call: Call) -> None:
    while call.media is None or call.media.sink.started is None:  # noqa: ASYNC110 -- no event to wait on
        await asyncio.sleep(0.005)


async def one_call(target: Target, proxy: LossProxy, speech: tuple[Path, Path], workdir: Path, *,
                   profile: str, loss: float, seconds: float, seed: int = 1) -> Figures:  # fmt: skip
    """A call of ``seconds`` of the conversation in ``speech`` through ``proxy`` at ``loss``."""
    saver = profile == "data-saver"
    heard = (workdir / f"{profile}-{loss:g}-caller-heard.wav", workdir / f"{profile}-{loss:g}-callee-heard.wav")
    clients = [Client(f"{name}@{target.domain}/bench", PASSWORD, host=target.host, port=target.port,
                      direct_tls=False, verify=False) for name in ("caller", "callee")]  # fmt: skip
    for client in clients:
        await client.connect()
    try:
        async with asyncio.timeout(TIMEOUT + seconds * 2):
            ringing = asyncio.ensure_future(_rings(clients[1]))
            await asyncio.sleep(0)
            proxy.set_loss(0.0)
            began = time.monotonic()
            call = await clients[0].call(f"callee@{target.domain}", data_saver=saver, source=speech[0],
                                         sink=heard[0], relay_only=True)  # fmt: skip
            answered = await (await ringing).answer(data_saver=saver, source=speech[1], sink=heard[1], relay_only=True)
            await asyncio.gather(_playing(call), _playing(answered))
            setup = time.monotonic() - began
            assert call.media is not None and answered.media is not None
            proxy.set_loss(loss, seed)
            before = proxy.snapshot()
            start = time.monotonic()
            await asyncio.gather(call.media.sink.heard(seconds), answered.media.sink.heard(seconds))
            elapsed = time.monotonic() - start
            after = proxy.snapshot()
            delays = [_mouth_to_ear(speaker, listener) for speaker, listener in ((call, answered), (answered, call))]
            stats: list[CallStats | None] = [await call.hangup(), await answered.wait_ended()]
    finally:
        for client in clients:
            await client.close()
    per_client = [after[a].total_bytes - (before[a].total_bytes if a in before else 0) for a in after]
    moved = [b for b in per_client if b > 0]
    dropped = sum(after[a].dropped - (before[a].dropped if a in before else 0) for a in after)
    rtp = sum(after[a].rtp_bytes - (before[a].rtp_bytes if a in before else 0) for a in after)
    caller_score, caller_lag = score(speech[1], heard[0])
    callee_score, callee_lag = score(speech[0], heard[1])
    delay = (delays[0](callee_lag) + delays[1](caller_lag)) / 2
    return Figures(profile, loss, seconds, sum(moved) / len(moved) * 60 / elapsed / 1000, rtp * 60 / elapsed / 1000,
                   caller_score, callee_score, setup, delay, dropped,
                   [asdict(s) for s in stats if s is not None])  # fmt: skip


def _mouth_to_ear(speaker: Call, listener: Call) -> Callable[[int], float]:
    """A function of the alignment lag (16 kHz samples) giving the seconds from a sample spoken
    into ``speaker``'s track until ``listener`` played it."""
    assert speaker.media is not None and listener.media is not None
    spoken, played = speaker.media.track.started, listener.media.sink.started
    assert spoken is not None and played is not None
    return lambda lag: played - spoken + lag / SPEECH_RATE


# -- the whole run ------------------------------------------------------------------------------


async def run_async(*, seconds: float, losses: Sequence[float], profiles: Sequence[str], workdir: Path) -> list[Figures]:
    speech = conversation(workdir / "speech", seconds)
    results = []
    async with relay_path(workdir) as (target, proxy):
        for profile in profiles:
            for loss in losses:
                results.append(await one_call(target, proxy, speech, workdir, profile=profile, loss=loss,
                                              seconds=seconds))  # fmt: skip
    return results


def run(*, seconds: float = 60.0, losses: Sequence[float] = (0.0, 0.05, 0.10),
        profiles: Sequence[str] = ("normal", "data-saver"), workdir: Path | None = None) -> list[Figures]:  # fmt: skip
    """The benchmark; its files (speech, recordings, coturn's log) in ``workdir`` or a temporary
    directory removed afterwards."""
    if workdir is not None:
        return asyncio.run(run_async(seconds=seconds, losses=losses, profiles=profiles, workdir=workdir))
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as temporary:
        return asyncio.run(run_async(seconds=seconds, losses=losses, profiles=profiles, workdir=Path(temporary)))


def table(results: Sequence[Figures]) -> str:
    lines = [
        "| profile | loss | KB/min per client, both ways, with IP/UDP headers (of it RTP) | PESQ-WB (lower side) "
        "| call set-up | mouth-to-ear | lost / FEC-recovered / RED copies / concealed / late (both sides) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        counts = [sum(s[k] for s in r.stats) for k in ("packets_lost", "packets_recovered", "packets_redundant",
                                                     "packets_concealed", "packets_late")]  # fmt: skip
        lines.append(f"| {r.profile} | {r.loss:.0%} | {r.bytes_per_minute:.0f} ({r.rtp_bytes_per_minute:.0f}) "
                     f"| {r.pesq:.2f} | {r.setup:.2f} s "
                     f"| {r.delay * 1000:.0f} ms | {' / '.join(str(c) for c in counts)} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each call (default 60)")
    parser.add_argument("--loss", default="0,5,10", help="loss rates in percent, comma-separated (default 0,5,10)")
    parser.add_argument("--profiles", default="normal,data-saver", help="default normal,data-saver")
    parser.add_argument("--keep", type=Path, help="keep the speech and recordings in this directory")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    # The clients' own warnings (OMEMO device lists of these throwaway accounts) are not results.
    logging.basicConfig(level=logging.ERROR)
    losses = [float(x) / 100 for x in args.loss.split(",")]
    results = run(seconds=args.seconds, losses=losses, profiles=args.profiles.split(","), workdir=args.keep)
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) | {"pesq": r.pesq} for r in results], indent=2))


if __name__ == "__main__":
    main()
