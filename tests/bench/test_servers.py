"""The private ejabberd of the benchmark: started with its accounts, measured, and stopped clean.

Needs Debian's ``ejabberd`` package: skipped without it, failed without it when CI=true.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import loadgen
from bench.procfs import alive, cpu_seconds, rss_kib
from bench.scenarios import LoginStorm
from bench.servers import DOMAIN, EjabberdDriver, ExternalDriver, Target

from ..conftest import require_service


@pytest.fixture
def ejabberd() -> Iterator[Target]:
    require_service(EjabberdDriver.available(), "ejabberd is not installed (apt-get install ejabberd)")
    driver = EjabberdDriver()
    try:
        yield driver.start([f"user{i}" for i in range(50)], "secret")
    finally:
        driver.stop()


def _epmd_ports() -> set[int]:
    """The ports of every EPMD on the machine, from their command lines (default 4369)."""
    ports = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"epmd"):
            ports.add(int(argv[argv.index(b"-port") + 1]) if b"-port" in argv else 4369)
    return ports


def test_ejabberd_starts_its_own_node_with_every_account(ejabberd: Target) -> None:
    target = ejabberd
    assert target.name.startswith("ejabberd 2")
    assert target.domain == DOMAIN
    assert target.pid is not None
    # The measured process is the Erlang VM itself, not a wrapper script.
    assert Path(f"/proc/{target.pid}/comm").read_text().strip() == "beam.smp"
    assert cpu_seconds(target.pid) > 0 and rss_kib(target.pid) > 0
    five = LoginStorm(count=5, concurrency=5)
    _, figures = loadgen.execute(ExternalDriver(target), five, password="secret", prefix="user")
    assert (figures["logins"], figures["login_failures"], figures["mechanism"]) == (5, None, "SCRAM-SHA-256")
    # The last account too: the copies of the first one's SCRAM record are complete.
    every = LoginStorm(count=50, concurrency=10)
    _, figures = loadgen.execute(ExternalDriver(target), every, password="secret", prefix="user")
    assert (figures["logins"], figures["login_failures"]) == (50, None)


def test_ejabberd_refuses_a_wrong_password(ejabberd: Target) -> None:
    _, figures = loadgen.execute(ExternalDriver(ejabberd), LoginStorm(count=2), password="wrong", prefix="user")
    assert figures["logins"] == 0
    assert str(figures["login_failures"]).startswith("2 auth (e.g. auth: not-authorized")


def test_ejabberd_stops_by_its_pid_and_leaves_nothing_behind() -> None:
    require_service(EjabberdDriver.available(), "ejabberd is not installed (apt-get install ejabberd)")
    epmds = _epmd_ports()
    driver = EjabberdDriver()
    target = driver.start(["solo"], "secret")
    directory = driver.dir
    assert target.pid is not None and alive(target.pid)
    assert (directory / "ejabberd.yml").exists()
    # The node needs no EPMD: none was started for it.
    assert _epmd_ports() <= epmds
    driver.stop()
    deadline = time.monotonic() + 30
    while alive(target.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(target.pid)
    assert not directory.exists()
