"""The system's sound card: ALSA's capture and playback devices, for calls and voice messages.

:class:`Pcm` is one open ALSA PCM in 16-bit mono interleaved samples, on the system's ALSA
library (``libasound.so.2``) through ctypes rather than through PyAV's ALSA device: the libasound
inside PyAV's wheel looks for its configuration under the prefix it was built in, so it knows no
``default`` device on an ordinary system, and it cannot load the system's ALSA plugins (PipeWire,
PulseAudio) through which the default device goes on a desktop. With the system's library,
whatever ``~/.asoundrc`` or ``/etc/asound.conf`` makes of ``default`` is what is used.

A call's microphone and speaker (:mod:`.calls.audio`) and voice messages (:mod:`.voice`) build
on it. Without a usable device (no sound card, no libasound), opening raises
:class:`NoAudioDevice` with ALSA's reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import threading

log = logging.getLogger(__name__)

# alsa/pcm.h: SND_PCM_STREAM_PLAYBACK/CAPTURE, SND_PCM_FORMAT_S16_LE, SND_PCM_ACCESS_RW_INTERLEAVED,
# SND_PCM_NONBLOCK.
_PLAYBACK, _CAPTURE = 0, 1
_S16_LE = 2
_RW_INTERLEAVED = 3
_NONBLOCK = 1

# void (*snd_lib_error_handler_t)(const char *file, int line, const char *function, int err,
# const char *fmt, ...): the variadic rest is not read.
_ErrorHandler = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_char_p)  # fmt: skip


class NoAudioDevice(Exception):
    """No microphone or speaker to use, with a sentence that says why."""


def _quiet(_file: bytes | None, _line: int, _function: bytes | None, _err: int, _fmt: bytes | None) -> None:
    """ALSA's own messages would go to stderr; the failures reach the user as NoAudioDevice instead."""


_QUIET = _ErrorHandler(_quiet)
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("asound")
            if name is None:
                raise NoAudioDevice("ALSA's library (libasound.so.2) is not installed")
            lib = ctypes.CDLL(name)
            lib.snd_lib_error_set_handler.argtypes = [_ErrorHandler]
            lib.snd_pcm_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
            lib.snd_pcm_set_params.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                               ctypes.c_uint, ctypes.c_int, ctypes.c_uint]  # fmt: skip
            lib.snd_pcm_readi.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
            lib.snd_pcm_readi.restype = ctypes.c_long
            lib.snd_pcm_writei.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
            lib.snd_pcm_writei.restype = ctypes.c_long
            lib.snd_pcm_recover.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            lib.snd_pcm_drain.argtypes = [ctypes.c_void_p]
            lib.snd_pcm_close.argtypes = [ctypes.c_void_p]
            lib.snd_strerror.argtypes = [ctypes.c_int]
            lib.snd_strerror.restype = ctypes.c_char_p
            lib.snd_lib_error_set_handler(_QUIET)
            _lib = lib
        return _lib


class Pcm:
    """One open ALSA PCM, 16-bit mono interleaved at ``rate`` (ALSA resamples where the device
    wants another rate), buffering ``buffer_us`` microseconds.

    A blocking device waits in :meth:`read` and :meth:`write_all` for the sound card's clock; a
    non-blocking playback device (``blocking=False``) never waits, and :meth:`write` drops what
    does not fit, so that an event loop is never held up by it.
    """

    def __init__(self, device: str, *, capture: bool, rate: int, buffer_us: int, blocking: bool = True) -> None:
        self._lib = _library()
        self.rate = rate
        handle = ctypes.c_void_p()
        what = "capture" if capture else "playback"
        mode = 0 if blocking else _NONBLOCK
        err = self._lib.snd_pcm_open(ctypes.byref(handle), device.encode(), _CAPTURE if capture else _PLAYBACK, mode)
        if err < 0:
            raise NoAudioDevice(f"ALSA cannot open {device!r} for {what}: {self._error(err)}")
        err = self._lib.snd_pcm_set_params(handle, _S16_LE, _RW_INTERLEAVED, 1, rate, 1, buffer_us)
        if err < 0:
            self._lib.snd_pcm_close(handle)
            raise NoAudioDevice(f"{device!r} takes no 16-bit mono audio at {rate} Hz: {self._error(err)}")
        self._handle: ctypes.c_void_p | None = handle
        self._lock = threading.Lock()

    def _error(self, err: int) -> str:
        text = self._lib.snd_strerror(err)
        return text.decode(errors="replace") if text else f"error {err}"

    def read(self, frames: int) -> bytes:
        """Blocks until ``frames`` samples were captured; an overrun (the reader was late) is
        recovered from, losing what the device could not keep."""
        buffer = ctypes.create_string_buffer(frames * 2)
        done = 0
        while done < frames:
            with self._lock:
                if self._handle is None:
                    raise NoAudioDevice("the microphone was closed")
                got = int(self._lib.snd_pcm_readi(self._handle, ctypes.byref(buffer, done * 2), frames - done))
                if got < 0:
                    if self._lib.snd_pcm_recover(self._handle, got, 1) < 0:
                        raise NoAudioDevice(f"the microphone failed: {self._error(got)}")
                    continue
            done += got
        return buffer.raw

    def write(self, pcm: bytes) -> bool:
        """Queue ``pcm`` for playing on a non-blocking device; False if the device's buffer was
        full and it was dropped (or the part that did not fit)."""
        frames = len(pcm) // 2
        with self._lock:
            if self._handle is None:
                return False
            for _ in range(2):
                written = int(self._lib.snd_pcm_writei(self._handle, pcm, frames))
                if written >= 0:
                    return written == frames
                if written == -errno.EAGAIN:
                    return False
                # An underrun (-EPIPE) or a suspended device (-ESTRPIPE): prepare it and write again.
                if self._lib.snd_pcm_recover(self._handle, written, 1) < 0:
                    log.debug("speaker: %s", self._error(written))
                    return False
            return False

    def write_all(self, pcm: bytes) -> None:
        """Play all of ``pcm`` on a blocking device, waiting for room in its buffer; an underrun
        (the writer was late) is recovered from, with a gap one hears."""
        buffer = ctypes.create_string_buffer(pcm, len(pcm))
        frames = len(pcm) // 2
        done = 0
        while done < frames:
            with self._lock:
                if self._handle is None:
                    raise NoAudioDevice("the speaker was closed")
                written = int(self._lib.snd_pcm_writei(self._handle, ctypes.byref(buffer, done * 2), frames - done))
                if written < 0:
                    if self._lib.snd_pcm_recover(self._handle, written, 1) < 0:
                        raise NoAudioDevice(f"the speaker failed: {self._error(written)}")
                    continue
            done += written

    def drain(self) -> None:
        """Wait until what was written has been played (a blocking playback device)."""
        with self._lock:
            if self._handle is not None:
                self._lib.snd_pcm_drain(self._handle)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._lib.snd_pcm_close(self._handle)
                self._handle = None
