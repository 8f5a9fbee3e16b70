"""What the client's calls keep in the account's store: when the device first logged in, which
decides whether a missed call its first archive catch-up finds is news."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from schnack.client.calls.calls import FIRST_LOGIN_SETTING, LONG_AGO, first_login
from schnack.client.store import Store


def test_a_new_store_keeps_its_first_login(tmp_path: Path) -> None:
    store = Store(tmp_path)
    before = datetime.now(UTC)
    first = first_login(store)
    assert before <= first <= datetime.now(UTC)
    store.close()
    again = Store(tmp_path)
    assert first_login(again) == first  # not the time of this run
    again.close()


def test_a_store_that_caught_up_before_counts_every_call_as_news(tmp_path: Path) -> None:
    """A store from before the first login was kept: its catch-ups told every missed call."""
    store = Store(tmp_path)
    store.save_archive_position("archived-1")
    assert first_login(store) == LONG_AGO
    assert store.setting(FIRST_LOGIN_SETTING) == LONG_AGO.isoformat()


def test_a_damaged_first_login_counts_every_call_as_news(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for damaged in ("yesterday", (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None).isoformat()):
        store.save_setting(FIRST_LOGIN_SETTING, damaged)
        assert first_login(store) == LONG_AGO
