"""The system's microphone and speaker in a call: ALSA's default capture and playback devices.

A call's media works in 16-bit mono PCM at 48 kHz, 20 ms at a time (what :class:`.media.OpusTrack`
encodes and :class:`.media.Playout` writes). :class:`Microphone` is such a source, read from the
default capture device; :class:`Speaker` is a sink that plays on the default playback device.

Both are :class:`..audio.Pcm` devices on the system's ALSA library, so whatever ``~/.asoundrc``
or ``/etc/asound.conf`` makes of ``default`` is what the call uses.

Without a usable device (no sound card, no libasound), opening raises :class:`NoAudioDevice`,
and the call goes on with silence or without playing what it hears.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from types import TracebackType

from ..audio import NoAudioDevice, Pcm
from .media import FRAME, RATE, WavSink

log = logging.getLogger(__name__)

# How much the device buffers. Playback: enough to ride out a busy event loop, little enough not
# to add delay one hears (it plays once the buffer is full). Capture: a reader that falls behind
# loses nothing within this, and it adds no delay, since what is there is read at once.
PLAYBACK_BUFFER_US = 60_000
CAPTURE_BUFFER_US = 200_000
# Captured audio not yet taken by the encoder is dropped beyond this many 20 ms pieces, so the
# delay stays bounded when the device's clock runs a little faster than ours: room for the longest
# Opus frame (120 ms, taken at once) and for a busy event loop.
MAX_QUEUED = 10
SILENCE = bytes(FRAME * 2)


class Microphone:
    """The default capture device as a call's source: an endless iterator of 20 ms of 16-bit mono
    48 kHz PCM, for :class:`.media.OpusTrack`.

    The device is opened at once (so a missing one is known before the call), but nothing is
    captured until the call takes its first piece. A thread then reads the device at its own
    clock; the encoder, paced by the event loop's clock, takes what is there, or silence if
    nothing is (the first piece, or a late device). Use it as a context manager, or :meth:`close`.
    """

    def __init__(self, device: str = "default") -> None:
        self._pcm = Pcm(device, capture=True, rate=RATE, buffer_us=CAPTURE_BUFFER_US)
        self._chunks: deque[bytes] = deque(maxlen=MAX_QUEUED)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.captured = 0
        self.silence = 0

    def __iter__(self) -> Microphone:
        return self

    def __next__(self) -> bytes:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._capture, name="microphone", daemon=True)
            self._thread.start()
        try:
            return self._chunks.popleft()
        except IndexError:
            self.silence += 1
            return SILENCE

    def _capture(self) -> None:
        start = time.monotonic()
        frames = 0
        while not self._stop.is_set():
            try:
                pcm = self._pcm.read(FRAME)
            except NoAudioDevice as err:
                log.warning("%s; sending silence from now on", err)
                return
            self._chunks.append(pcm)
            self.captured += 1
            frames += FRAME
            # A device without a clock of its own (ALSA's file or null plugin, a loopback) would
            # hand out audio as fast as it is read; never get ahead of real time.
            ahead = start + frames / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._pcm.close()

    def __enter__(self) -> Microphone:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Speaker(WavSink):
    """The default playback device as a call's sink: what the playout writes is played (and
    counted, as by :class:`.media.WavSink`).

    Writing never blocks: if the device's buffer is full (its clock a little slower than ours),
    the piece is dropped and counted in ``dropped``. The device is closed when the call's media
    stops, or by :meth:`close`.
    """

    def __init__(self, device: str = "default") -> None:
        super().__init__(None)
        self._pcm = Pcm(device, capture=False, rate=RATE, buffer_us=PLAYBACK_BUFFER_US, blocking=False)
        self.dropped = 0

    def write(self, pcm: bytes, *, filled: int = 0) -> None:
        super().write(pcm, filled=filled)
        if not self._pcm.write(pcm):
            self.dropped += 1

    async def stop(self) -> None:
        await super().stop()
        self.close()

    def close(self) -> None:
        self._pcm.close()

    def __enter__(self) -> Speaker:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
