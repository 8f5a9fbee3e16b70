"""The adaptive jitter buffer of a call's receive path (sans I/O: times are passed in).

RTP packets (RFC 3550) come in out of order, late or not at all; the playout takes audio out at a
steady clock. The buffer orders packets by sequence number, plays each at its RTP timestamp plus
a delay, and decides for every stretch of the timeline what fills it (:class:`Action`):

- the packet itself;
- a **DTX gap** (RFC 7587 §3.1.3): the next packet follows in sequence but its timestamp jumped,
  so the sender had nothing to say: comfort silence, not concealment;
- a **loss**: sequence numbers are missing; the last missing packet is rebuilt from the in-band
  FEC of the one after it when that one is already here, the rest is concealed (RFC 6716 §4.4);
  unless a later packet brought a redundant copy of it (RFC 2198, :mod:`.red`): the copy takes
  its place and plays as the packet would have;
- **nothing yet**: the next packet has not come; silence if what played last was silent (most
  likely DTX), else concealment for up to 60 ms, then silence. A packet that turns up after its
  time was filled is late: it is dropped and counted; unless that time was silence played only
  because nothing had come (the start of a talk spurt after a pause, its first packets slower
  than the delay expected): then the timeline goes back to the packet and it plays whole, the
  silence played in the meantime becoming added delay (shed again in the next pause).

The delay adapts to the measured jitter (RFC 3550 §6.4.1 measures the same transit time): the
95th percentile of the packets' transit times over the last seconds minus the fastest, each
taken from the packet's last sample (a longer packet leaves later after its first sample: that
is packetization, not jitter, and a sender going from 60 ms to 120 ms packets would otherwise
make the delay grow mid-sentence), plus one frame when the stream carries FEC or redundant
copies (packet n+1 must be here when n is due), within ``min_delay``..``max_delay``. The delay grows by holding the timeline (concealment or silence
played in between) and shrinks only where it cannot be heard: by skipping silence.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from dataclasses import dataclass

# A transit time older than this no longer counts towards the jitter estimate, in seconds.
WINDOW = 5.0
# Without a packet for this long the stream is taken to have stopped; the next one starts anew.
IDLE = 10.0
# The delay is changed only when it is this far off its target, in seconds (no hunting).
HYSTERESIS = 0.01
# With no packet to go on, concealment continues the last sound for this long at most, in
# seconds; then it is silence: a longer gap is most likely a pause (DTX), and concealment that
# long only drones.
MAX_CONCEAL = 0.06


class Action(enum.Enum):
    PLAY = "play"  # decode ``payload``
    RECOVER = "recover"  # rebuild ``samples`` lost just before ``payload`` from its FEC data
    CONCEAL = "conceal"  # ``samples`` of loss concealment
    SILENCE = "silence"  # ``samples`` of comfort silence


@dataclass(frozen=True)
class Unit:
    """One stretch of the timeline, in playout order. ``skip`` samples at the start of the
    decoded audio are not played (they overlap what was already played); ``audible`` is false
    when the unit is decoded only to keep the decoder's state while the delay shrinks."""

    action: Action
    samples: int
    payload: bytes = b""
    skip: int = 0
    audible: bool = True


@dataclass
class JitterStats:
    """What the buffer did: packets received, missing at their time (``lost``, which includes
    the ``late`` ones), of those rebuilt from FEC (``recovered``) or concealed, packets that
    never came but played from a redundant copy a later packet brought (``redundant``, RFC 2198),
    duplicates dropped, and the delay it adds (now and on average, seconds)."""

    received: int = 0
    lost: int = 0
    recovered: int = 0
    redundant: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    delay: float = 0.0
    mean_delay: float = 0.0
    target: float = 0.0


@dataclass(frozen=True)
class _Packet:
    seq: int
    ts: int
    samples: int
    payload: bytes
    fec: bool
    copy: bool = False


def _unwrap(value: int, reference: int, bits: int) -> int:
    """``value`` (modulo 2**bits) as the integer nearest ``reference`` (RFC 3550 A.1)."""
    span = 1 << bits
    delta = (value - reference) % span
    if delta >= span // 2:
        delta -= span
    return reference + delta


class JitterBuffer:
    """Reorders, times and fills one RTP stream's audio; see the module's description."""

    def __init__(self, *, rate: int = 48000, frame: int = 960, min_delay: float = 0.02, max_delay: float = 0.2) -> None:
        self.rate = rate
        self.frame = frame
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.stats = JitterStats(target=min_delay)
        self._packets: dict[int, _Packet] = {}
        self._order: list[int] = []  # the buffered sequence numbers, sorted
        # (arrival, transit of the packet's first sample, transit of its end)
        self._transits: deque[tuple[float, float, float]] = deque()
        # The highest sequence number so far and its timestamp, both unwrapped.
        self._ref_seq = 0
        self._ref_ts = 0
        self._next_seq = 0
        self._next_ts = 0
        self._started = False
        self._first_arrival = 0.0
        self._last_arrival = 0.0
        # When a packet last came with redundancy for the one before it (in-band FEC or a RED
        # copy), and that packet's length.
        self._covered_at = -math.inf
        self._covered_samples = frame
        # Up to this timestamp a gap before a DTX pause is concealed (lost speech), not silence.
        self._conceal_until = 0
        # Samples filled since the last packet while no later one was here.
        self._waited = 0
        # Where the silence played for want of any packet began (None: not in such a stretch).
        self._guessed_from: int | None = None
        self._delay_sum = 0.0
        self._delay_count = 0

    # -- in ---------------------------------------------------------------------------------

    def put(self, seq: int, ts: int, payload: bytes, samples: int, arrival: float, *, fec: bool = False,
            red: bool = False) -> None:  # fmt: skip
        """A packet: 16-bit sequence number, 32-bit timestamp, the Opus payload, how many
        samples it decodes to, when it arrived, whether it carries FEC for the one before, and
        whether it came as RED (RFC 2198): a stream that brings copies of the packets before
        (:meth:`put_copy`), even if this one, the first after a pause, has none."""
        if not self.stats.received or arrival - self._last_arrival > IDLE:
            self._restart(seq, ts)
        useq = _unwrap(seq, self._ref_seq, 16)
        uts = _unwrap(ts, self._ref_ts, 32)
        if self._started and abs(uts - self._next_ts) > IDLE * self.rate:
            # A timestamp from another timeline (the sender restarted): start again from it.
            self._restart(seq, ts)
            useq, uts = seq, ts
        if useq > self._ref_seq:
            self._ref_seq, self._ref_ts = useq, uts
        self._last_arrival = arrival
        if fec or red:
            self._covered_at, self._covered_samples = arrival, samples
        self.stats.received += 1
        self._transits.append((arrival, arrival - uts / self.rate, arrival - (uts + samples) / self.rate))
        while self._transits and self._transits[0][0] < arrival - WINDOW:
            self._transits.popleft()
        if useq in self._packets:
            if self._packets[useq].copy:
                # The packet itself after its copy: it takes the copy's place.
                self._packets[useq] = _Packet(useq, uts, samples, payload, fec)
            else:
                self.stats.duplicates += 1
            return
        if self._started and self._reclaims(useq, uts):
            # The start of a talk spurt whose time was filled with silence: play it from its
            # beginning; the delay grows by what is replayed.
            self._next_ts = uts
            self._guessed_from = None
        elif self._started and (useq < self._next_seq or uts + samples <= self._next_ts):
            self.stats.late += 1
            return
        if not self._packets and not self._started:
            self._first_arrival = arrival
        self._packets[useq] = _Packet(useq, uts, samples, payload, fec)
        bisect.insort(self._order, useq)

    def put_copy(self, seq: int, ts: int, payload: bytes, samples: int) -> None:
        """A redundant copy of an earlier packet (RFC 2198), come with the packet just
        :meth:`put`: it takes that packet's place if the packet has not come and its time has
        not been played yet; else it is dropped, uncounted (most copies are of packets that came)."""
        if not self.stats.received:
            return
        useq = _unwrap(seq, self._ref_seq, 16)
        uts = _unwrap(ts, self._ref_ts, 32)
        if useq in self._packets or (self._started and (useq < self._next_seq or uts + samples <= self._next_ts)):
            return
        self._packets[useq] = _Packet(useq, uts, samples, payload, fec=False, copy=True)
        bisect.insort(self._order, useq)

    def _reclaims(self, useq: int, uts: int) -> bool:
        """Whether a packet due before the timeline's position falls into silence played only
        because no packet was there, no further back than the longest delay allowed."""
        return (
            self._guessed_from is not None
            and useq >= self._next_seq
            and self._guessed_from <= uts < self._next_ts
            and self._next_ts - uts <= self.max_delay * self.rate
        )

    def _restart(self, seq: int, ts: int) -> None:
        self._packets.clear()
        self._order.clear()
        self._transits.clear()
        self._ref_seq, self._ref_ts = seq, ts
        self._started = False
        self._conceal_until = self._waited = 0
        self._guessed_from = None

    # -- timing -----------------------------------------------------------------------------

    @property
    def jitter(self) -> float:
        """The spread of transit times from the packets' ends: 95th percentile minus the fastest,
        in seconds."""
        if not self._transits:
            return 0.0
        transits = sorted(end for _, _, end in self._transits)
        return transits[min(len(transits) - 1, int(0.95 * len(transits)))] - transits[0]

    @property
    def target(self) -> float:
        # With FEC or RED copies in the stream (within the window), packet n+1 must be here when
        # n is taken, which is up to one frame of the playout before n plays (the frame being
        # played out). Packets of the protected length: when the sender goes back to longer
        # packets without protection, the delay must not grow mid-speech for them.
        covered = self._last_arrival - self._covered_at < WINDOW
        margin = (self._covered_samples + self.frame) / self.rate if covered else 0.0
        return max(self.min_delay, min(self.max_delay, self.jitter + margin))

    def _delay(self, anchor: float) -> float:
        """How long the fastest packet of the window waits before it is played, if ``next_ts``
        plays at ``anchor``."""
        if not self._transits:
            return self.stats.delay
        offset = anchor - self._next_ts / self.rate
        return offset - min(start for _, start, _ in self._transits)

    # -- out --------------------------------------------------------------------------------

    def pop(self, now: float, queued: int = 0, *, quiet: bool = False) -> Unit | None:
        """The next unit to play, or None when there is nothing to play yet (before the first
        packet's delay is over, or after the stream stopped). ``queued`` samples are still
        waiting to be played before it, ``quiet`` tells whether the last audio was silence."""
        if not self._started:
            if not self._order or now < self._first_arrival + self.target:
                return None
            first = self._packets[self._order[0]]
            self._next_seq, self._next_ts, self._started = first.seq, first.ts, True
        if not self._order and now - self._last_arrival > IDLE:
            return None
        target = self.target
        delay = self._delay(now + queued / self.rate)
        self.stats.target, self.stats.delay = target, delay
        self._delay_sum += delay
        self._delay_count += 1
        self.stats.mean_delay = self._delay_sum / self._delay_count
        if delay < target - HYSTERESIS / 2 and (quiet or delay < target - HYSTERESIS):
            # Hold the timeline: what is played now pushes everything after it later.
            samples = min(self.frame, self._granules(target - delay))
            return Unit(Action.SILENCE if quiet else Action.CONCEAL, samples)
        shrink = self._granules(delay - target) if quiet and delay > target + 2 * HYSTERESIS else 0
        return self._next(shrink, quiet)

    def _granules(self, seconds: float) -> int:
        """``seconds`` in whole 2.5 ms steps (the unit Opus concealment comes in), at least one."""
        step = self.rate // 400
        return max(step, round(seconds * self.rate / step) * step)

    def _next(self, shrink: int, quiet: bool) -> Unit:
        unit = self._choose(shrink, quiet)
        if unit.action is not Action.SILENCE or self._order:
            self._guessed_from = None
        return unit

    def _choose(self, shrink: int, quiet: bool) -> Unit:
        packet = self._packets.get(self._next_seq)
        if packet is not None:
            gap = packet.ts - self._next_ts
            if gap > 0 and self._next_ts < self._conceal_until:
                # What lost packets held before the sender paused.
                samples = min(gap, self.frame, self._conceal_until - self._next_ts)
                self._next_ts += samples
                return Unit(Action.CONCEAL, samples)
            if gap > 0:
                # In sequence but later in time: DTX (RFC 7587 §3.1.3).
                if shrink:
                    self._next_ts += min(gap, shrink)
                    return Unit(Action.SILENCE, min(gap, shrink), audible=False)
                samples = min(gap, self.frame)
                self._next_ts += samples
                return Unit(Action.SILENCE, samples)
            self._take(packet)
            self._waited = 0
            self._next_seq += 1
            self._next_ts = packet.ts + packet.samples
            # While the delay shrinks, a silent packet is decoded (the decoder's state) but not played.
            return Unit(Action.PLAY, packet.samples, packet.payload, skip=-gap, audible=shrink < packet.samples)
        later = next((self._packets[s] for s in self._order if s > self._next_seq), None)
        if later is None:
            samples = self.frame
            self._waited += samples
            guess = quiet or self._waited > MAX_CONCEAL * self.rate
            if guess and self._guessed_from is None:
                self._guessed_from = self._next_ts
            self._next_ts += samples
            return Unit(Action.SILENCE if guess else Action.CONCEAL, samples)
        self._waited = 0
        missing = later.seq - self._next_seq
        span = later.ts - self._next_ts
        if span > missing * later.samples:
            # More time than the lost packets can have held: the sender paused (DTX) after
            # them. Their share is concealed, the rest is silence; ``later``'s FEC is for a
            # frame of that silence, not for them.
            self.stats.lost += missing
            self.stats.concealed += missing
            self._next_seq = later.seq
            self._conceal_until = self._next_ts + missing * later.samples
            return self._choose(shrink, quiet)
        if span > later.samples:
            # More is missing than the FEC of ``later`` covers: conceal up to that part.
            samples = min(self.frame, span - later.samples)
            self._next_ts += samples
            return Unit(Action.SILENCE if quiet else Action.CONCEAL, samples)
        self.stats.lost += missing
        recovered = later.fec and span == later.samples
        self.stats.recovered += int(recovered)
        self.stats.concealed += missing - int(recovered)
        self._next_seq = later.seq
        if span <= 0:
            # The whole gap was already filled while waiting; ``later`` plays next.
            return self._choose(shrink, quiet)
        self._next_ts = later.ts
        return Unit(Action.RECOVER, span, later.payload)

    def _take(self, packet: _Packet) -> None:
        self.stats.redundant += int(packet.copy)
        del self._packets[packet.seq]
        self._order.remove(packet.seq)
