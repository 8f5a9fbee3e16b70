"""bench.ports: ports for the servers a benchmark or a test starts, out of the way of the source
ports of outgoing connections."""

from __future__ import annotations

import socket

import pytest

from bench import ports


def test_ports_lie_outside_the_ephemeral_range_and_are_free() -> None:
    low, high = ports.ephemeral_range()
    assert 1024 <= low <= high <= 65535
    for _ in range(20):
        port = ports.free_port()
        assert not low <= port <= high
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_for_udp_is_free_for_both() -> None:
    port = ports.free_port(udp=True)
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", port))
        udp.bind(("127.0.0.1", port))


def test_no_port_is_given_twice() -> None:
    given = [ports.free_port() for _ in range(300)]
    assert len(set(given)) == len(given)


def test_a_port_in_use_is_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setattr(ports, "_candidates", lambda: range(port, port + 1))
        with pytest.raises(RuntimeError, match=f"no free port on 127.0.0.1 in {port}-{port}"):
            ports.free_port()
