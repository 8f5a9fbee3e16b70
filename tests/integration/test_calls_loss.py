"""Calls that lose 10 % of their audio packets: two schnack clients through the real server, the
media relay-only through a real coturn with a UDP proxy in front of it that drops a seeded share
of the RTP (bench/calls.py's :class:`LossProxy`). The receive path rebuilds lost packets from
the next packet's in-band FEC (the normal profile) or plays the copy the next RED packet brought
(RFC 2198, the data saver's protected mode), conceals the rest, and what each side hears still
follows what the other said."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

import numpy as np

from bench.calls import SPEECH_RATE, LossProxy, align, conversation, read_mono
from bench.ports import free_port
from schnack.client import Client
from schnack.client.calls.media import CallStats

from ..conftest import require_service
from ..harness import add_user, running
from .coturn import ready, require_coturn, turn_config_for, turnserver

PASSWORD = "correct horse battery staple"
WAIT = 60
SECONDS = 8.0


def correlation(said: Path, heard: Path) -> float:
    """How closely what was heard follows what was said (1: the same): the median, over the
    quarter-seconds of speech, of the normalised correlation with the heard audio, each lined up
    on its own within 120 ms of the whole recording's alignment. A jitter buffer that changes
    its delay shifts the audio a little mid-call; a single alignment would count that as noise."""
    reference = read_mono(said, SPEECH_RATE).astype(np.float64)
    received = read_mono(heard, SPEECH_RATE).astype(np.float64)
    _, lag = align(reference, received.astype(np.int16))
    window, slack = SPEECH_RATE // 4, SPEECH_RATE * 120 // 1000
    scores = []
    for start in range(0, len(reference) - window, window):
        piece = reference[start : start + window]
        if np.sqrt(np.mean(piece**2)) < 300:
            continue  # silence: nothing to follow
        first = max(0, start + lag - slack)
        around = received[first : start + lag + window + slack]
        if len(around) < window:
            continue
        sums = np.convolve(around**2, np.ones(window), "valid")
        products = np.correlate(around, piece, "valid")
        scores.append(float(np.max(products / np.sqrt(np.maximum(sums, 1) * np.dot(piece, piece)))))
    assert scores, "no speech in the reference"
    return float(np.median(scores))


async def lossy_call(tmp_path: Path, *, data_saver: bool) -> list[CallStats]:
    """A call of :data:`SECONDS` through the lossy relay at 10 % loss; the statistics of both sides."""
    require_coturn()
    require_service(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    speech = conversation(tmp_path / "speech", SECONDS)
    relay_port = free_port(udp=True)
    secret = secrets.token_urlsafe(24)
    with turnserver(turn_config_for(tmp_path / "relay.toml", relay_port, secret), tmp_path / "coturn") as process:
        await ready(process, relay_port, tmp_path / "coturn" / "turnserver.log")
        proxy = await LossProxy(("127.0.0.1", relay_port)).start()
        # The server hands out the proxy as its TURN relay (XEP-0215): every packet passes it.
        extdisco = {"turn_host": "127.0.0.1", "turn_port": proxy.port, "turn_transports": ["udp"], "secret": secret,
                    "lifetime": 600}  # fmt: skip
        try:
            async with running(tmp_path, listen=True, modules={"enable": ["extdisco"], "extdisco": extdisco}) as server:
                for user in ("alice", "bob"):
                    await add_user(server, user, PASSWORD)
                stats = await call(server.bound["c2s"][0], proxy, speech, tmp_path, data_saver=data_saver)
        finally:
            proxy.close()
    dropped = sum(leg.dropped for leg in proxy.legs.values())
    rtp = sum(leg.rtp for leg in proxy.legs.values())
    assert 0.06 < dropped / rtp < 0.14, (dropped, rtp)
    for s in stats:
        assert s.packets_lost > 0 and s.audio_received >= SECONDS, s
        # Every packet RTCP counts as lost was rebuilt, played from a copy or concealed, but for
        # the few lost within the buffer's delay before the hang-up, whose turn to play never came.
        assert s.packets_recovered + s.packets_redundant + s.packets_concealed >= s.packets_lost - 3, s
    followed = correlation(speech[1], tmp_path / "alice-heard.wav"), correlation(speech[0], tmp_path / "bob-heard.wav")
    assert min(followed) > 0.7, (followed, stats)
    return stats


async def test_a_call_at_ten_percent_loss(tmp_path: Path) -> None:
    stats = await lossy_call(tmp_path, data_saver=False)
    # Speech is half of each side's packets; FEC rebuilds the losses within it.
    assert sum(s.packets_recovered for s in stats) > 0, stats
    assert sum(s.packets_redundant for s in stats) == 0, stats


async def test_a_data_saver_call_at_ten_percent_loss_plays_red_copies(tmp_path: Path) -> None:
    """Both sides are data savers: they offer RED, start protected and stay so while the
    receiver reports show the loss; a lost packet plays from the copy the next one brought."""
    stats = await lossy_call(tmp_path, data_saver=True)
    assert sum(s.packets_redundant for s in stats) > 0, stats
    # RED takes the place of FEC: the protected packets carry none.
    assert sum(s.packets_recovered for s in stats) == 0, stats


async def call(address: tuple[str, int], proxy: LossProxy, speech: tuple[Path, Path], tmp_path: Path, *,
               data_saver: bool) -> list[CallStats]:  # fmt: skip
    host, port = address
    alice = Client("alice@localhost/laptop", PASSWORD, host=host, port=port, direct_tls=False, verify=False)
    bob = Client("bob@localhost/phone", PASSWORD, host=host, port=port, direct_tls=False, verify=False)
    await alice.connect()
    await bob.connect()
    try:
        async with asyncio.timeout(WAIT):
            ringing = asyncio.ensure_future(anext(aiter(bob.incoming_calls())))
            await asyncio.sleep(0)
            placed = await alice.call("bob@localhost", data_saver=data_saver, source=speech[0],
                                      sink=tmp_path / "alice-heard.wav", relay_only=True)  # fmt: skip
            answered = await (await ringing).answer(data_saver=data_saver, source=speech[1],
                                                    sink=tmp_path / "bob-heard.wav", relay_only=True)  # fmt: skip
            await placed.wait_connected(WAIT)
            await answered.wait_connected(WAIT)
            assert placed.media is not None and answered.media is not None
            proxy.set_loss(0.10, seed=7)
            await asyncio.gather(placed.media.sink.heard(SECONDS), answered.media.sink.heard(SECONDS))
            first = await placed.hangup()
            second = await answered.wait_ended()
    finally:
        await alice.close()
        await bob.close()
    assert first is not None and second is not None
    return [first, second]
