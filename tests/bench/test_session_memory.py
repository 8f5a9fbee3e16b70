"""bench.session_memory at a toy size: the server runs under tracemalloc, the sessions log in and
what each holds is counted and attributed to source lines."""

from __future__ import annotations

import re
import socket
import threading
import tracemalloc

import pytest

from bench import session_memory


def test_an_idle_session_is_measured_and_its_lines_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert session_memory.main(["-n", "20", "--warm", "5", "--top", "3"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"idle sessions \(after 5 first ones\): ([\d,]+) bytes and", out)
    assert match, out
    # A session holds a few KiB of Python objects (its stream, parser state, stages): never none,
    # and nowhere near a per-connection read buffer (256 KiB) such as uvloop's TLS layer keeps.
    assert 1_000 < int(match.group(1).replace(",", "")) < 100_000, out
    assert "bytes/session  blocks/session  line" in out
    # The counts by type are the server's objects, not tracemalloc's: a snapshot taken between
    # the two counts added a tuple per allocation traced, some 60 per session.
    tuples = re.search(r"^\s+([\d.]+)\s+tuple$", out, re.MULTILINE)
    assert tuples is None or float(tuples.group(1)) < 20, out


def test_a_server_that_cannot_start_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage's threads (not daemons) of a start cut short must not keep the process alive,
    and tracing must not go on slowing down whatever runs next."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        monkeypatch.setattr(session_memory, "free_port", lambda: held.getsockname()[1])
        with pytest.raises(OSError, match="address already in use"):
            session_memory.main(["-n", "2", "--warm", "1"])
    assert not tracemalloc.is_tracing()
    # pytest-timeout's own timer thread (timeout_method = thread) watches the test itself.
    assert [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()
            and not t.name.startswith("pytest_timeout")] == []
