"""Failed-login throttling per account and per address (RFC 6120 §13.8: brute-force protection)."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import TypeVar

_WINDOW = 60.0

K = TypeVar("K", bound=Hashable)


def address_group(address: str) -> str:
    """The group a client's address is counted in against per-address limits: an IPv6 address's
    /64, which one subscriber usually holds whole (RFC 6177), so that its 2^64 addresses are not
    as many allowances; an IPv4 address (also one mapped into IPv6) alone; anything else as is."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginThrottle:
    """Counts failed logins in a sliding minute; past the limit, further attempts are refused.

    ``clock`` gives seconds on a monotonic scale (``time.monotonic`` unless a test steers time).
    """

    def __init__(self, per_account: int, per_ip: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_account = per_account
        self.per_ip = per_ip
        self._clock = clock
        self._accounts: dict[tuple[str, str], deque[float]] = {}
        self._ips: dict[str, deque[float]] = {}
        self._swept = clock()

    def __len__(self) -> int:
        """How many accounts and addresses have failures on record."""
        return len(self._accounts) + len(self._ips)

    @staticmethod
    def _recent(log: deque[float] | None, now: float) -> int:
        if log is None:
            return 0
        while log and now - log[0] > _WINDOW:
            log.popleft()
        return len(log)

    @staticmethod
    def _drop_stale(table: dict[K, deque[float]], now: float) -> None:
        for key in [key for key, log in table.items() if not log or now - log[-1] > _WINDOW]:
            del table[key]

    def blocked_account(self, host: str, username: str) -> bool:
        """Whether logins to this account are paused."""
        key = (host, username)
        count = self._recent(self._accounts.get(key), self._clock())
        if count == 0:
            self._accounts.pop(key, None)
        return count >= self.per_account

    def blocked_ip(self, ip: str) -> bool:
        """Whether logins from this address (its group: :func:`address_group`) are paused."""
        ip = address_group(ip)
        count = self._recent(self._ips.get(ip), self._clock())
        if count == 0:
            self._ips.pop(ip, None)
        return count >= self.per_ip

    def failure(self, host: str, username: str | None, ip: str) -> None:
        """Record a failed login."""
        now = self._clock()
        if now - self._swept > _WINDOW:
            # Names and addresses tried once are never looked up again: forget them once a window
            # has passed, or guessing random usernames would grow these tables without end.
            self._drop_stale(self._accounts, now)
            self._drop_stale(self._ips, now)
            self._swept = now
        if username is not None:
            self._accounts.setdefault((host, username), deque()).append(now)
        self._ips.setdefault(address_group(ip), deque()).append(now)

    def success(self, host: str, username: str) -> None:
        """A successful login clears the account's count (not the address's)."""
        self._accounts.pop((host, username), None)
