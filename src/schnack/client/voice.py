"""Voice messages: Ogg/Opus (RFC 7845) voice notes made and played with PyAV's FFmpeg.

A voice note is mono 16 kHz Opus at 16 kbit/s in 60 ms frames: about 100 KB per minute at a
wideband PESQ of about 3.7, which keeps a voice note cheap on a data plan and clear enough. The
file is an ordinary ``.ogg`` file of type ``audio/ogg``, which is what Conversations, Monal, Dino
and converse.js take for audio; its duration is the Ogg stream's own (the granule position of
its last page, RFC 7845 §4), so every player shows it without extra fields in the message.

Recording captures from the system's default capture device and playing plays on its default
playback device: ALSA's ``default`` PCM through the system's libasound (:mod:`.audio`, as calls
do), so whatever ``~/.asoundrc`` or ``/etc/asound.conf`` makes of it (on a desktop usually
PipeWire or PulseAudio) is used. The device works at 48 kHz, Opus's own rate, and FFmpeg
resamples to and from the note's 16 kHz. Without a device, :class:`NoAudioDevice` says so with
ALSA's reason, and a voice note can still be made from a WAV file and written out as WAV.
"""

from __future__ import annotations

import fractions
import os
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from . import audio

RATE = 16_000
BITRATE = 16_000
FRAME_MS = 60
CONTENT_TYPE = "audio/ogg"
SUFFIX = ".ogg"
# The sound card's side: Opus's own rate (what its decoder gives), which every device takes.
DEVICE_RATE = 48_000
# A voice note is not a conversation: half a second of buffer costs nothing one notices, and
# rides out a busy machine without a gap in the recording or on the speaker.
DEVICE_BUFFER_US = 500_000


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


def _open_input(source: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(source))
    except av.error.InvalidDataError:
        # FFmpeg knows no format of these bytes; its own words carry an errno made of a tag.
        raise VoiceError(f"{source} is not an audio file schnack can read") from None
    except (av.error.FFmpegError, OSError) as err:
        raise VoiceError(f"cannot read {source}: {err}") from None


def encode(source: Path, out: Path) -> VoiceNote:
    """Any audio FFmpeg reads (a WAV file, say) → an Ogg/Opus voice note."""
    container = _open_input(source)
    try:
        if not container.streams.audio:
            raise VoiceError(f"{source} has no audio")
        return _write_note(container.decode(audio=0), out, source=source)
    finally:
        container.close()


def _write_note(frames: Iterable[av.AudioFrame], out: Path, *, source: Path | str) -> VoiceNote:
    """Audio frames → an Ogg/Opus voice note (RFC 7845) at ``out``.

    The audio is mixed down to mono and resampled to 16 kHz before the encoder, so that its
    whole 16 kbit/s go to the band speech lives in. Like :func:`decode`, it writes next to
    ``out`` and renames, so that a failure leaves no file.
    """
    partial = out.with_name(f".{out.name}.part")
    try:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE, frame_size=RATE * FRAME_MS // 1000)
        with av.open(str(partial), "w", format="ogg") as output:
            stream = output.add_stream("libopus", rate=RATE)
            stream.bit_rate = BITRATE
            stream.layout = "mono"
            stream.format = "s16"
            stream.codec_context.options = {"application": "voip", "frame_duration": str(FRAME_MS), "vbr": "on"}
            samples = 0
            try:
                for frame in frames:
                    for chunk in resampler.resample(frame):
                        samples += chunk.samples
                        output.mux(stream.encode(chunk))
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


def _captured(microphone: audio.Pcm, seconds: float) -> Iterator[av.AudioFrame]:
    """``seconds`` of the microphone's audio as 48 kHz mono frames of 60 ms, read as the device
    delivers them."""
    per_frame = DEVICE_RATE * FRAME_MS // 1000
    total = round(seconds * DEVICE_RATE)
    done = 0
    while done < total:
        count = min(per_frame, total - done)
        try:
            pcm = microphone.read(count)
        except audio.NoAudioDevice as err:
            raise VoiceError(str(err)) from None
        frame = av.AudioFrame(format="s16", layout="mono", samples=count)
        frame.planes[0].update(pcm)
        frame.sample_rate = DEVICE_RATE
        frame.time_base = fractions.Fraction(1, DEVICE_RATE)
        frame.pts = done
        done += count
        yield frame


def record(out: Path, seconds: float, *, device: str = "default") -> VoiceNote:
    """Record ``seconds`` from the microphone (ALSA's ``device``) into a voice note."""
    try:
        microphone = audio.Pcm(device, capture=True, rate=DEVICE_RATE, buffer_us=DEVICE_BUFFER_US)
    except audio.NoAudioDevice as err:
        raise NoAudioDevice(f"no microphone: {err}") from None
    try:
        return _write_note(_captured(microphone, seconds), out, source=device)
    finally:
        microphone.close()


def play(path: Path, *, device: str = "default") -> float:
    """Play a voice note on the speaker (ALSA's ``device``) to its end; the seconds played."""
    container = _open_input(path)
    try:
        try:
            speaker = audio.Pcm(device, capture=False, rate=DEVICE_RATE, buffer_us=DEVICE_BUFFER_US)
        except audio.NoAudioDevice as err:
            raise NoAudioDevice(f"no speaker: {err}; write the voice message to a file with --wav OUT") from None
        samples = 0
        try:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=DEVICE_RATE)
            for frame in container.decode(audio=0):
                for chunk in resampler.resample(frame):
                    speaker.write_all(bytes(chunk.planes[0])[: chunk.samples * 2])
                    samples += chunk.samples
            for chunk in resampler.resample(None):
                speaker.write_all(bytes(chunk.planes[0])[: chunk.samples * 2])
                samples += chunk.samples
            speaker.drain()
        except (av.error.FFmpegError, audio.NoAudioDevice) as err:
            raise VoiceError(f"cannot play {path}: {err}") from None
        finally:
            speaker.close()
    finally:
        container.close()
    return samples / DEVICE_RATE
