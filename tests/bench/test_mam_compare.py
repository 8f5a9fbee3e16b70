"""bench.mam_compare at a toy size: each server's archive, written in its own storage format,
answers every page query over XMPP with the messages it should (no timing).

Prosody and ejabberd come from Debian's packages (Prosody's SQL archive also needs
lua-dbi-sqlite3): skipped without them, failed without them when CI=true.
"""

from __future__ import annotations

import pytest

from bench import mam_compare

from ..conftest import require_service

MESSAGES = 1000


@pytest.mark.parametrize("server", ["schnack", "prosody", "ejabberd"])
def test_every_query_is_answered(server: str) -> None:
    if server == "prosody":
        require_service(
            mam_compare.ProsodyArchive.available(),
            "prosody or lua-dbi-sqlite3 is not installed (bash .ci/bench-packages)",
        )
    elif server == "ejabberd":
        require_service(
            mam_compare.EjabberdArchive.available(), "ejabberd or erlang-p1-sqlite3 is not installed (bash .ci/bench-packages)"
        )
    name, _, figures = mam_compare.run_server(server, MESSAGES, repeat=2)
    assert name.startswith(server)
    returned = {query: found for query, (_, _, found) in figures.items()}
    # 1,000 messages from 100 contacts: 10 with contact7; every other query fills a page of 50.
    assert returned == {"latest page": 50, "after middle": 50, "with": 10, "time range": 50}
    assert all(latency > 0 for latency, _, _ in figures.values())
