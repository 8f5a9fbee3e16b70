"""Opus decoding for calls, with loss concealment and in-band FEC recovery (RFC 6716).

PyAV's decoder only takes packets, so it can neither conceal a lost packet (libopus PLC, RFC 6716
§4.4: ``opus_decode`` with no data) nor rebuild one from the redundancy the next packet carries
(in-band FEC, the SILK "LBRR" frames of RFC 6716 §4.2.4: ``opus_decode(..., decode_fec=1)``).
This module binds the few libopus calls it needs with ctypes: Debian's ``libopus0`` if it is
installed, else the copy PyAV's wheel bundles (both export the same stable C API). The sending
track uses one more of them: the repacketizer, which joins frames into one packet (:func:`join`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import av

RATE = 48000
# RFC 6716 §2.1.4: no packet holds more than 120 ms.
MAX_SAMPLES = RATE * 120 // 1000
# libopus decodes concealment in multiples of 2.5 ms (RFC 6716 §2.1.4, the shortest frame).
GRANULE = RATE * 25 // 10000
# opus_defines.h: the success code, and the request that resets a decoder.
OPUS_OK = 0
OPUS_RESET_STATE = 4028


class OpusError(RuntimeError):
    """libopus is missing or refused a call."""


@cache
def _library() -> ctypes.CDLL:
    """libopus, with the signatures of the functions used here."""
    candidates: list[str] = []
    if found := ctypes.util.find_library("opus"):
        candidates.append(found)
    bundled = Path(av.__file__).resolve().parent.parent / "av.libs"
    candidates += sorted(str(p) for p in bundled.glob("libopus*.so*"))
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        break
    else:
        raise OpusError("libopus not found: install libopus0 (Debian) or libopus (other systems)")
    byte_p = ctypes.POINTER(ctypes.c_ubyte)
    lib.opus_decoder_create.argtypes = (ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int))
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_destroy.argtypes = (ctypes.c_void_p,)
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode.argtypes = (ctypes.c_void_p, byte_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int16),
                                ctypes.c_int, ctypes.c_int)  # fmt: skip
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_packet_get_nb_samples.argtypes = (byte_p, ctypes.c_int32, ctypes.c_int32)
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    lib.opus_packet_parse.argtypes = (byte_p, ctypes.c_int32, byte_p, ctypes.POINTER(byte_p),
                                      ctypes.POINTER(ctypes.c_int16), ctypes.POINTER(ctypes.c_int))  # fmt: skip
    lib.opus_packet_parse.restype = ctypes.c_int
    # Variadic in C; the reset request takes no further argument.
    lib.opus_decoder_ctl.argtypes = (ctypes.c_void_p, ctypes.c_int)
    lib.opus_decoder_ctl.restype = ctypes.c_int
    lib.opus_strerror.argtypes = (ctypes.c_int,)
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_repacketizer_create.argtypes = ()
    lib.opus_repacketizer_create.restype = ctypes.c_void_p
    lib.opus_repacketizer_destroy.argtypes = (ctypes.c_void_p,)
    lib.opus_repacketizer_destroy.restype = None
    lib.opus_repacketizer_init.argtypes = (ctypes.c_void_p,)
    lib.opus_repacketizer_init.restype = ctypes.c_void_p
    lib.opus_repacketizer_cat.argtypes = (ctypes.c_void_p, byte_p, ctypes.c_int32)
    lib.opus_repacketizer_cat.restype = ctypes.c_int
    lib.opus_repacketizer_out.argtypes = (ctypes.c_void_p, byte_p, ctypes.c_int32)
    lib.opus_repacketizer_out.restype = ctypes.c_int32
    return lib


def _error(code: int) -> str:
    return (_library().opus_strerror(code) or b"unknown error").decode()


def _bytes(data: bytes) -> ctypes.Array[ctypes.c_ubyte]:
    return (ctypes.c_ubyte * len(data)).from_buffer_copy(data)


def packet_samples(packet: bytes) -> int:
    """The samples at 48 kHz an Opus packet decodes to (RFC 6716 §3.1); :class:`OpusError` for
    a packet that is not one."""
    if not packet:
        raise OpusError("empty Opus packet")
    count = int(_library().opus_packet_get_nb_samples(_bytes(packet), len(packet), RATE))
    if count < 0 or count > MAX_SAMPLES:
        raise OpusError(f"not an Opus packet: {_error(count) if count < 0 else 'longer than 120 ms'}")
    return count


def has_fec(packet: bytes) -> bool:
    """Whether the packet carries in-band FEC for the one before it (RFC 6716 §4.2.3-§4.2.4).

    Only SILK and hybrid packets (TOC configurations 0-15) can. The SILK header's first bits are
    one VAD flag per 20 ms SILK frame of the mid channel and then its LBRR flag (for a stereo
    packet the side channel's flags follow); each is coded with probability 1/2, so they are the
    first bits of the first frame's first byte.
    """
    if not packet or packet[0] >> 3 >= 16:
        return False
    lib = _library()
    frames = (ctypes.POINTER(ctypes.c_ubyte) * 48)()
    sizes = (ctypes.c_int16 * 48)()
    toc = ctypes.c_ubyte()
    data = _bytes(packet)  # kept alive: ``frames`` point into it
    count = lib.opus_packet_parse(data, len(packet), ctypes.byref(toc), frames, sizes, None)
    if count <= 0 or sizes[0] == 0:
        return False
    first = frames[0][0]
    frame_samples = packet_samples(packet) // count
    silk_frames = max(1, frame_samples // (RATE // 50))
    lbrr = (first >> (7 - silk_frames)) & 1
    if packet[0] & 0x04:  # stereo: the side channel's VAD flags and LBRR flag follow
        lbrr |= (first >> (6 - 2 * silk_frames)) & 1
    return bool(lbrr)


def join(packets: Sequence[bytes]) -> list[bytes]:
    """Consecutive Opus packets joined into as few packets as the format allows (RFC 6716 §3.2:
    up to 120 ms of frames sharing the TOC's mode, bandwidth, frame size and channels), in order;
    :class:`OpusError` for a packet that is not one.

    The data saver's 120 ms packets are built from 60 ms frames this way: libopus' own 120 ms
    packets spend fewer bits than asked for, and for the same bytes 60 ms frames score higher
    (docs/benchmarks.md, "Calls"). Frames that cannot share a packet (the encoder switched mode
    or bandwidth between them) stay in packets of their own.
    """
    lib = _library()
    state = lib.opus_repacketizer_create()
    if not state:
        raise OpusError("opus_repacketizer_create failed")
    out: list[bytes] = []
    # The repacketizer keeps pointers into the packets it was given until it is reset.
    held: list[ctypes.Array[ctypes.c_ubyte]] = []

    def emit() -> None:
        # RFC 6716 §3.2.5: a TOC byte, a frame count byte, padding and up to two length bytes per frame.
        buffer = (ctypes.c_ubyte * (sum(len(h) for h in held) + 3 + 2 * len(held)))()
        size = lib.opus_repacketizer_out(state, buffer, len(buffer))
        if size < 0:
            raise OpusError(f"opus_repacketizer_out: {_error(size)}")
        out.append(bytes(buffer[:size]))
        lib.opus_repacketizer_init(state)
        held.clear()

    try:
        for packet in packets:
            data = _bytes(packet)
            if lib.opus_repacketizer_cat(state, data, len(packet)) != OPUS_OK:
                if not held:
                    raise OpusError("not an Opus packet")
                emit()
                if (status := lib.opus_repacketizer_cat(state, data, len(packet))) != OPUS_OK:
                    raise OpusError(f"not an Opus packet: {_error(status)}")
            held.append(data)
        if held:
            emit()
    finally:
        lib.opus_repacketizer_destroy(state)
    return out


class OpusDecoder:
    """One libopus decoder, mono 16-bit 48 kHz out (a stereo stream is mixed down by libopus).

    Every method returns PCM bytes; the decoder's state carries over between calls, which is
    what makes concealment and FEC sound continuous.
    """

    def __init__(self) -> None:
        lib = _library()
        status = ctypes.c_int()
        self._lib = lib
        self._state = lib.opus_decoder_create(RATE, 1, ctypes.byref(status))
        if status.value != OPUS_OK or not self._state:
            raise OpusError(f"opus_decoder_create: {_error(status.value)}")
        self._pcm = (ctypes.c_int16 * MAX_SAMPLES)()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state:
            self._lib.opus_decoder_destroy(state)

    def _run(self, data: bytes | None, samples: int, fec: bool) -> bytes:
        payload = _bytes(data) if data else None
        count = self._lib.opus_decode(self._state, payload, len(data) if data else 0, self._pcm, samples, int(fec))
        if count < 0:
            raise OpusError(f"opus_decode: {_error(count)}")
        return ctypes.string_at(self._pcm, count * 2)

    def decode(self, packet: bytes) -> bytes:
        """A received packet's audio; :class:`OpusError` for a corrupt packet."""
        return self._run(packet, MAX_SAMPLES, fec=False)

    def conceal(self, samples: int) -> bytes:
        """``samples`` of concealment for audio that never came (RFC 6716 §4.4): libopus
        continues the last sound and fades it out. Rounded up to whole 2.5 ms."""
        out = []
        while samples > 0:
            step = min(MAX_SAMPLES, -(-samples // GRANULE) * GRANULE)
            out.append(self._run(None, step, fec=False))
            samples -= step
        return b"".join(out)

    def reset(self) -> None:
        """Forget the audio decoded so far (``OPUS_RESET_STATE``), as a new decoder would.

        After concealment libopus fades the next packet in from the concealed level (SILK's PLC
        "glue", RFC 6716 §4.4), which is right when that packet follows the loss directly but
        swallows the start of a talk spurt that comes after a pause (DTX, RFC 7587 §3.1.3): a
        pause followed the concealment, so there is nothing to continue from.
        """
        status = self._lib.opus_decoder_ctl(self._state, OPUS_RESET_STATE)
        if status != OPUS_OK:
            raise OpusError(f"opus_decoder_ctl(OPUS_RESET_STATE): {_error(status)}")

    def recover(self, following: bytes, samples: int) -> bytes:
        """``samples`` of audio lost just before ``following``, rebuilt from the FEC data
        ``following`` carries (RFC 6716 §4.2.4); libopus conceals whatever the FEC does not
        cover (all of it when ``following`` has none)."""
        samples = -(-samples // GRANULE) * GRANULE
        if samples > MAX_SAMPLES:
            return self.conceal(samples - MAX_SAMPLES) + self._run(following, MAX_SAMPLES, fec=True)
        return self._run(following, samples, fec=True)
