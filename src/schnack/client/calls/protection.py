"""Protecting the data saver's audio while the peer reports loss.

The data saver sends 120 ms packets without FEC: lean on a clean network, but each lost packet
is 120 ms of concealed speech (PESQ-WB 3.68 without loss, 2.74 at 5 %). The peer's RTCP receiver
reports say how much of our stream it lost since its last report (fraction lost, RFC 3550
§6.4.1). While that loss, smoothed over reports, stays high, the sender protects its audio; when
the loss has gone it returns to the lean packets. A call starts protected, as if the loss so far
had been just enough to protect: two reports without loss (the first comes about a second into
the call, the second 5-6 s later) relax it, while loss in either keeps it on. Otherwise the first
seconds of a lossy call, until a report shows the loss, go unprotected.

Protected, the sender sends 60 ms packets, each also carrying the one before as an RFC 2198
redundant block (:mod:`.red`), when the peer's description offers ``red``: a lost packet comes
again with the next one, bit for bit. For a peer without it, libopus' in-band FEC (RFC 6716
§2.1.7; each packet carries the one before at a lower rate), which the receiver decodes in place
of a lost packet (RFC 7587 §3.1.2). Nothing is renegotiated: FEC is in the Opus bitstream and
every receiver must accept it (RFC 7587 §6.1, ``useinbandfec`` is a preference), RED was agreed
in the offer and answer, and 60 ms is within the default ``maxptime`` of 120 ms.

Measured without a network (``python -m bench.calls_offline``, docs/benchmarks.md, "Calls"),
PESQ-WB without loss / at 5 % / at 10 %: the lean packets 3.70 / 2.78 / 2.40 at 47.9 KB/min one
way; RED 3.70 / 3.61 / 3.33 at 92.6; FEC, which needs 16 kbit/s and more before libopus adds it
to 60 ms frames, at 24 kbit/s told to expect 10 % loss 3.73 / 3.44 / 3.09 at 95.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .media import EncoderSettings

# The smoothed loss at which the stream is protected, and below which it goes back to the lean
# packets: apart, so that loss around one threshold does not switch on every report.
PROTECT_AT = 0.02
RELAX_AT = 0.005
# The weight of each new report: reports come every 5-6 s (RFC 3550 §6.2), so 5 % loss
# protects from the first report showing it, and the protection ends three or four reports
# (about 20 s) after the loss stopped.
WEIGHT = 0.5
PROTECTED_BITRATE = 24000
PROTECTED_FRAME_MS = 60
PROTECTED_LOSS_PERCENT = 10


@dataclass
class LossWatch:
    """The peer's reported loss, smoothed (an exponential moving average of the fractions lost),
    and whether the stream is protected, with hysteresis between ``protect_at`` and ``relax_at``.
    ``start_protected``: protected before any report, the smoothed loss starting at
    ``protect_at`` (two reports without loss bring it to ``relax_at``)."""

    protect_at: float = PROTECT_AT
    relax_at: float = RELAX_AT
    weight: float = WEIGHT
    start_protected: bool = False
    smoothed: float = field(default=0.0, init=False)
    protecting: bool = field(default=False, init=False)
    reports: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.start_protected:
            self.smoothed, self.protecting = self.protect_at, True

    def report(self, fraction_lost: float) -> bool:
        """A receiver report's fraction lost (0-1); whether the stream is to be protected now."""
        self.reports += 1
        self.smoothed += self.weight * (min(1.0, max(0.0, fraction_lost)) - self.smoothed)
        if self.protecting:
            self.protecting = self.smoothed > self.relax_at
        else:
            self.protecting = self.smoothed >= self.protect_at
        return self.protecting


def fraction(rtcp_fraction_lost: int) -> float:
    """RFC 3550 §6.4.1: the fraction lost is a fixed-point number with the point at the left of
    its 8 bits (aiortc's statistics give the raw 0-255)."""
    return rtcp_fraction_lost / 256


def protected(settings: EncoderSettings, *, red: bool = False) -> EncoderSettings:
    """``settings`` protected: 60 ms packets of one frame each; with ``red`` (the peer takes
    RFC 2198 redundancy) each also carrying the one before, at the same bitrate; else with
    in-band FEC (the FEC of packet n+1 covers all of packet n) at the bitrate FEC needs, libopus
    told to expect 10 % loss."""
    frame_ms = min(settings.frame_ms, PROTECTED_FRAME_MS)
    if red:
        return replace(settings, frame_ms=frame_ms, red=True)
    return replace(
        settings,
        bitrate=max(settings.bitrate, PROTECTED_BITRATE),
        frame_ms=frame_ms,
        fec=True,
        loss_percent=PROTECTED_LOSS_PERCENT,
    )
