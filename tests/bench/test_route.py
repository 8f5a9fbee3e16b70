"""bench.route at a toy size: every message is delivered, serialized with its payload (no timing)."""

from __future__ import annotations

import uvloop

from bench import route


def test_every_message_is_routed_and_delivered() -> None:
    figures = uvloop.run(route.measure(pairs=3, rounds=2, callgrind=False))
    assert figures["messages"] == figures["delivered"] == 6
    # The OMEMO-shaped message as sent (about 830 bytes) with 'from' and the archive's stanza-id.
    assert 850 < figures["bytes_per_delivery"] < 1000
    assert figures["cpu_ms_per_1000_msgs"] > 0


def test_every_message_to_an_offline_receiver_is_stored() -> None:
    figures = uvloop.run(route.measure(pairs=2, rounds=3, callgrind=False, offline=True))
    assert figures["messages"] == figures["delivered"] == 6
