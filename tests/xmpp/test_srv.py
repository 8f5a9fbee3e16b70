"""RFC 2782 ordering of SRV records."""

from __future__ import annotations

import random
from collections import Counter

from schnack.xmpp.srv import SrvRecord, no_service, srv_names, srv_order


def record(priority: int, weight: int, target: str) -> SrvRecord:
    return SrvRecord(priority, weight, 5222, target, False)


def test_srv_order_is_by_priority_first() -> None:
    records = [record(20, 100, "c"), record(10, 0, "a"), record(30, 1, "d"), record(10, 0, "b")]
    for seed in range(20):
        ordered = [r.target for r in srv_order(records, random.Random(seed))]
        assert sorted(ordered[:2]) == ["a", "b"] and ordered[2:] == ["c", "d"]


def test_srv_order_within_a_priority_follows_the_weights() -> None:
    """RFC 2782: a record with weight 90 comes first about nine times as often as one with 10."""
    records = [record(0, 10, "light"), record(0, 90, "heavy")]
    firsts = Counter(srv_order(records, random.Random(seed))[0].target for seed in range(1000))
    assert firsts["heavy"] > 3 * firsts["light"] > 0


def test_only_the_root_target_means_no_service() -> None:
    """RFC 6120 §3.2.1: a single record with the target "." says the service is not offered."""
    assert no_service([record(0, 0, "")])
    assert not no_service([record(0, 0, ""), record(1, 0, "a")])
    assert not no_service([])


def test_srv_names_direct_tls_first() -> None:
    """XEP-0368 §3 names the direct TLS records beside RFC 6120's STARTTLS ones."""
    assert srv_names("example.org", "client") == [
        ("_xmpps-client._tcp.example.org", True), ("_xmpp-client._tcp.example.org", False)]
    assert srv_names("example.org", "server") == [
        ("_xmpps-server._tcp.example.org", True), ("_xmpp-server._tcp.example.org", False)]
    assert srv_names("example.org", "client", direct_tls=False) == [("_xmpp-client._tcp.example.org", False)]
    assert srv_names("example.org", "server", direct_tls=True) == [("_xmpps-server._tcp.example.org", True)]
