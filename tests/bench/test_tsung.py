"""tsung as the second load generator, against schnack at a toy size: real figures come back.

Needs Debian's ``tsung`` package: skipped without it, failed without it when CI=true.
"""

from __future__ import annotations

import pytest

from bench import tsung
from bench.servers import SchnackDriver

from ..conftest import require_service


@pytest.fixture(autouse=True)
def _tsung_installed() -> None:
    require_service(tsung.available(), "tsung is not installed (apt-get install tsung)")


def test_login_storm_logs_every_account_in_with_plain() -> None:
    target, figures = tsung.execute(SchnackDriver(), tsung.TsungLogin(users=8, concurrency=2))
    assert target.name.startswith("schnack ")
    assert (figures["logins"], figures["login_failures"], figures["errors"]) == (8, None, None)
    assert isinstance(figures["logins_per_s"], float) and figures["logins_per_s"] > 0
    assert figures["auth_p99_ms"] is not None
    assert figures["server_cpu_ms_per_login"] is not None


def test_chat_at_a_fixed_rate_delivers_every_message() -> None:
    chat = tsung.TsungChat(pairs=2, rate=20, duration=1, drain=1, login_allowance=3)
    _, figures = tsung.execute(SchnackDriver(), chat)
    assert figures["logins"] == 4
    assert figures["sent"] == figures["delivered"] == 20
    assert figures["errors"] is None
    assert figures["latency_p99_ms"] is not None
    assert figures["server_cpu_ms_per_1000_msgs"] is not None
