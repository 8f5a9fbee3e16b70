"""``schnack send-file``, ``voice``, ``play`` and ``listen --download`` as real processes against the
real server (in this process) with its upload service over real HTTPS.

A file goes from alice's send-file to bob's listener, which fetches, decrypts and verifies it into
its folder byte for byte; a voice message from a WAV file is played back to WAV by message id;
one recorded from the "microphone" plays on the "speaker" (ALSA's default device made ALSA's
``file`` plugin reading and writing raw PCM files); each failure (no such file, too large, no
upload service, a changed file, a broken link, no microphone, no speaker) is one line on stderr
and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from schnack.client import voice as audio
from schnack.client.features.files import attachment
from schnack.server.app import Server
from schnack.server.blobs import LocalBlobStore
from schnack.server.modules.upload import Upload

from ..client.calls.test_audio import alsa_config
from ..conftest import require_service
from ..harness import add_user, running
from .proc import PROCESS_WAIT, client_env, line_of, login, schnack, start, stop
from .test_client import one_line

PASSWORD = "correct horse battery staple"
LIMIT = 4 * 1024 * 1024


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"},
                                                      "upload": {"max_file_size": LIMIT}}) as srv:
        for user in ("alice", "bob"):
            await add_user(srv, user, PASSWORD)
        yield srv


async def logged_in(server: Server, tmp_path: Path) -> dict[str, str]:
    """A client directory where alice and bob are stored and bob's device keys are published."""
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        result = await login(server, env, f"{user}@localhost", PASSWORD)
        assert result.returncode == 0, result.stderr
    return env


async def next_json(stream: object) -> dict[str, object]:
    line = await line_of(stream)  # type: ignore[arg-type]
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def blob_of(server: Server, https: str) -> Path:
    module = server.modules["upload"]
    assert isinstance(module, Upload) and isinstance(module.blobs, LocalBlobStore)
    parts = urlsplit(https).path.split("/")
    return module.blobs.root / parts[-3] / parts[-2]


async def test_send_file_reaches_a_listener_that_downloads_it(server: Server, tmp_path: Path) -> None:
    env = await logged_in(server, tmp_path)
    inbox = tmp_path / "inbox"
    listener = await start(env, "listen", "--account", "bob@localhost", "--json", "--download", "--dest", str(inbox))
    try:
        assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
        data = os.urandom(1_500_000)
        source = tmp_path / "holiday photo.jpg"
        source.write_bytes(data)
        sent = await schnack(env, "send-file", "--account", "alice@localhost", "bob@localhost", str(source))
        assert sent.returncode == 0, sent.stderr
        id = sent.stdout.strip()
        # Over 1 MB: a progress bar on stderr (drawn on a terminal; here its label only).
        assert sent.stderr.splitlines() == ["uploading holiday photo.jpg"]
        message = await next_json(listener.stdout)
        assert message["id"] == id and message["encrypted"] is True
        assert str(message["text"]).startswith("aesgcm://localhost:")
        while not (line := await line_of(listener.stderr)).startswith("schnack: saved"):
            pass
        saved = Path(line.rsplit(" as ", 1)[1])
        assert saved.parent == inbox and saved.suffix == ".jpg"
        assert await asyncio.to_thread(saved.read_bytes) == data
    finally:
        assert await stop(listener) == 0


async def speak(spoken: Path) -> None:
    """espeak-ng saying a sentence into the WAV file ``spoken``."""
    require_service(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (Debian package espeak-ng)")
    espeak = await asyncio.create_subprocess_exec(
        "espeak-ng", "-v", "en", "-s", "120", "-w", str(spoken), "See you at seven at the station.")
    async with asyncio.timeout(PROCESS_WAIT):
        assert await espeak.wait() == 0


def device_samples(path: Path) -> np.ndarray:
    """A WAV file or raw 16-bit mono PCM (what ALSA's file plugin reads and writes) as samples."""
    if path.suffix == ".wav":
        with wave.open(str(path)) as wav:
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32)
    return np.frombuffer(path.read_bytes(), dtype=np.int16).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


async def test_a_voice_message_plays_back_to_wav(server: Server, tmp_path: Path) -> None:
    env = await logged_in(server, tmp_path)
    spoken = tmp_path / "spoken.wav"
    await speak(spoken)
    listener = await start(env, "listen", "--account", "bob@localhost", "--json")
    try:
        assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
        sent = await schnack(env, "voice", "--account", "alice@localhost", "bob@localhost", "--file", str(spoken))
        assert sent.returncode == 0, sent.stderr
        id = sent.stdout.strip()
        assert "schnack: voice message of " in sent.stderr
        message = await next_json(listener.stdout)
        assert message["id"] == id
        found = attachment(str(message["text"]))
        assert found is not None and found.encrypted and found.content_type == "audio/ogg"
    finally:
        assert await stop(listener) == 0
    out = tmp_path / "heard.wav"
    played = await schnack(env, "play", "--account", "bob@localhost", id, "--wav", str(out),
                           "--dest", str(tmp_path / "voice"))
    assert played.returncode == 0, played.stderr
    assert played.stdout.startswith("wrote ") and out.is_file()
    saved = next((tmp_path / "voice").iterdir())
    assert saved.suffix == ".ogg"
    assert audio.duration(saved) == pytest.approx(audio.decode(spoken, tmp_path / "ref.wav"), abs=0.1)
    # A file already here plays without the network; ALSA's default device here is neither a
    # speaker nor a microphone.
    env["ALSA_CONFIG_PATH"] = str(alsa_config(tmp_path / "asound.conf"))
    speaker = await schnack(env, "play", str(saved))
    assert speaker.returncode == 1
    assert one_line(speaker).startswith("schnack: no speaker: ALSA cannot open 'default' for playback: ")
    assert one_line(speaker).endswith("; write the voice message to a file with --wav OUT")
    mic = await schnack(env, "voice", "--account", "alice@localhost", "bob@localhost", "--record", "2")
    assert mic.returncode == 1
    assert one_line(mic).startswith("schnack: no microphone: ALSA cannot open 'default' for capture: ")


async def test_a_recorded_voice_message_plays_on_the_speaker(server: Server, tmp_path: Path) -> None:
    env = await logged_in(server, tmp_path)
    await speak(tmp_path / "spoken.wav")
    # The microphone "hears" the sentence: raw PCM at the device's rate.
    audio.decode(tmp_path / "spoken.wav", tmp_path / "spoken48.wav", rate=audio.DEVICE_RATE)
    said = device_samples(tmp_path / "spoken48.wav")
    (tmp_path / "mic.raw").write_bytes(said.astype(np.int16).tobytes())
    env["ALSA_CONFIG_PATH"] = str(alsa_config(tmp_path / "asound.conf", capture_from=tmp_path / "mic.raw",
                                              play_into=tmp_path / "speaker.raw"))  # fmt: skip
    sent = await schnack(env, "voice", "--account", "alice@localhost", "bob@localhost", "--record", "3")
    assert sent.returncode == 0, sent.stderr
    assert "schnack: voice message of 3.0 s, " in sent.stderr
    listing = await schnack(env, "history", "--account", "alice@localhost", "bob@localhost", "--json")
    url = json.loads(listing.stdout.splitlines()[-1])["text"]
    played = await schnack(env, "play", "--account", "bob@localhost", url, "--dest", str(tmp_path / "voice"))
    assert played.returncode == 0, played.stderr
    assert played.stdout == "played 3.0 s\n"
    # The note bob received is what the microphone heard, and so is what his speaker played.
    saved = next((tmp_path / "voice").iterdir())
    audio.decode(saved, tmp_path / "received.wav", rate=audio.DEVICE_RATE)
    assert correlation(said, device_samples(tmp_path / "received.wav")) > 0.85
    heard = device_samples(tmp_path / "speaker.raw")
    assert len(heard) == 3 * audio.DEVICE_RATE
    assert correlation(said, heard) > 0.85


async def test_failures_are_one_line(server: Server, tmp_path: Path) -> None:
    env = await logged_in(server, tmp_path)
    alice = ("--account", "alice@localhost")
    missing = await schnack(env, "send-file", *alice, "bob@localhost", str(tmp_path / "nothing.bin"))
    assert one_line(missing) == f"schnack: no such file: {tmp_path / 'nothing.bin'}"
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * LIMIT)
    too_large = one_line(await schnack(env, "send-file", *alice, "bob@localhost", str(big)))
    assert too_large == "schnack: big.bin is 4.2 MB; upload.localhost takes at most 4.2 MB"
    usage = await schnack(env, "voice", *alice, "bob@localhost")
    assert usage.returncode == 2 and one_line(usage) == "schnack: give either --file WAV or --record SECONDS"
    not_audio = tmp_path / "not.wav"
    not_audio.write_bytes(b"RIFF....WAVEjunk")
    assert one_line(await schnack(env, "voice", *alice, "bob@localhost", "--file", str(not_audio))) == (
        f"schnack: {not_audio} is not an audio file schnack can read")

    # A file changed on the server fails the tag check and leaves nothing behind.
    small = tmp_path / "letter.txt"
    small.write_bytes(b"Dear Bob, " * 1000)
    sent = await schnack(env, "send-file", *alice, "bob@localhost", str(small))
    assert sent.returncode == 0, sent.stderr
    listing = await schnack(env, "history", "--account", "alice@localhost", "bob@localhost", "--json")
    url = json.loads(listing.stdout.splitlines()[-1])["text"]
    found = attachment(url)
    assert found is not None
    blob = blob_of(server, found.https)
    changed = bytearray(blob.read_bytes())
    changed[-20] ^= 0xFF
    blob.write_bytes(bytes(changed))
    dest = tmp_path / "fetched"
    tampered = one_line(await schnack(env, "play", *alice, url, "--wav", str(tmp_path / "x.wav"), "--dest", str(dest)))
    # The server only ever saw a random name with the file's extension.
    assert found.name != "letter.txt" and found.name.endswith(".txt")
    assert tampered == f"schnack: {found.name} does not verify: it was changed after it was sent"
    assert not dest.exists() or list(dest.iterdir()) == []
    broken = url.replace(found.name, "other.txt")
    gone = one_line(await schnack(env, "play", *alice, broken, "--wav", str(tmp_path / "x.wav"), "--dest", str(dest)))
    assert gone == "schnack: cannot fetch other.txt: HTTP 404 Not Found"
    unknown = one_line(await schnack(env, "play", *alice, "no-such-message"))
    assert unknown == "schnack: no-such-message is neither a file nor a message or URL that points to one"


async def test_no_upload_service(tmp_path: Path) -> None:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"},
                                                      "disable": ["upload"]}) as srv:
        await add_user(srv, "alice", PASSWORD)
        env = client_env(tmp_path)
        assert (await login(srv, env, "alice@localhost", PASSWORD)).returncode == 0
        source = tmp_path / "a.txt"
        source.write_text("a")
        result = await schnack(env, "send-file", "--unencrypted", "alice@localhost", str(source))
        assert one_line(result) == "schnack: localhost offers no file upload service"
