"""The client state indication benchmark at toy size against ``schnack serve``: the counts must add up."""

from __future__ import annotations

from bench import csi


def test_inactive_phone_gets_one_presence_per_contact() -> None:
    # Contacts 0 and 2 change in minutes 0 and 2, contact 1 in minutes 1 and 3.
    figures = csi.run(contacts=3, every=2, minutes=4)
    plain, held = figures["without_csi"], figures["with_csi"]
    assert plain["presence_changes"] == held["presence_changes"] == 6
    assert plain["stanzas"] == 6
    assert held["stanzas"] == 3
    assert 0 < held["bytes"] < plain["bytes"]
    assert held["bytes_with_headers"] == held["bytes"] + csi.HEADERS * 3
