"""A call's microphone and speaker (calls/audio.py, over client/audio.py) on real ALSA without
sound hardware: the tests write an ALSA configuration whose ``default`` device is ALSA's own
``file`` plugin over its ``null`` device, capturing from a raw PCM file and playing into another,
and point the system's libasound at it with ``ALSA_CONFIG_PATH``."""

from __future__ import annotations

import array
import ctypes.util
import math
import random
import time
from pathlib import Path

import pytest

from schnack.client.audio import NoAudioDevice
from schnack.client.calls.audio import MAX_QUEUED, SILENCE, Microphone, Speaker
from schnack.client.calls.media import FRAME, RATE

from ...conftest import require_service


def alsa_config(path: Path, *, capture_from: Path | None = None, play_into: Path | None = None) -> Path:
    """An ALSA configuration whose default device captures raw 16-bit PCM from ``capture_from``
    and plays into ``play_into`` (either may be left out: then that direction has no device)."""
    require_service(ctypes.util.find_library("asound") is not None, "ALSA's library is not installed (libasound2)")
    sides = []
    if capture_from is not None:
        sides.append(f'capture.pcm {{ type file; slave.pcm {{ type null }}; file "/dev/null"; '
                     f'infile "{capture_from}"; format "raw" }}')  # fmt: skip
    if play_into is not None:
        sides.append(f'playback.pcm {{ type file; slave.pcm {{ type null }}; file "{play_into}"; format "raw" }}')
    path.write_text("pcm.!default {\n  type asym\n  " + "\n  ".join(sides) + "\n}\n")
    return path


def tone(path: Path, seconds: float, frequency: float = 440.0) -> bytes:
    """A sine tone as raw 16-bit mono PCM at 48 kHz, written to ``path``."""
    step = 2 * math.pi * frequency / RATE
    pcm = array.array("h", (int(12000 * math.sin(step * n)) for n in range(int(RATE * seconds)))).tobytes()
    path.write_bytes(pcm)
    return pcm


def noise(path: Path, seconds: float) -> bytes:
    """Random 16-bit mono PCM at 48 kHz (no 20 ms of it like another), written to ``path``."""
    chance = random.Random(7)
    pcm = array.array("h", (chance.randint(-12000, 12000) for _ in range(int(RATE * seconds)))).tobytes()
    path.write_bytes(pcm)
    return pcm


def test_microphone_captures_the_default_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = noise(tmp_path / "mic.raw", 2.0)
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "asound.conf", capture_from=tmp_path / "mic.raw")))
    pieces = [sent[i : i + FRAME * 2] for i in range(0, len(sent), FRAME * 2)]
    got: list[bytes] = []
    started = time.monotonic()
    with Microphone() as mic:
        # Taken at the encoder's pace, 20 ms at a time (silence while there is nothing captured).
        while time.monotonic() - started < 1.0:
            got.append(next(mic))
            time.sleep(0.02)
        captured = mic.captured
    audio = [piece for piece in got if piece != SILENCE]
    # What the encoder got is the file's audio, unchanged and in order (a piece or two may be
    # dropped on a busy machine, never reordered).
    places = [pieces.index(piece) for piece in audio]
    assert places == sorted(places) and len(set(places)) == len(places)
    assert len(audio) >= 30, len(audio)
    # The file device has no clock of its own; the microphone still reads it in real time
    # (about 50 pieces a second, not the whole file at once).
    assert captured <= 1.2 * (time.monotonic() - started) * RATE / FRAME + MAX_QUEUED


async def test_speaker_plays_on_the_default_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heard = tmp_path / "speaker.raw"
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "asound.conf", play_into=heard)))
    pcm = tone(tmp_path / "tone.raw", 0.5, 1000.0)
    with Speaker() as speaker:
        for i in range(0, len(pcm), FRAME * 2):
            speaker.write(pcm[i : i + FRAME * 2])
        assert speaker.samples == len(pcm) // 2 and speaker.dropped == 0
    assert heard.read_bytes() == pcm


def test_no_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Capture only: there is no playback device, and the capture device has no other name.
    config = alsa_config(tmp_path / "asound.conf", capture_from=tmp_path / "mic.raw")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))
    tone(tmp_path / "mic.raw", 0.1)
    with pytest.raises(NoAudioDevice, match="ALSA cannot open 'default' for playback"):
        Speaker()
    with pytest.raises(NoAudioDevice, match="ALSA cannot open 'nowhere' for capture"):
        Microphone("nowhere")
    with Microphone():
        pass
