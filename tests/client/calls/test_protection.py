"""Switching the data saver's protection (RED or FEC) on and off from the loss the peer reports
(RFC 3550 §6.4.1)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from schnack.client.calls.media import DATA_SAVER, NORMAL, EncoderSettings
from schnack.client.calls.protection import LossWatch, fraction, protected


def test_clean_network_stays_lean() -> None:
    watch = LossWatch()
    assert not any(watch.report(loss) for loss in [0.0, 0.01, 0.0, 0.004, 0.0])


def test_five_percent_protects_from_the_first_report() -> None:
    watch = LossWatch()
    assert watch.report(0.05)
    assert watch.smoothed == pytest.approx(0.025)


def test_a_single_lost_packet_does_not_protect() -> None:
    # One packet lost of about 40 between two reports: 2.5 %, smoothed to half of it.
    watch = LossWatch()
    assert not watch.report(0.025)
    assert not watch.report(0.0)


def test_hysteresis() -> None:
    watch = LossWatch()
    assert watch.report(0.05)
    # Loss below the threshold that switched it on keeps the protection ...
    assert watch.report(0.01)
    assert watch.report(0.01)
    # ... until the smoothed loss has fallen below the lower threshold.
    states = [watch.report(0.0) for _ in range(4)]
    assert states[0] and not states[-1]
    assert not watch.report(0.015)
    assert not watch.report(0.015)  # 1.5 % smoothed stays below 2 %: no switching back on


def test_a_call_starts_protected_until_two_clean_reports() -> None:
    watch = LossWatch(start_protected=True)
    assert watch.protecting
    assert watch.report(0.0)  # the first report covers about a second: not enough to relax
    assert not watch.report(0.0)
    # Loss in the first report keeps the protection; loss in the second too.
    for first, second in ((0.05, 0.0), (0.0, 0.05)):
        watch = LossWatch(start_protected=True)
        assert watch.report(first) and watch.report(second)


def test_out_of_range_reports_are_clamped() -> None:
    watch = LossWatch()
    watch.report(-0.5)
    assert watch.smoothed == 0.0
    watch.report(3.0)
    assert watch.smoothed == pytest.approx(0.5)


def test_rtcp_fraction_is_fixed_point() -> None:
    assert fraction(0) == 0.0
    assert fraction(128) == 0.5
    assert fraction(13) == pytest.approx(0.05, abs=0.001)


def test_protected_data_saver() -> None:
    lean = EncoderSettings.negotiate(DATA_SAVER, None)
    assert (lean.frame_ms, lean.fec) == (120, False)
    safe = protected(lean)
    assert (safe.bitrate, safe.frame_ms, safe.fec, safe.loss_percent) == (24000, 60, True, 10)
    # The band, DTX and its keepalive stay the data saver's.
    assert (safe.playback_rate, safe.dtx, safe.keepalive) == (lean.playback_rate, lean.dtx, lean.keepalive)
    # A peer that takes RED: 60 ms packets, each also carrying the one before, at the lean bitrate; no FEC.
    assert protected(lean, red=True) == replace(lean, frame_ms=60, red=True)


def test_protected_keeps_shorter_frames_and_higher_bitrates() -> None:
    normal = EncoderSettings.negotiate(NORMAL, None)
    safe = protected(normal)
    assert (safe.bitrate, safe.frame_ms, safe.fec) == (48000, 40, True)
