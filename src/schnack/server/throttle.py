"""Failed-login throttling per account and per address (RFC 6120 §13.8: brute-force protection)."""

from __future__ import annotations

import time
from collections import deque

_WINDOW = 60.0


class LoginThrottle:
    """Counts failed logins in a sliding minute; past the limit, further attempts are refused."""

    def __init__(self, per_account: int, per_ip: int) -> None:
        self.per_account = per_account
        self.per_ip = per_ip
        self._accounts: dict[tuple[str, str], deque[float]] = {}
        self._ips: dict[str, deque[float]] = {}

    @staticmethod
    def _recent(log: deque[float] | None, now: float) -> int:
        if log is None:
            return 0
        while log and now - log[0] > _WINDOW:
            log.popleft()
        return len(log)

    def blocked_account(self, host: str, username: str) -> bool:
        """Whether logins to this account are paused."""
        key = (host, username)
        count = self._recent(self._accounts.get(key), time.monotonic())
        if count == 0:
            self._accounts.pop(key, None)
        return count >= self.per_account

    def blocked_ip(self, ip: str) -> bool:
        """Whether logins from this address are paused."""
        count = self._recent(self._ips.get(ip), time.monotonic())
        if count == 0:
            self._ips.pop(ip, None)
        return count >= self.per_ip

    def failure(self, host: str, username: str | None, ip: str) -> None:
        """Record a failed login."""
        now = time.monotonic()
        if username is not None:
            self._accounts.setdefault((host, username), deque()).append(now)
        self._ips.setdefault(ip, deque()).append(now)

    def success(self, host: str, username: str) -> None:
        """A successful login clears the account's count (not the address's)."""
        self._accounts.pop((host, username), None)
