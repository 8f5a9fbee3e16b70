"""Loopback ports for the servers a benchmark or a test starts.

A port the kernel hands out for ``bind(port 0)`` comes from its ephemeral range, the same range
every outgoing connection takes its source port from. Closed again and bound by a server a moment
later, such a port can already be some connection's source port: the server then fails with
"address already in use". So the ports handed out here lie outside the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``), chosen at random and checked free, and never twice
in one process.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# The usual ephemeral range (Linux's default) where the kernel does not say.
_DEFAULT_EPHEMERAL = (32768, 60999)
# Below this lie the well-known services a machine runs (PostgreSQL, Redis, NATS, ...).
_LOWEST = 10000
_TRIES = 500

_given: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections, both ends included."""
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
        return low, high
    return _DEFAULT_EPHEMERAL


def _candidates() -> range:
    low, high = ephemeral_range()
    below, above = range(_LOWEST, low), range(high + 1, 65536)
    return below if len(below) >= len(above) else above


def _free(host: str, port: int, kinds: tuple[socket.SocketKind, ...]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        for kind in kinds:
            sock = stack.enter_context(socket.socket(family, kind))
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A TCP port on ``host`` (and a UDP one of the same number if ``udp``) that nothing holds
    now and no outgoing connection will take: the caller's server binds it a moment later."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    candidates = _candidates()
    for _ in range(_TRIES):
        port = random.choice(candidates)
        if port not in _given and _free(host, port, kinds):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port on {host} in {candidates.start}-{candidates.stop - 1}")
