"""Voice messages: espeak-ng's speech → Ogg/Opus (16 kHz mono, 16 kbit/s, 60 ms) → an encrypted file
between two of our clients → WAV again, scored with wideband PESQ (ITU-T P.862.2) against the original;
recorded from and played on ALSA's default device, which the tests make ALSA's ``file`` plugin
(``ALSA_CONFIG_PATH``, see ``calls/test_audio.py``) reading and writing raw PCM files.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from pesq import pesq

from schnack.client import Client, voice
from schnack.server.app import Server

from ..conftest import require_service
from .calls.test_audio import alsa_config
from .conftest import next_of, online
from .features.test_files import file_server  # noqa: F401  (the fixture)

SENTENCE = ("Please call me back when you get this message. I will be at the station around seven, "
            "and we can take the late train home together.")


def speech(tmp_path: Path) -> Path:
    """espeak-ng speaking the sentence, as 16 kHz mono WAV."""
    require_service(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (Debian package espeak-ng)")
    raw = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "120", "-w", str(raw), SENTENCE], check=True, timeout=60)
    reference = tmp_path / "spoken.wav"
    voice.decode(raw, reference)
    return reference


def samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, voice.RATE, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32)


def test_a_voice_note_is_ogg_opus_at_16_kbits(tmp_path: Path) -> None:
    reference = speech(tmp_path)
    note = voice.encode(reference, tmp_path / "note.ogg")
    with av.open(str(note.path)) as container:
        assert container.format.name == "ogg"
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.codec_context.channels) == ("opus", 1)
    assert note.duration == pytest.approx(len(samples(reference)) / voice.RATE, abs=0.07)
    assert voice.duration(note.path) == pytest.approx(note.duration, abs=0.07)
    # 16 kbit/s is a target the VBR encoder keeps on average; Ogg adds a little.
    assert 0.75 * 16_000 / 8 * note.duration < note.size < 1.1 * 16_000 / 8 * note.duration


async def test_a_voice_message_round_trips_with_pesq_wb_above_3_5(file_server: Server,  # noqa: F811
                                                                  clients: list[Client], tmp_path: Path) -> None:
    reference = speech(tmp_path)
    note = voice.encode(reference, tmp_path / "note.ogg")
    alice = await online(file_server, clients, "alice@localhost")
    bob = await online(file_server, clients, "bob@localhost")
    inbox = bob.messages()
    id = await alice.send_file("bob@localhost", note.path, content_type=voice.CONTENT_TYPE)
    got = await next_of(inbox, lambda m: m.id == id)
    assert got.text is not None and got.text.split("#")[0].endswith(".ogg")
    received = await bob.download(got, tmp_path / "downloads")
    assert received.read_bytes() == note.path.read_bytes()
    decoded = tmp_path / "heard.wav"
    seconds = voice.decode(received, decoded)
    assert seconds == pytest.approx(note.duration, abs=0.07)
    original, heard = samples(reference), samples(decoded)
    n = min(len(original), len(heard))
    score = pesq(voice.RATE, original[:n], heard[:n], "wb")
    assert score >= 3.5, score


def raw_speech(tmp_path: Path) -> np.ndarray:
    """The spoken sentence as raw 16-bit mono PCM at the device's 48 kHz in ``mic.raw``; its samples."""
    wav = tmp_path / "spoken48.wav"
    voice.decode(speech(tmp_path), wav, rate=voice.DEVICE_RATE)
    with wave.open(str(wav)) as opened:
        pcm = opened.readframes(opened.getnframes())
    (tmp_path / "mic.raw").write_bytes(pcm)
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_record_from_the_default_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spoken = raw_speech(tmp_path)
    config = alsa_config(tmp_path / "asound.conf", capture_from=tmp_path / "mic.raw")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))
    seconds = len(spoken) / voice.DEVICE_RATE
    note = voice.record(tmp_path / "note.ogg", seconds)
    assert note.duration == pytest.approx(seconds, abs=0.01)
    assert voice.duration(note.path) == pytest.approx(seconds, abs=0.07)
    # What the microphone read, through 16 kbit/s Opus, lines up with the speech sample for sample.
    voice.decode(note.path, tmp_path / "heard.wav", rate=voice.DEVICE_RATE)
    with wave.open(str(tmp_path / "heard.wav")) as wav:
        heard = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32)
    assert correlation(spoken, heard) > 0.85


def test_play_on_the_default_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spoken = raw_speech(tmp_path)
    note = voice.encode(tmp_path / "spoken.wav", tmp_path / "note.ogg")
    config = alsa_config(tmp_path / "asound.conf", play_into=tmp_path / "speaker.raw")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))
    seconds = voice.play(note.path)
    assert seconds == pytest.approx(note.duration, abs=0.07)
    played = np.frombuffer((tmp_path / "speaker.raw").read_bytes(), dtype=np.int16).astype(np.float32)
    # All of it reached the device (drained before the device closed), at 48 kHz.
    assert len(played) == round(seconds * voice.DEVICE_RATE)
    assert correlation(spoken, played) > 0.85


def test_bad_audio_and_no_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(voice.VoiceError, match=f"^{broken} is not an audio file schnack can read$"):
        voice.encode(broken, tmp_path / "x.ogg")
    # Nothing half-written is left behind.
    assert list(tmp_path.iterdir()) == [broken]
    note = voice.encode(speech(tmp_path), tmp_path / "note.ogg")
    # A default device that only plays, then one that only records.
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "play.conf", play_into=tmp_path / "out.raw")))
    with pytest.raises(voice.NoAudioDevice, match=r"^no microphone: ALSA cannot open 'default' for capture: "):
        voice.record(tmp_path / "r.ogg", 1.0)
    assert not (tmp_path / "r.ogg").exists() and not (tmp_path / ".r.ogg.part").exists()
    (tmp_path / "mic.raw").write_bytes(bytes(1000))
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "rec.conf", capture_from=tmp_path / "mic.raw")))
    with pytest.raises(voice.NoAudioDevice,
                       match=r"^no speaker: ALSA cannot open 'default' for playback: .*; write the voice message "
                             r"to a file with --wav OUT$"):  # fmt: skip
        voice.play(note.path)
    with pytest.raises(voice.VoiceError, match="is not an audio file schnack can read"):
        voice.play(broken)
