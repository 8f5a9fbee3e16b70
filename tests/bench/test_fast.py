"""The FAST reconnect benchmark at toy size against ``schnack serve``: the figures must hold together."""

from __future__ import annotations

from bench import fast


def test_a_fast_resume_is_one_round_trip_and_smaller_than_a_fresh_login() -> None:
    figures = fast.run(rounds=1)
    fresh, first, again = figures["scram_bind"], figures["sasl2_password"], figures["fast_resume"]
    assert again["round_trips"] == 1
    assert fresh["round_trips"] == 5 and first["round_trips"] == 3
    assert 0 < again["sent"] < fresh["sent"] and 0 < again["received"] < fresh["received"]
    for kind in figures.values():
        assert kind["total"] == kind["sent"] + kind["received"]
    # The TLS handshake is shared; what comes after it is smaller for the reconnect.
    assert 0 < figures["handshake"]["total"] < again["total"]
    assert 0 < again["after_tls"] < fresh["after_tls"]
    assert again["after_tls"] == again["total"] - figures["handshake"]["total"]
    rendered = fast.render({"rounds": 1, "command": "python -m bench.fast", "figures": figures})
    assert "fast resume" in rendered and "1 round trips after TLS" in rendered
