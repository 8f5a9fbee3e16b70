"""The receive path's jitter buffer on its own: packets with arrival times in, the timeline out."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from schnack.client.calls.jitter import Action, JitterBuffer, Unit

FRAME = 960
TICK = 0.02


@dataclass(frozen=True)
class Sent:
    arrival: float
    seq: int
    ts: int
    samples: int = FRAME
    fec: bool = False
    # RFC 2198: the packet came with a copy of the one before it.
    red: bool = False

    @property
    def payload(self) -> bytes:
        return self.seq.to_bytes(4, "big")


def stream(count: int, *, samples: int = FRAME, transit: float = 0.005, fec: bool = False, red: bool = False,
           seq0: int = 0, ts0: int = 0) -> list[Sent]:  # fmt: skip
    """``count`` packets sent as they are spoken, arriving ``transit`` later."""
    return [Sent((n + 1) * samples / 48000 + transit, (seq0 + n) % 2**16, (ts0 + n * samples) % 2**32, samples, fec,
                 red and n > 0) for n in range(count)]  # fmt: skip


def play(buffer: JitterBuffer, packets: Iterable[Sent], *, until: float, quiet: bool = False) -> list[Unit]:
    """Runs the playout clock over ``packets`` (delivered by arrival time) as the media layer
    does: on every tick, units until 20 ms are queued; returns the units played."""
    pending = sorted(packets, key=lambda p: p.arrival)
    played: list[Unit] = []
    queued = 0
    now = 0.0
    while now < until:
        while pending and pending[0].arrival <= now:
            p = pending.pop(0)
            buffer.put(p.seq, p.ts, p.payload, p.samples, p.arrival, fec=p.fec, red=p.red)
            if p.red:
                before = (p.seq - 1) % 2**16
                buffer.put_copy(before, (p.ts - p.samples) % 2**32, before.to_bytes(4, "big"), p.samples)
        while queued < FRAME:
            unit = buffer.pop(now, queued, quiet=quiet)
            if unit is None:
                break
            played.append(unit)
            if unit.audible:
                queued += unit.samples - unit.skip
        queued = max(0, queued - FRAME)
        now += TICK
    return played


def packets_played(units: list[Unit]) -> list[int]:
    return [int.from_bytes(u.payload, "big") for u in units if u.action is Action.PLAY]


def test_nothing_plays_before_the_first_packet_and_its_delay() -> None:
    buffer = JitterBuffer()
    assert buffer.pop(0.0) is None
    buffer.put(7, 1000, b"p", FRAME, arrival=1.0)
    assert buffer.pop(1.0) is None  # the target delay (at least 20 ms) has not passed
    unit = buffer.pop(1.0 + buffer.target)
    assert unit == Unit(Action.PLAY, FRAME, b"p")


def test_reordered_packets_play_in_sequence() -> None:
    sent = stream(50, transit=0.03)
    rng = random.Random(3)
    # Each packet is delayed by up to 25 ms more: neighbours overtake each other.
    shuffled = [Sent(p.arrival + rng.uniform(0, 0.025), p.seq, p.ts) for p in sent]
    buffer = JitterBuffer()
    units = play(buffer, shuffled, until=2.0)
    assert packets_played(units) == list(range(50))
    assert buffer.stats.lost == buffer.stats.late == 0
    assert buffer.stats.received == 50


def test_a_lost_packet_is_rebuilt_from_the_next_ones_fec() -> None:
    sent = [p for p in stream(30, fec=True) if p.seq != 10]
    buffer = JitterBuffer()
    units = play(buffer, sent, until=1.0)
    recover = [u for u in units if u.action is Action.RECOVER]
    assert recover == [Unit(Action.RECOVER, FRAME, (11).to_bytes(4, "big"))]
    assert packets_played(units) == [n for n in range(30) if n != 10]
    assert (buffer.stats.lost, buffer.stats.recovered, buffer.stats.concealed) == (1, 1, 0)


def test_a_lost_packet_plays_from_the_next_ones_red_copy() -> None:
    """RFC 2198: the copy of packet 10 that came with packet 11 plays in its place, as the
    packet itself would have; copies of packets that came are dropped, not counted."""
    sent = [p for p in stream(30, samples=3 * FRAME, red=True) if p.seq != 10]
    buffer = JitterBuffer()
    units = play(buffer, sent, until=2.5)
    assert packets_played(units) == list(range(30))
    assert not [u for u in units if u.action is Action.RECOVER]
    assert (buffer.stats.lost, buffer.stats.redundant, buffer.stats.concealed, buffer.stats.duplicates) == (0, 1, 0, 0)
    # The next packet must be here when one is due: one packet and a playout frame more delay.
    assert buffer.target >= (3 * FRAME + FRAME) / 48000


def test_two_lost_in_a_row_with_red() -> None:
    """One redundant block covers the packet just before: of two lost in a row the first is
    concealed, the second plays from the copy."""
    sent = [p for p in stream(30, samples=3 * FRAME, red=True) if p.seq not in (10, 11)]
    buffer = JitterBuffer()
    units = play(buffer, sent, until=2.5)
    assert packets_played(units) == [n for n in range(30) if n != 10]
    assert (buffer.stats.lost, buffer.stats.concealed, buffer.stats.redundant) == (1, 1, 1)


def test_a_packet_after_its_copy_takes_its_place() -> None:
    buffer = JitterBuffer()
    buffer.put(11, 2 * 2880, b"eleven", 2880, arrival=0.1, red=True)
    buffer.put_copy(10, 2880, b"copy of ten", 2880)
    buffer.put(10, 2880, b"ten", 2880, arrival=0.11)
    assert buffer.pop(1.0) == Unit(Action.PLAY, 2880, b"ten")
    assert (buffer.stats.duplicates, buffer.stats.redundant) == (0, 0)


def test_longer_packets_are_not_jitter() -> None:
    """The sender goes from protected 60 ms RED packets back to lean 120 ms ones mid-sentence:
    each new packet comes 60 ms later after its first sample (it cannot leave before its last
    is spoken), which is no jitter. The delay the RED stream had covers it: nothing is held,
    concealed or late."""
    red = stream(40, samples=3 * FRAME, red=True)
    start = 40 * 3 * FRAME
    lean = [Sent((start + (n + 1) * 6 * FRAME) / 48000 + 0.005, 40 + n, start + n * 6 * FRAME, 6 * FRAME)
            for n in range(20)]  # fmt: skip
    buffer = JitterBuffer()
    units = play(buffer, red + lean, until=6.0)
    assert packets_played(units) == list(range(60))
    # From the third packet on (the delay grew when the second brought the first copy).
    plays = [i for i, u in enumerate(units) if u.action is Action.PLAY]
    assert [u for u in units[plays[2] : plays[-1]] if u.action is not Action.PLAY] == []
    assert buffer.stats.lost == buffer.stats.late == 0


def test_a_loss_without_fec_is_concealed() -> None:
    sent = [p for p in stream(30) if p.seq not in (10, 11, 12)]
    buffer = JitterBuffer()
    units = play(buffer, sent, until=1.0)
    stopped = next(i for i, u in enumerate(units) if u.payload == (9).to_bytes(4, "big")) + 1
    resumed = next(i for i, u in enumerate(units) if u.action is Action.PLAY and u.payload == (13).to_bytes(4, "big"))
    assert sum(u.samples for u in units[stopped:resumed]) == 3 * FRAME
    assert {u.action for u in units[stopped:resumed]} <= {Action.CONCEAL, Action.RECOVER}
    assert (buffer.stats.lost, buffer.stats.recovered, buffer.stats.concealed) == (3, 0, 3)
    assert packets_played(units) == [n for n in range(30) if n not in (10, 11, 12)]


def test_a_dtx_gap_is_silence_not_loss() -> None:
    """RFC 7587 §3.1.3: the sender stopped for 400 ms of silence; the sequence numbers go on."""
    talk = stream(10)
    gap = 20 * FRAME
    after = [Sent(p.arrival + gap / 48000, p.seq + 10, p.ts + 10 * FRAME + gap) for p in stream(10)]
    buffer = JitterBuffer()
    units = play(buffer, talk + after, until=1.5)
    assert packets_played(units) == list(range(20))
    stopped = next(i for i, u in enumerate(units) if u.payload == (9).to_bytes(4, "big")) + 1
    between = units[stopped : next(i for i, u in enumerate(units) if u.payload == (10).to_bytes(4, "big"))]
    assert between and all(u.action in (Action.SILENCE, Action.CONCEAL) for u in between)
    # Once the next packet is here the rest of the gap is known to be DTX: silence.
    assert between[-1].action is Action.SILENCE
    assert sum(u.samples for u in between) == gap
    assert buffer.stats.lost == buffer.stats.concealed == 0


def lost_then_paused(pause: int, buffer: JitterBuffer) -> list[Unit]:
    """Packet 10 is lost and the sender paused for ``pause`` samples after it; what fills the
    time between packet 9 and packet 11."""
    talk = [p for p in stream(11, fec=True) if p.seq != 10]
    after = [Sent(p.arrival + (11 * FRAME + pause) / 48000, p.seq + 11, p.ts + 11 * FRAME + pause)
             for p in stream(10)]  # fmt: skip
    units = play(buffer, talk + after, until=1.5, quiet=False)
    stopped = next(i for i, u in enumerate(units) if u.payload == (9).to_bytes(4, "big")) + 1
    resumed = next(i for i, u in enumerate(units) if u.action is Action.PLAY and u.payload == (11).to_bytes(4, "big"))
    between = units[stopped:resumed]
    assert sum(u.samples for u in between) == FRAME + pause
    assert buffer.stats.lost == buffer.stats.concealed == 1
    return between


def test_a_pause_after_a_loss_is_silence() -> None:
    # Packet 11 is already here when packet 10 is due: 20 ms concealed, the pause is silence.
    between = lost_then_paused(3 * FRAME, JitterBuffer(min_delay=0.1))
    assert [(u.action, u.samples) for u in between] == [(Action.CONCEAL, FRAME)] + [(Action.SILENCE, FRAME)] * 3
    # A long pause: while nothing comes the last sound is concealed for at most 60 ms, then silence.
    between = lost_then_paused(20 * FRAME, JitterBuffer())
    assert FRAME <= sum(u.samples for u in between if u.action is not Action.SILENCE) <= 4 * FRAME


def test_a_late_packet_is_dropped_and_counted() -> None:
    sent = stream(30)
    late = sent[10]
    sent[10] = Sent(late.arrival + 0.3, late.seq, late.ts)  # long after its turn
    buffer = JitterBuffer()
    units = play(buffer, sent, until=1.5)
    assert 10 not in packets_played(units)
    assert buffer.stats.late == 1 and buffer.stats.lost == 1


def test_the_delay_follows_the_jitter_within_bounds() -> None:
    steady = JitterBuffer()
    play(steady, stream(200), until=4.5)
    assert steady.target == steady.min_delay
    rng = random.Random(5)
    jittery_packets = [Sent(p.arrival + rng.uniform(0, 0.06), p.seq, p.ts) for p in stream(200)]
    jittery = JitterBuffer()
    play(jittery, jittery_packets, until=4.5)
    assert 0.04 < jittery.target < 0.08
    # Delay is added by holding the timeline until the buffer's delay reaches its target.
    assert jittery.stats.delay >= jittery.target - 0.01
    assert jittery.stats.late <= 10  # what came before the estimate had grown
    wild = JitterBuffer(max_delay=0.2)
    play(wild, [Sent(p.arrival + rng.uniform(0, 1.0), p.seq, p.ts) for p in stream(100)], until=4.0)
    assert wild.target == 0.2


def test_the_delay_shrinks_in_silence_after_a_spike() -> None:
    before = stream(50)
    # A 150 ms stall: 8 packets arrive at once, then the stream is steady again.
    spike = [Sent(max(p.arrival, before[40].arrival + 0.15), p.seq, p.ts) for p in before]
    after = [Sent(p.arrival + 1.0, p.seq + 50, p.ts + 50 * FRAME) for p in stream(400)]
    buffer = JitterBuffer()
    play(buffer, spike + after, until=10.0, quiet=True)
    # The spike has left the window: the delay is back near its 20 ms target by skipping silence.
    assert buffer.target == buffer.min_delay
    assert buffer.stats.delay < 0.05
    assert buffer.stats.mean_delay > buffer.stats.delay


def test_sequence_numbers_and_timestamps_wrap() -> None:
    sent = stream(40, seq0=65530, ts0=2**32 - 5 * FRAME)
    buffer = JitterBuffer()
    units = play(buffer, sent, until=1.5)
    assert packets_played(units) == [(65530 + n) % 2**16 for n in range(40)]
    assert buffer.stats.lost == 0 and not [u for u in units[:40] if u.action is not Action.PLAY]


def test_the_frame_size_changes_mid_stream() -> None:
    """A profile switch: 20 ms frames, then 60 ms frames on the same timeline (RFC 6716 §3.1)."""
    short = stream(20)
    long = [Sent(p.arrival + 20 * FRAME / 48000, p.seq + 20, p.ts + 20 * FRAME, 3 * FRAME) for p in stream(10, samples=3 * FRAME)]
    buffer = JitterBuffer()
    units = play(buffer, short + long, until=2.0)
    assert packets_played(units) == list(range(30))
    # The first 60 ms packet comes 60 ms after its timestamp, later than a 20 ms one would:
    # the wait is bridged, the packet still plays, nothing counts as lost.
    assert buffer.stats.lost == buffer.stats.late == 0


def test_a_duplicate_is_dropped() -> None:
    sent = stream(10)
    buffer = JitterBuffer()
    units = play(buffer, [*sent, sent[4]], until=0.6)
    assert packets_played(units) == list(range(10))
    assert buffer.stats.duplicates == 1 and buffer.stats.received == 11


def test_a_talk_spurt_later_than_expected_still_plays() -> None:
    """After a pause the next packets come 60 ms slower than the stream did: the buffer has
    already played silence for their time (it guessed a pause) when they arrive. They are not
    late: the timeline goes back to the first of them and all play, the silence becoming added
    delay. A packet late in the middle of speech is still dropped (test above)."""
    talk = stream(10)
    pause = 30 * FRAME
    spurt = [Sent(p.arrival + (10 * FRAME + pause) / 48000 + 0.06, p.seq + 10, p.ts + 10 * FRAME + pause)
             for p in stream(5)]  # fmt: skip
    buffer = JitterBuffer()
    units = play(buffer, talk + spurt, until=1.5, quiet=True)
    assert packets_played(units) == list(range(15))
    assert buffer.stats.late == buffer.stats.lost == 0
    assert all(u.skip == 0 for u in units if u.action is Action.PLAY)
    # The delay grew by what was replayed (about 60 ms on top of the 20 ms target).
    assert buffer.stats.delay > 0.06
