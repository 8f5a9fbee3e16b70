"""Voice messages: Ogg/Opus (RFC 7845) voice notes made and played with PyAV's FFmpeg.

A voice note is mono 16 kHz Opus at 16 kbit/s in 60 ms frames: about 100 KB per minute at a
wideband PESQ of about 3.7, which keeps a voice note cheap on a data plan and clear enough. The
file is an ordinary ``.ogg`` file of type ``audio/ogg``, which is what Conversations, Monal, Dino
and converse.js take for audio; its duration is the Ogg stream's own (the granule position of
its last page, RFC 7845 §4), so every player shows it without extra fields in the message.

Recording needs a capture device and playing an output device (ALSA, through FFmpeg's
libavdevice); without one, :class:`NoAudioDevice` says so and a voice note can still be made
from a WAV file and written out as WAV.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

RATE = 16_000
BITRATE = 16_000
FRAME_MS = 60
CONTENT_TYPE = "audio/ogg"
SUFFIX = ".ogg"


class VoiceError(Exception):
    """An audio file that cannot be read or written, with a sentence that says why."""


class NoAudioDevice(VoiceError):
    """There is no sound card to record from or play on."""


@dataclass(frozen=True)
class VoiceNote:
    """An encoded voice note: where it is, how long it lasts (seconds) and its size in bytes."""

    path: Path
    duration: float
    size: int


def _open_input(source: str | Path, fmt: str | None = None) -> av.container.InputContainer:
    try:
        return av.open(str(source), format=fmt)
    except (av.error.FFmpegError, OSError) as err:
        raise VoiceError(f"cannot read {source}: {err}") from None


def encode(source: Path, out: Path, *, seconds: float | None = None, device: str | None = None) -> VoiceNote:
    """Any audio FFmpeg reads (a WAV file, or ``device`` for ``seconds``) → an Ogg/Opus voice note.

    The audio is mixed down to mono and resampled to 16 kHz before the encoder, so that its
    whole 16 kbit/s go to the band speech lives in. Like :func:`decode`, it writes next to
    ``out`` and renames, so that a failure leaves no file.
    """
    container = _open_input(source, device)
    partial = out.with_name(f".{out.name}.part")
    try:
        if not container.streams.audio:
            raise VoiceError(f"{source} has no audio")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE, frame_size=RATE * FRAME_MS // 1000)
        with av.open(str(partial), "w", format="ogg") as output:
            stream = output.add_stream("libopus", rate=RATE)
            stream.bit_rate = BITRATE
            stream.layout = "mono"
            stream.format = "s16"
            stream.codec_context.options = {"application": "voip", "frame_duration": str(FRAME_MS), "vbr": "on"}
            samples = 0
            limit = int(seconds * RATE) if seconds is not None else None
            try:
                for frame in container.decode(audio=0):
                    for chunk in resampler.resample(frame):
                        samples += chunk.samples
                        output.mux(stream.encode(chunk))
                    if limit is not None and samples >= limit:
                        break
                for chunk in resampler.resample(None):
                    samples += chunk.samples
                    output.mux(stream.encode(chunk))
            except av.error.FFmpegError as err:
                raise VoiceError(f"cannot decode {source}: {err}") from None
            output.mux(stream.encode(None))
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    return VoiceNote(out, samples / RATE, out.stat().st_size)


def duration(path: Path) -> float:
    """The length of an Ogg/Opus file in seconds, as the container states it."""
    container = _open_input(path)
    try:
        if container.duration is None:
            raise VoiceError(f"{path} does not state its length")
        return float(container.duration / av.time_base)
    finally:
        container.close()


def decode(path: Path, out: Path, *, rate: int = RATE) -> float:
    """A voice note (or any audio) → 16-bit mono WAV at ``rate``; the seconds written.

    The WAV file is written next to ``out`` and renamed into place, so that a failure leaves
    nothing half-written.
    """
    container = _open_input(path)
    partial = out.with_name(f".{out.name}.part")
    samples = 0
    try:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        with wave.open(str(partial), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            try:
                for frame in container.decode(audio=0):
                    for chunk in resampler.resample(frame):
                        wav.writeframes(bytes(chunk.planes[0])[: chunk.samples * 2])
                        samples += chunk.samples
                for chunk in resampler.resample(None):
                    wav.writeframes(bytes(chunk.planes[0])[: chunk.samples * 2])
                    samples += chunk.samples
            except av.error.FFmpegError as err:
                raise VoiceError(f"cannot decode {path}: {err}") from None
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    return samples / rate


def has_audio_device(capture: bool) -> bool:
    """Whether ALSA lists a sound card with a capture (or playback) device."""
    root = Path("/dev/snd")
    suffix = "c" if capture else "p"
    return root.is_dir() and any(p.name.startswith("pcmC") and p.name.endswith(suffix) for p in root.iterdir())


def record(out: Path, seconds: float) -> VoiceNote:
    """Record ``seconds`` from the default microphone into a voice note."""
    if not has_audio_device(capture=True):
        raise NoAudioDevice("no microphone: this system has no audio capture device")
    return encode(Path("default"), out, seconds=seconds, device="alsa")


def play(path: Path) -> float:
    """Play a voice note on the default sound card; the seconds played."""
    if not has_audio_device(capture=False):
        raise NoAudioDevice("no audio output device here; write the voice message to a file with --wav OUT")
    container = _open_input(path)
    samples = 0
    try:
        with av.open("default", "w", format="alsa") as output:
            stream = output.add_stream("pcm_s16le", rate=RATE)
            stream.layout = "mono"
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(audio=0):
                for chunk in resampler.resample(frame):
                    samples += chunk.samples
                    output.mux(stream.encode(chunk))
            output.mux(stream.encode(None))
    except av.error.FFmpegError as err:
        raise VoiceError(f"cannot play {path}: {err}") from None
    finally:
        container.close()
    return samples / RATE
