"""XEP-0045 §14.6 (1.35, denial of service) leaves flood control to the service: presence floods per resource and room,
and join storms per room, are limited by token buckets; what exceeds them gets policy-violation.
Leaving is never limited."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import MucOptions

# Buckets that were full this long are forgotten, so that the tables do not grow without end.
_SWEEP_PERIOD = 60.0


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens a second up to ``burst``; each event takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._swept = clock()

    def allow(self, key: Hashable) -> bool:
        """Take a token for ``key``; False when there is none left."""
        now = self._clock()
        if now - self._swept > _SWEEP_PERIOD:
            self._sweep(now)
        tokens, since = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _sweep(self, now: float) -> None:
        full = [key for key, (tokens, since) in self._buckets.items()
                if tokens + (now - since) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        self._swept = now

    def __len__(self) -> int:
        return len(self._buckets)


class Limits:
    """The service's limits, from its options."""

    def __init__(self, options: MucOptions) -> None:
        self.presence = TokenBuckets(options.presence_per_second, options.presence_burst)
        self.joins = TokenBuckets(options.joins_per_second, options.joins_burst)
