"""``schnack call`` and ``schnack answer`` as real processes against the real server: a call with
audio both ways and the summary on both sides, a rejected call, and the one-line errors."""

from __future__ import annotations

import array
import asyncio
import json
import math
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest

from schnack.cli.calls import talk
from schnack.client.calls.session import Ended
from schnack.client.calls.verification import Verification
from schnack.client.metered import SaverChoice
from schnack.client.store import account_dir
from schnack.server.app import Server
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.jingle import Reason

from ..client.calls.audio import dominant, loud_part, read_wav, write_tone
from ..client.calls.test_audio import alsa_config
from ..harness import add_user, running
from ..integration.test_missed_calls import archived_call
from .proc import PROCESS_WAIT, Result, client_env, line_of, login, schnack, start, stop

PASSWORD = "correct horse battery staple"

# A transport left to the garbage collector is a leak of the command, not noise.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    """A listening server with alice and bob, both logged in with the CLI in one client directory."""
    async with running(tmp_path, listen=True) as server:
        environment = client_env(tmp_path)
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
            done = await login(server, environment, f"{user}@localhost", PASSWORD)
            assert done.returncode == 0, done.stderr
        yield server, environment


def one_line(result: Result) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1]


async def test_call_and_answer(env: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    _, environment = env
    alice_tone, bob_tone = write_tone(tmp_path / "a.wav", 440, 4.0), write_tone(tmp_path / "b.wav", 1000, 4.0)
    answering = await start(environment, "answer", "-a", "bob@localhost", "--play", str(bob_tone),
                            "--record", str(tmp_path / "bob-heard.wav"))  # fmt: skip
    assert await line_of(answering.stderr) == "waiting for a call"
    calling = asyncio.ensure_future(
        schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--play", str(alice_tone),
                "--record", str(tmp_path / "alice-heard.wav"), "--duration", "3"),
    )  # fmt: skip
    assert (await line_of(answering.stderr)).startswith("schnack: call from alice@localhost/")
    talking = await line_of(answering.stderr)
    assert talking.startswith("schnack: talking with alice@localhost/") and "(unverified;" in talking
    # A line on stdin switches the data saver mid-call (and tells the caller).
    assert answering.stdin is not None
    answering.stdin.write(b"s\n")
    await answering.stdin.drain()
    assert await line_of(answering.stderr) == "schnack: data saver on"
    called = await calling
    assert called.returncode == 0, called.stderr
    async with asyncio.timeout(PROCESS_WAIT):
        out, err = await answering.communicate()
    assert answering.returncode == 0, err.decode()
    for stdout in (called.stdout, out.decode()):
        lines = stdout.splitlines()
        assert len(lines) == 5 and lines[0].startswith("call with "), stdout
        assert lines[1].startswith("sent ") and "kB per minute both ways" in lines[1]
        assert lines[2].startswith("packet loss ")
        # Both use OMEMO (blind trust): the fingerprints came encrypted, the keys are not verified.
        assert lines[3].startswith("unverified: the DTLS fingerprint came encrypted by OMEMO device "), stdout
    # The setting is "auto" and the link to the server is loopback, not metered; bob switched.
    assert called.stdout.splitlines()[4] == "data saver off: link lo is not metered", called.stdout
    assert out.decode().splitlines()[4] == "data saver on: switched during the call"
    assert "schnack: talking with bob@localhost/" in called.stderr
    assert dominant(loud_part(read_wav(tmp_path / "alice-heard.wav")), (440, 1000)) == 1000
    assert dominant(loud_part(read_wav(tmp_path / "bob-heard.wav")), (440, 1000)) == 440
    (stored,) = (account_dir(JID.parse("alice@localhost"), tmp_path / "client") / "calls.jsonl").read_text().splitlines()
    record = json.loads(stored)
    assert record["direction"] == "out" and record["peer"].startswith("bob@localhost/")
    assert record["bytes_sent"] > 0 and record["bytes_received"] > 0 and record["duration"] > 0
    assert record["verified"] == "unverified" and isinstance(record["omemo_device"], int)
    assert record["data_saver"] is False and record["data_saver_reason"] == "link lo is not metered"
    assert record["ending"] == "the call ended"
    (answered,) = (account_dir(JID.parse("bob@localhost"), tmp_path / "client") / "calls.jsonl").read_text().splitlines()
    assert json.loads(answered)["data_saver"] is True


async def test_rejected(env: tuple[Server, dict[str, str]]) -> None:
    _, environment = env
    answering = await start(environment, "answer", "-a", "bob@localhost", "--reject")
    assert await line_of(answering.stderr) == "waiting for a call"
    calling = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost")
    assert one_line(calling) == "schnack: the call was rejected"
    assert await answering.wait() == 0


async def test_errors(env: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    _, environment = env
    nobody = await schnack(environment, "call", "nobody@localhost", "-a", "alice@localhost", "--ring-timeout", "5")
    assert one_line(nobody) == "schnack: nobody@localhost cannot be called: service-unavailable"
    offline = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--ring-timeout", "2")
    assert one_line(offline) == "schnack: bob@localhost did not answer within 2 s: no device of it is online to ring"
    bad = await schnack(environment, "call", "not a jid@@", "-a", "alice@localhost")
    assert bad.returncode == 2 and "invalid JID" in bad.stderr
    noise = tmp_path / "notes.txt"
    noise.write_text("not audio at all")
    not_audio = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--play", str(noise))
    assert one_line(not_audio).startswith(f"schnack: {noise} is not an audio file FFmpeg reads"), not_audio.stderr
    waited = await schnack(environment, "answer", "-a", "bob@localhost", "--wait", "1")
    assert one_line(waited) == "schnack: no call within 1 s"


def on_off_pattern(path: Path, seconds: float) -> np.ndarray:
    """A 700 Hz tone switched on and off at random in 100 ms slots, as raw 16-bit mono 48 kHz PCM
    in ``path``; returns its loudness envelope (RMS per 10 ms)."""
    chance = random.Random(11)
    step = 2 * math.pi * 700 / 48000
    slots = [chance.random() < 0.5 for _ in range(int(seconds * 10))]
    samples = array.array("h", (int(13000 * math.sin(step * n)) if slots[n // 4800] else 0 for n in range(len(slots) * 4800)))
    path.write_bytes(samples.tobytes())
    return envelope(np.frombuffer(samples.tobytes(), dtype="<i2"))


def envelope(samples: np.ndarray) -> np.ndarray:
    blocks = samples[: len(samples) // 480 * 480].astype(np.float64).reshape(-1, 480)
    rms: np.ndarray = np.sqrt((blocks**2).mean(axis=1))
    return rms


def correlation_near(sent: np.ndarray, heard: np.ndarray, first: int, last: int, max_lag: int = 100) -> float:
    """The highest normalised correlation of ``heard[first:last]`` with the same stretch of ``sent``
    shifted by at most ``max_lag`` blocks either way (the delay of the way through)."""
    h = heard[first:last]
    h = (h - h.mean()) / (h.std() or 1.0)
    best = -1.0
    for lag in range(max(-max_lag, -first), max_lag + 1):
        part = sent[first + lag : last + lag]
        if len(part) < len(h):
            break
        p = (part - part.mean()) / (part.std() or 1.0)
        best = max(best, float((p * h).mean()))
    return best


async def test_microphone_and_speaker(env: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    """Without --play and --record the call talks through ALSA's default devices: alice's
    "microphone" is ALSA's file plugin reading a raw PCM file and she has no speaker; bob has a
    "speaker" writing to a file and no microphone. What bob's speaker played is what alice's
    microphone took in, found by correlating its loudness with the sent on/off pattern."""
    _, environment = env
    sent = on_off_pattern(tmp_path / "mic.raw", 20.0)
    alice_env = {**environment, "ALSA_CONFIG_PATH": str(alsa_config(tmp_path / "alice.conf", capture_from=tmp_path / "mic.raw"))}
    heard = tmp_path / "speaker.raw"
    bob_env = {**environment, "ALSA_CONFIG_PATH": str(alsa_config(tmp_path / "bob.conf", play_into=heard))}
    answering = await start(bob_env, "answer", "-a", "bob@localhost", "--no-data-saver")
    assert await line_of(answering.stderr) == "waiting for a call"
    called = await schnack(alice_env, "call", "bob@localhost", "-a", "alice@localhost", "--duration", "5")
    assert called.returncode == 0, called.stderr
    async with asyncio.timeout(PROCESS_WAIT):
        out, err = await answering.communicate()
    assert answering.returncode == 0, err.decode()
    assert "schnack: no speaker: what the peer says is not played (ALSA cannot open 'default' for playback" in called.stderr
    assert "schnack: no microphone: sending silence (ALSA cannot open 'default' for capture" in err.decode()
    assert out.decode().splitlines()[4] == "data saver off: --no-data-saver"
    played = envelope(np.frombuffer(heard.read_bytes(), dtype="<i2"))
    assert len(played) > 300, len(played)
    # From the first tenth of a second to the hang-up, the first talk spurts after pauses
    # included (they once came out at a third of their energy while the buffer settled): the
    # pattern at its place in time, give or take a second. (A stretch of another part of the
    # pattern correlates by chance up to about 0.4.)
    assert correlation_near(sent, played, 10, len(played) - 20) > 0.75


class MedialessCall:
    """A call that ends before any media flowed: the peer ended it already, or it is hung up here."""

    peer = JID.parse("bob@localhost/phone")
    verification = Verification()

    def __init__(self, *, ended: bool) -> None:
        self.ended: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()
        if ended:
            self.ended.set_result(Ended(Reason("success"), True))

    async def wait_connected(self, timeout: float) -> None:
        return None

    async def wait_ended(self) -> None:
        return None

    async def hangup(self) -> None:
        return None


async def test_a_call_leaves_no_signal_handlers_behind(tmp_path: Path) -> None:
    """Ctrl-C and SIGTERM hang up only while the call runs; afterwards they are the program's
    again, also when the call ended in failure."""
    call: Any = MedialessCall(ended=True)
    with pytest.raises(SystemExit):
        await talk(tmp_path, call, SaverChoice(False, "asked for"), None)
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGINT)
    assert not loop.remove_signal_handler(signal.SIGTERM)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinaryIO]:
    """stdin is a pipe whose typing end (given) stays open, as a terminal's does: no end of file
    stops the reading."""
    read_end, write_end = os.pipe()
    with open(read_end, encoding="utf-8") as stdin, open(write_end, "wb", buffering=0) as typing:
        monkeypatch.setattr(sys, "stdin", stdin)
        yield typing


async def test_a_call_stops_reading_stdin_when_it_ends(tmp_path: Path, terminal: BinaryIO) -> None:
    """The commands are read from stdin only while the call runs: once "h" hung up, the pipe is
    no longer watched."""
    watched = sys.stdin.fileno()
    terminal.write(b"h\n")
    call: Any = MedialessCall(ended=False)
    with pytest.raises(SystemExit):
        await talk(tmp_path, call, SaverChoice(False, "asked for"), None)
    assert not asyncio.get_running_loop().remove_reader(watched)


async def test_listen_tells_missed_calls_and_calls_lists_them(env: tuple[Server, dict[str, str]]) -> None:
    """A call that rang out while bob was offline is told when his listener logs in; one that
    rings on the listener and is not answered too; both go into his call history once each."""
    _, environment = env
    away = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--ring-timeout", "2")
    assert away.returncode == 1, away.stderr
    listener = await start(environment, "listen", "--json", "-a", "bob@localhost")
    try:
        first = json.loads(await line_of(listener.stdout))
        assert first["event"] == "missed_call" and first["from"] == "alice@localhost", first
        assert first["reason"] == "unanswered" and first["placed"] and first["id"]
        rang = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--ring-timeout", "2")
        assert rang.returncode == 1 and "schnack: ringing" in rang.stderr, rang.stderr
        second = json.loads(await line_of(listener.stdout))
        assert second["event"] == "missed_call" and second["id"] != first["id"], second
    finally:
        assert await stop(listener) == 0
    listed = await schnack(environment, "calls", "-a", "bob@localhost")
    assert listed.returncode == 0, listed.stderr
    # Missed calls used no data: no usage per contact follows.
    assert [line.split(" ", 2)[2] for line in listed.stdout.splitlines()] == [
        "← alice@localhost  missed call (nobody answered)"] * 2, listed.stdout
    records = json.loads((await schnack(environment, "calls", "-a", "bob@localhost", "--json")).stdout)["calls"]
    assert [(r["id"], r["ending"], r["duration"]) for r in records] == [(first["id"], "missed", 0), (second["id"], "missed", 0)]


async def test_call_turns_away_another_call_as_busy(env: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    """While bob's schnack call rings for alice (who is offline), carol calls bob: that command
    cannot take it and turns it away as busy (XEP-0353 §3.5, XEP-0166 reason busy), as schnack
    chat does, instead of letting it ring for nothing. It tells it on stderr and adds it to bob's
    call history as missed, as schnack listen and schnack answer do."""
    server, environment = env
    await add_user(server, "carol", PASSWORD)
    carol_login = await login(server, environment, "carol@localhost", PASSWORD)
    assert carol_login.returncode == 0, carol_login.stderr
    calling = await start(environment, "call", "alice@localhost", "-a", "bob@localhost", "--ring-timeout", "600",
                          "--play", str(write_tone(tmp_path / "bob.wav", 440, 1.0)), "--record", str(tmp_path / "heard.wav"))  # fmt: skip
    try:
        assert await line_of(calling.stderr) == "schnack: calling alice@localhost"
        # The ring time only bounds a failure: a busy callee answers at once.
        carol = await schnack(environment, "call", "bob@localhost", "-a", "carol@localhost", "--ring-timeout", "30")
        assert one_line(carol) == "schnack: the callee is busy", carol.stderr
        told = await line_of(calling.stderr)
        assert told.startswith("schnack: ") and told.endswith(" missed call from carol@localhost (busy in another call)"), told
    finally:
        await stop(calling)
    listed = await schnack(environment, "calls", "-a", "bob@localhost")
    assert listed.returncode == 0, listed.stderr
    assert [line.split(" ", 2)[2] for line in listed.stdout.splitlines()] == [
        "← carol@localhost  missed call (busy in another call)"], listed.stdout


async def test_answer_turns_away_another_call_as_busy(env: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    """While bob's schnack answer talks with alice, carol calls bob: the command, busy with its
    call, turns hers away as busy, tells it on stderr and keeps it as missed in the history."""
    server, environment = env
    await add_user(server, "carol", PASSWORD)
    carol_login = await login(server, environment, "carol@localhost", PASSWORD)
    assert carol_login.returncode == 0, carol_login.stderr
    tone = str(write_tone(tmp_path / "tone.wav", 440, 1.0))
    answering = await start(environment, "answer", "-a", "bob@localhost", "--play", tone,
                            "--record", str(tmp_path / "bob-heard.wav"))  # fmt: skip
    calling = None
    try:
        assert await line_of(answering.stderr) == "waiting for a call"
        calling = await start(environment, "call", "bob@localhost", "-a", "alice@localhost", "--play", tone,
                              "--record", str(tmp_path / "alice-heard.wav"))  # fmt: skip
        assert (await line_of(answering.stderr)).startswith("schnack: call from alice@localhost/")
        assert (await line_of(answering.stderr)).startswith("schnack: talking with alice@localhost/")
        # The ring time only bounds a failure: a busy callee answers at once.
        carol = await schnack(environment, "call", "bob@localhost", "-a", "carol@localhost", "--ring-timeout", "30")
        assert one_line(carol) == "schnack: the callee is busy", carol.stderr
        told = await line_of(answering.stderr)
        assert told.startswith("schnack: ") and told.endswith(" missed call from carol@localhost (busy in another call)"), told
    finally:
        if calling is not None:
            await stop(calling)
        await stop(answering)
    records = json.loads((await schnack(environment, "calls", "-a", "bob@localhost", "--json")).stdout)["calls"]
    assert [(r["peer"], r.get("missed")) for r in records if r["ending"] == "missed"] == [("carol@localhost", "busy")]


async def test_a_new_device_records_the_calls_missed_before_it_without_telling_them(
    env: tuple[Server, dict[str, str]],
) -> None:
    """bob's account missed a call three days ago, before this client directory first logged in
    (the fixture's schnack login), and one just now, which waits in offline storage. His
    listener tells the new one, reads the old one in its first catch-up of the archive without
    telling it, and tells the next that rings on it; the call history has all three, oldest
    first."""
    server, environment = env
    await archived_call(server, "old-call", days=3)
    away = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--ring-timeout", "2")
    assert away.returncode == 1, away.stderr
    listener = await start(environment, "listen", "--json", "-a", "bob@localhost")
    try:
        first = json.loads(await line_of(listener.stdout))
        while await line_of(listener.stderr) != "schnack: up to date with the server's archive":
            continue
        rang = await schnack(environment, "call", "bob@localhost", "-a", "alice@localhost", "--ring-timeout", "2")
        assert rang.returncode == 1 and "schnack: ringing" in rang.stderr, rang.stderr
        second = json.loads(await line_of(listener.stdout))
    finally:
        assert await stop(listener) == 0
    assert [(e["event"], e["reason"]) for e in (first, second)] == [("missed_call", "unanswered")] * 2
    assert "old-call" not in (first["id"], second["id"])
    records = json.loads((await schnack(environment, "calls", "-a", "bob@localhost", "--json")).stdout)["calls"]
    assert [(r["id"], r["missed"]) for r in records] == [
        ("old-call", "cancelled"), (first["id"], "unanswered"), (second["id"], "unanswered")]
