"""Test audio: tones written as WAV files, and how strong a frequency is in a recording (Goertzel)."""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

RATE = 48000


def write_tone(path: Path, frequency: float, seconds: float, amplitude: float = 0.4) -> Path:
    """A sine tone, 16-bit mono 48 kHz."""
    count = int(RATE * seconds)
    step = 2 * math.pi * frequency / RATE
    samples = array.array("h", (int(amplitude * 32767 * math.sin(step * n)) for n in range(count)))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())
    return path


def read_wav(path: Path) -> array.array[int]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        return array.array("h", wav.readframes(wav.getnframes()))


def power(samples: array.array[int], frequency: float) -> float:
    """The normalised power of ``frequency`` in ``samples`` (the Goertzel algorithm)."""
    if not samples:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * frequency / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / (len(samples) ** 2)


def dominant(samples: array.array[int], candidates: tuple[float, ...]) -> float:
    """Which of ``candidates`` is strongest in the recording."""
    return max(candidates, key=lambda f: power(samples, f))


def loud_part(samples: array.array[int], threshold: int = 2000) -> array.array[int]:
    """The recording from its first to its last sample above ``threshold`` (skips the silence
    before the media flowed and after the tone ended)."""
    loud = [i for i, x in enumerate(samples) if abs(x) > threshold]
    if not loud:
        return array.array("h")
    return samples[loud[0] : loud[-1] + 1]
