"""``schnack call`` and ``schnack answer`` as real processes against the real server: a call with
audio both ways and the summary on both sides, a rejected call, and the one-line errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.client.store import account_dir
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..client.calls.audio import dominant, loud_part, read_wav, write_tone
from ..harness import add_user, running
from .proc import PROCESS_WAIT, Result, client_env, line_of, login, schnack, start

PASSWORD = "correct horse battery staple"


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
        assert len(lines) == 4 and lines[0].startswith("call with "), stdout
        assert lines[1].startswith("sent ") and "kB per minute both ways" in lines[1]
        assert lines[2].startswith("packet loss ")
        # Both use OMEMO (blind trust): the fingerprints came encrypted, the keys are not verified.
        assert lines[3].startswith("unverified: the DTLS fingerprint came encrypted by OMEMO device "), stdout
    assert "schnack: talking with bob@localhost/" in called.stderr
    assert dominant(loud_part(read_wav(tmp_path / "alice-heard.wav")), (440, 1000)) == 1000
    assert dominant(loud_part(read_wav(tmp_path / "bob-heard.wav")), (440, 1000)) == 440
    (stored,) = (account_dir(JID.parse("alice@localhost"), tmp_path / "client") / "calls.jsonl").read_text().splitlines()
    record = json.loads(stored)
    assert record["direction"] == "out" and record["peer"].startswith("bob@localhost/")
    assert record["bytes_sent"] > 0 and record["bytes_received"] > 0 and record["duration"] > 0
    assert record["verified"] == "unverified" and isinstance(record["omemo_device"], int)
    assert record["data_saver"] is False
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
