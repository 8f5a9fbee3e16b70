"""Failed-login throttling per account and per address, on a clock the tests move (RFC 6120 §13.8)."""

from __future__ import annotations

import pytest

from schnack.server.throttle import LoginThrottle, address_group

HOST = "example.org"


class Clock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def throttle(clock: Clock, per_account: int = 3, per_ip: int = 5) -> LoginThrottle:
    return LoginThrottle(per_account, per_ip, clock=clock)


def test_account_is_paused_at_its_limit_and_not_before() -> None:
    clock = Clock()
    t = throttle(clock)
    for attempt in range(3):
        assert not t.blocked_account(HOST, "alice"), attempt
        t.failure(HOST, "alice", f"192.0.2.{attempt}")
    assert t.blocked_account(HOST, "alice")
    # The count is per account: others on the same host, and alice on another host, are unaffected.
    assert not t.blocked_account(HOST, "bob")
    assert not t.blocked_account("other.example", "alice")


def test_failures_of_one_account_from_many_addresses_add_up() -> None:
    clock = Clock()
    t = throttle(clock, per_account=3, per_ip=100)
    for i in range(3):
        t.failure(HOST, "alice", f"198.51.100.{i}")
    assert t.blocked_account(HOST, "alice")
    assert not any(t.blocked_ip(f"198.51.100.{i}") for i in range(3))


def test_address_is_paused_at_its_limit_across_accounts() -> None:
    clock = Clock()
    t = throttle(clock, per_account=100, per_ip=5)
    for i in range(4):
        t.failure(HOST, f"user{i}", "203.0.113.7")
    assert not t.blocked_ip("203.0.113.7")
    # A failure before the username is known (e.g. a malformed exchange) counts for the address only.
    t.failure(HOST, None, "203.0.113.7")
    assert t.blocked_ip("203.0.113.7")
    assert not t.blocked_ip("203.0.113.8")
    assert not any(t.blocked_account(HOST, f"user{i}") for i in range(4))


def test_account_recovers_once_the_failures_leave_the_window() -> None:
    clock = Clock()
    t = throttle(clock)
    for _ in range(3):
        t.failure(HOST, "alice", "192.0.2.1")
        clock.advance(10)
    assert t.blocked_account(HOST, "alice")
    # The first failure was 30 s ago; at exactly 60 s it still counts.
    clock.advance(30)
    assert t.blocked_account(HOST, "alice")
    clock.advance(0.5)
    assert not t.blocked_account(HOST, "alice")
    # The window slides: one more failure, and the two recent ones make three again.
    t.failure(HOST, "alice", "192.0.2.1")
    assert t.blocked_account(HOST, "alice")
    clock.advance(60.5)
    assert not t.blocked_account(HOST, "alice")


def test_address_recovers_after_the_window() -> None:
    clock = Clock()
    t = throttle(clock, per_ip=2)
    t.failure(HOST, "a", "192.0.2.9")
    t.failure(HOST, "b", "192.0.2.9")
    assert t.blocked_ip("192.0.2.9")
    clock.advance(61)
    assert not t.blocked_ip("192.0.2.9")


def test_success_clears_the_account_but_not_the_address() -> None:
    clock = Clock()
    t = throttle(clock, per_account=2, per_ip=2)
    t.failure(HOST, "alice", "192.0.2.1")
    t.failure(HOST, "alice", "192.0.2.1")
    assert t.blocked_account(HOST, "alice") and t.blocked_ip("192.0.2.1")
    t.success(HOST, "alice")
    assert not t.blocked_account(HOST, "alice")
    assert t.blocked_ip("192.0.2.1")


def test_forgotten_entries_do_not_pile_up() -> None:
    """Each guessed username leaves an entry; once its minute is over it must go, looked up or not."""
    clock = Clock()
    t = throttle(clock)
    for i in range(500):
        t.failure(HOST, f"guess{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(t) == 1000
    clock.advance(61)
    t.failure(HOST, "alice", "192.0.2.1")
    assert len(t) == 2
    assert not t.blocked_account(HOST, "guess0")


def test_entries_still_in_the_window_survive_the_sweep() -> None:
    clock = Clock()
    t = throttle(clock)
    t.failure(HOST, "old", "192.0.2.1")
    clock.advance(40)
    for _ in range(3):
        t.failure(HOST, "alice", "192.0.2.2")
    clock.advance(30)
    t.failure(HOST, "other", "192.0.2.3")
    # "old" (70 s) was dropped; alice's three failures (30 s) still pause her.
    assert len(t) == 4
    assert t.blocked_account(HOST, "alice")


def test_lookups_do_not_create_entries() -> None:
    clock = Clock()
    t = throttle(clock)
    for i in range(50):
        assert not t.blocked_account(HOST, f"user{i}")
        assert not t.blocked_ip(f"192.0.2.{i}")
    assert len(t) == 0


def test_the_addresses_of_one_ipv6_network_count_together() -> None:
    """A subscriber usually holds a whole /64 (RFC 6177): its 2^64 addresses are one allowance."""
    clock = Clock()
    t = throttle(clock, per_account=100, per_ip=5)
    for i in range(5):
        t.failure(HOST, f"user{i}", f"2001:db8:1:2::{i + 1}")
    assert t.blocked_ip("2001:db8:1:2:ffff::9")
    assert not t.blocked_ip("2001:db8:1:3::1")


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("[2001:db8::1]", "2001:db8::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unix", "unix"),
    ],
)
def test_address_group(address: str, group: str) -> None:
    assert address_group(address) == group
