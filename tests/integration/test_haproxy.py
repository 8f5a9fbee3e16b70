"""A real HAProxy in TCP mode in front of the client listeners, sending PROXY headers
(``send-proxy-v2``, proxy-protocol.txt §2.2) as docs/deploy.md sets it up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bench.ports import free_port
from schnack.server.app import Server

from ..conftest import require_service
from ..harness import add_user, make_config
from .process import listening
from .slix import PASSWORD, SlixClient

pytestmark = pytest.mark.asyncio

HAPROXY = shutil.which("haproxy")


def haproxy_config(fronts: dict[int, tuple[str, int]]) -> str:
    """TCP mode, one frontend per port in ``fronts`` passing to its listener with a PROXY header."""
    lines = ["defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 60s", "    timeout server 60s"]
    for i, (front, (host, port)) in enumerate(fronts.items()):
        lines += [f"frontend xmpp{i}", f"    bind 127.0.0.1:{front}", f"    default_backend schnack{i}",
                  f"backend schnack{i}", "    option tcp-check", f"    server node {host}:{port} send-proxy-v2 check inter 200ms"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def haproxy(config: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run HAProxy in the foreground with ``config`` until the block ends."""
    assert HAPROXY is not None
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.asynccontextmanager
async def behind_haproxy(tmp_path: Path) -> AsyncIterator[tuple[Server, dict[str, tuple[str, int]]]]:
    """A server trusting 127.0.0.1 as its proxy, with HAProxy in front of c2s and c2s_tls; the
    server and HAProxy's address for each listener."""
    require_service(HAPROXY is not None, "haproxy is not installed (apt-get install haproxy)")
    server = Server(make_config(tmp_path, listen={"proxy_from": ["127.0.0.1"]}))
    await server.start(listen=True)
    try:
        fronts = {name: free_port() for name in ("c2s", "c2s_tls")}
        config = haproxy_config({fronts[name]: server.bound[name][0] for name in fronts})
        with haproxy(config, tmp_path) as process:
            for port in fronts.values():
                await listening(process, port, tmp_path / "haproxy.log", "haproxy")
            yield server, {name: ("127.0.0.1", port) for name, port in fronts.items()}
    finally:
        await server.stop()


@pytest.mark.parametrize("listener", ["c2s", "c2s_tls"])
async def test_slixmpp_logs_in_through_haproxy_as_itself(tmp_path: Path, listener: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The session's peer is the client's own address and port, not HAProxy's connection; its
    health checks (each with a header of its own) are served without a complaint."""
    caplog.set_level(logging.DEBUG, logger="schnack.server.proxy_protocol")
    async with behind_haproxy(tmp_path) as (server, fronts):
        await add_user(server, "alice", PASSWORD)
        client = SlixClient(server, "alice@localhost/phone", listener=listener, address=fronts[listener])
        try:
            assert await client.start()
            await client.sync()
            transport = client.xmpp.transport
            assert transport is not None
            own = transport.get_extra_info("sockname")
            (session,) = list(server.sessions)
            assert session.peer == f"{own[0]}:{own[1]}"
            # HAProxy checks the node every 200 ms; a few checks have come and gone.
            async with asyncio.timeout(30):
                while server.connections_ended < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            await client.stop()
        assert not [r for r in caplog.records if r.name == "schnack.server.proxy_protocol"], caplog.text
