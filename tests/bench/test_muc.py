"""The group fan-out benchmark at toy size against ``schnack serve``: the counts must add up."""

from __future__ import annotations

from bench import muc


def test_every_member_gets_every_message() -> None:
    figures = muc.run(members=6, messages=4)
    assert (figures["members"], figures["inactive"], figures["messages"]) == (6, 3, 4)
    assert figures["deliveries"] == 24
    assert figures["deliveries_per_second"] > 0 and figures["server_cpu_seconds"] >= 0
    rendered = muc.render({"command": "python -m bench.muc", "figures": figures})
    assert "24 deliveries" in rendered
