"""The load generator against the real servers at toy sizes: the counts must add up (no timing).

Every scenario runs against schnack (``schnack serve`` in its own process), against Prosody and
against ejabberd, which need Debian's ``prosody`` and ``ejabberd`` packages: skipped without them,
failed without them when CI=true.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from bench import loadgen, suite
from bench.client import XmppError
from bench.scenarios import Chat, Figures, IdleConnections, LoginStorm, OfflineBurst, Scenario, Session
from bench.servers import EjabberdDriver, ExternalDriver, ProsodyDriver, SchnackDriver, Target, private_driver

from ..conftest import require_service


@pytest.fixture(params=["schnack", "prosody", "ejabberd"])
def server(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "prosody":
        require_service(ProsodyDriver.available(), "prosody is not installed (apt-get install prosody)")
    if name == "ejabberd":
        require_service(EjabberdDriver.available(), "ejabberd or erlang-p1-sqlite3 is not installed (bash .ci/system-packages)")
    return name


def run(server: str, scenario: Scenario) -> Figures:
    target, figures = loadgen.execute(private_driver(server), scenario)
    assert target.name.startswith(f"{server} ")
    return figures


def test_login_storm(server: str) -> None:
    figures = run(server, LoginStorm(count=6, concurrency=3))
    assert (figures["logins"], figures["login_failures"]) == (6, None)
    assert figures["mechanism"] == "SCRAM-SHA-256"
    assert figures["server_cpu_ms_per_login"] is not None
    assert figures["login_p99_ms"] is not None


def test_idle_connections_stay_open_and_cost_memory(server: str) -> None:
    figures = run(server, IdleConnections(count=8, concurrency=4, settle=0.2))
    assert (figures["logins"], figures["still_open"]) == (8, 8)
    assert isinstance(figures["server_rss_after_kib"], int) and figures["server_rss_after_kib"] > 0
    assert figures["server_rss_kib_per_connection"] is not None


def test_chat_at_saturation_delivers_every_omemo_message(server: str) -> None:
    figures = run(server, Chat(pairs=3, messages=20, window=4, idle=2, concurrency=4))
    assert (figures["pairs"], figures["idle_online"], figures["login_failures"]) == (3, 2, None)
    assert figures["sent"] == figures["delivered"] == 60
    assert (figures["lost"], figures["errors"], figures["stale"]) == (0, None, 0)
    assert figures["latency_p99_ms"] is not None
    assert figures["server_cpu_ms_per_1000_msgs"] is not None


def test_chat_at_a_fixed_rate(server: str) -> None:
    figures = run(server, Chat(pairs=2, messages=5, rate=200))
    assert figures["sent"] == figures["delivered"] == 10
    assert figures["lost"] == 0


def test_offline_burst_is_delivered_at_login(server: str) -> None:
    figures = run(server, OfflineBurst(messages=15))
    assert (figures["sent"], figures["delivered"], figures["lost"], figures["errors"]) == (15, 15, 0, None)
    assert figures["drain_s"] is not None
    assert figures["server_cpu_ms_per_1000_stored"] is not None


@pytest.fixture
def schnack_target() -> Iterator[Target]:
    """A schnack started by its driver alone, for the generator's external mode."""
    driver = SchnackDriver()
    try:
        yield driver.start([f"ext{i}" for i in range(3)], "right")
    finally:
        driver.stop()


def test_external_server_and_a_wrong_password(schnack_target: Target, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = ["--server", "external", "--port", str(schnack_target.port), "--domain", schnack_target.domain]
    argv += ["--pid", str(schnack_target.pid), "--prefix", "ext", "--password", "right"]
    assert loadgen.main([*argv, "--json", str(out), "login", "-n", "3"]) == 0
    written = json.loads(out.read_text())
    assert written["command"].endswith("login -n 3")
    assert written["figures"]["logins"] == 3
    assert {"date", "machine", "server"} <= written.keys()

    _, figures = loadgen.execute(ExternalDriver(schnack_target), LoginStorm(count=2), password="wrong", prefix="ext")
    assert figures["logins"] == 0
    assert str(figures["login_failures"]).startswith("2 auth (e.g. auth: not-authorized")


def test_suite_table_has_medians_ratios_to_the_best_other_and_unclean_runs(tmp_path: Path) -> None:
    def runs(**figures: float | str | None) -> list[list[Figures]]:
        return [
            [{**figures, "still_open": getattr(scenario, "count", None)} for _ in range(3)]
            for scenario in suite.SUITE
        ]

    schnack = runs(logins_per_s=300.0, server_rss_kib_per_connection=60.0)
    prosody = runs(logins_per_s=200.0, server_rss_kib_per_connection=40.0)
    ejabberd = runs(logins_per_s=250.0, server_rss_kib_per_connection=50.0)
    schnack[0][1]["logins_per_s"] = 100.0
    schnack[6][2]["lost"] = 7
    ejabberd[3][0]["still_open"] = 9990
    section = suite.render(
        {"schnack": schnack, "prosody": prosody, "ejabberd": ejabberd},
        {"schnack": "schnack 0.1.0", "prosody": "prosody 0.12.3", "ejabberd": "ejabberd 23.01"},
        command="python -m bench.suite",
        started="2026-01-01 00:00 UTC",
        load=("0.1", "0.2"),
        repeat=3,
    )
    assert "| schnack 0.1.0 | prosody 0.12.3 | ejabberd 23.01 | schnack/best of the others |" in section
    # Higher is better: against ejabberd's 250; lower is better: against Prosody's 40.
    assert "| Login storm | logins/s | higher | 300 (100-300) | 200 (200-200) | 250 (250-250) | 1.20 |" in section
    assert "| server RSS KiB per idle connection | lower | 60 (60-60) | 40 (40-40) | 50 (50-50) | 1.50 |" in section
    assert "- schnack 0.1.0, offline burst of 10,000, run 3: lost 7" in section
    assert "- ejabberd 23.01, 19,500 idle connections, run 1: only 9990 of 19500 connections still open" in section
    assert section.count("\n- ") == 2 + 3  # the two unclean runs, and machine, servers and load

    two = suite.render(
        {"schnack": schnack, "prosody": prosody},
        {"schnack": "schnack 0.1.0", "prosody": "prosody 0.12.3"},
        command="python -m bench.suite",
        started="2026-01-01 00:00 UTC",
        load=("0.1", "0.2"),
        repeat=3,
    )
    assert "| Login storm | logins/s | higher | 300 (100-300) | 200 (200-200) | 1.50 |" in two
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n{suite.BEGIN}\nold\n{suite.END}\n\nAfter.\n")
    suite.write_section(doc, section)
    assert doc.read_text() == f"# Benchmarks\n\n{section}\n\nAfter.\n"


def test_idle_connections_from_several_source_addresses() -> None:
    """Past ``per_source`` connections the generator moves on to 127.0.0.2, 127.0.0.3, ...: how
    30,000 connections reach one loopback port (here 3 per address, against schnack)."""
    scenario = IdleConnections(count=8, concurrency=4, settle=0.2)
    with SchnackDriver() as driver:
        target = driver.start([f"bench{i}" for i in range(scenario.users)], loadgen.PASSWORD)
        figures = uvloop.run(scenario.run(Session(target, loadgen.PASSWORD, per_source=3)))
    assert (figures["logins"], figures["still_open"], figures["source_addresses"]) == (8, 8, 3)


def test_idle_connections_from_several_generator_processes() -> None:
    """What lets a run go past one process's open files: here 3 processes of at most 4."""
    figures = run("schnack", IdleConnections(count=10, concurrency=6, settle=0.2, per_process=4))
    assert (figures["logins"], figures["still_open"], figures["generator_processes"]) == (10, 10, 3)
    assert figures["login_failures"] is None
    assert figures["server_rss_kib_per_connection"] is not None


def test_suite_table_of_some_scenarios() -> None:
    runs: list[list[Figures]] = [[] for _ in suite.SUITE]
    runs[4] = [{"msgs_per_s": 3000.0, "server_cpu_ms_per_1000_msgs": 150.0}]
    other: list[list[Figures]] = [[] for _ in suite.SUITE]
    other[4] = [{"msgs_per_s": 1500.0, "server_cpu_ms_per_1000_msgs": 600.0}]
    section = suite.render(
        {"schnack": runs, "ejabberd": other},
        {"schnack": "schnack 0.1.0", "ejabberd": "ejabberd 23.01"},
        command="python -m bench.suite --scenarios 5",
        started="2026-01-01 00:00 UTC",
        load=("0.1", "0.2"),
        repeat=1,
        scenarios=[4],
    )
    assert "| 1:1 chat at saturation | messages/s at saturation | higher | 3,000 | 1,500 | 2.00 |" in section
    assert "| server CPU ms per 1,000 messages | lower | 150 | 600 | 0.25 |" in section
    assert "Login storm" not in section and "idle" not in section
    assert section.count("bench.loadgen --server SERVER") == 1


def test_offline_burst_fails_with_the_stream_error_that_ended_its_sender() -> None:
    """A sender whose stream the server ended must fail the run with the reason, not wait out
    the time allowed for storing."""
    with pytest.raises(XmppError) as info:
        run("schnack", OfflineBurst(messages=3, payload_size=400_000, timeout=600))
    assert (info.value.kind, str(info.value)) == ("stream-error", "stream-error: policy-violation")
