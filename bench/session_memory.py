"""What one idle authenticated session costs in Python objects: tracemalloc inside the server.

    python -m bench.session_memory [-n 2000] [--warm 50] [--frames 1] [--top 30] [--walk]

The server runs in this process with the configuration and accounts of ``bench.loadgen
--server schnack`` (uvloop, STARTTLS, SCRAM-SHA-256), under ``tracemalloc``. A client process
(this module with ``--clients``) logs ``--warm`` users in first, so that the server's one-off
allocations (caches, the first TLS handshake, module state made on first use) are behind the
first snapshot; then it logs ``-n`` more in and holds them idle. The second snapshot is taken
two seconds after the last login (idle connections have let go of their parsers by then). The
report gives the growth per session by source line (with ``--frames N`` > 1 also by the
innermost line of schnack's own code that led to it, which attributes what asyncio and uvloop
allocate), the number of live objects per session by type, from ``gc.get_objects()``, and with
``--walk`` the objects one connection holds that another does not, each with its size.

Only what goes through Python's allocator is counted: OpenSSL's connection state is not (see
``bench.tls_memory`` for that). The server runs TLS itself on memory BIOs (``server/link.py``),
so no per-connection read buffer of uvloop's is among the figures any more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import ssl
import sys
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CoroutineType, FunctionType, ModuleType
from typing import TYPE_CHECKING

import uvloop

from .client import Connection, Element
from .ports import free_port
from .scenarios import Session, close_all, log_in
from .servers import DOMAIN, SchnackDriver, Target

if TYPE_CHECKING:
    from schnack.server.app import Server

PASSWORD = "bench-password"
PREFIX = "bench"
# Idle connections release their parser after a second (net._RELEASE_PARSER_AFTER).
SETTLE = 2.0


def _drop(_el: Element) -> None:
    """Idle clients read and drop whatever the server sends them."""


async def hold_clients(port: int, first: int, count: int, concurrency: int) -> None:
    """Log users ``first`` .. ``first + count - 1`` in, say ``ready``, hold them until standard
    input closes or says anything, then close them."""
    session = Session(Target("schnack", "127.0.0.1", port, DOMAIN), PASSWORD, PREFIX)
    logins = await log_in(session, range(first, first + count), concurrency, keep=True)
    conns: list[Connection] = list(logins.connections.values())
    for conn in conns:
        conn.start_handling(_drop)
    print(f"ready {len(conns)} {dict(logins.failures)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await close_all(conns)


def _type_counts() -> Counter[str]:
    return Counter(type(obj).__qualname__ for obj in gc.get_objects())


class Measurement:
    """The server in this process, and the client processes that hold sessions on it."""

    def __init__(self, port: int, concurrency: int) -> None:
        self.port = port
        self.concurrency = concurrency
        self.clients: list[asyncio.subprocess.Process] = []

    async def hold(self, first: int, count: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.session_memory", "--clients", str(self.port),
            str(first), str(count), str(self.concurrency),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        self.clients.append(proc)
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode().strip()
        if not line.startswith(f"ready {count} "):
            raise SystemExit(f"the clients did not all log in: {line or 'no answer'}")

    async def release(self) -> None:
        for proc in self.clients:
            assert proc.stdin is not None
            proc.stdin.write(b"close\n")
            await proc.stdin.drain()
        for proc in self.clients:
            await proc.wait()


async def measure(args: argparse.Namespace, config_path: Path, port: int) -> str:
    from schnack.server.app import Server
    from schnack.server.config import load

    server = Server(load(config_path))
    run = Measurement(port, args.concurrency)
    try:
        # Inside: a start cut short leaves storage's threads running, and they keep the process alive.
        await server.start()
        await run.hold(0, args.warm)
        await asyncio.sleep(SETTLE)
        gc.collect()
        before = tracemalloc.take_snapshot()
        # Counted with the first snapshot in memory both times, and without the second: a
        # snapshot holds a tuple per allocation traced (about 60 more per session), not the server.
        types_before = _type_counts()
        await run.hold(args.warm, args.count)
        await asyncio.sleep(SETTLE)
        gc.collect()
        types_after = _type_counts()
        after = tracemalloc.take_snapshot()
        sessions = len(server.sessions)
        walk = _walk(server) if args.walk else ""
        await run.release()
    finally:
        await server.stop()
    if sessions != args.warm + args.count:
        raise SystemExit(f"{sessions} sessions on the server, expected {args.warm + args.count}")
    return report(args, before, after, types_before, types_after) + walk


def report(
    args: argparse.Namespace,
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    types_before: Counter[str],
    types_after: Counter[str],
) -> str:
    n = args.count
    exclude = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(exclude), after.filter_traces(exclude)
    lines_diff = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in lines_diff)
    blocks = sum(stat.count_diff for stat in lines_diff)
    out = [
        f"{n} idle sessions (after {args.warm} first ones): {total / n:,.0f} bytes and "
        f"{blocks / n:.1f} blocks per session in Python's allocator",
        "",
        "bytes/session  blocks/session  line",
    ]
    for stat in lines_diff[: args.top]:
        frame = stat.traceback[0]
        out.append(f"{stat.size_diff / n:13,.0f}  {stat.count_diff / n:14.2f}  {frame.filename}:{frame.lineno}")
    if args.frames > 1:
        out += ["", "bytes/session  blocks/session  innermost line of schnack, and the line allocating"]
        for (ours, where), (size, count) in _by_own_line(before, after)[: args.top]:
            out.append(f"{size / n:13,.0f}  {count / n:14.2f}  {ours}  ({where})")
    out += ["", "objects/session  type"]
    grown = Counter({name: types_after[name] - types_before[name] for name in types_after})
    for name, count in grown.most_common(args.top):
        if count / n < 0.05:
            break
        out.append(f"{count / n:15.2f}  {name}")
    return "\n".join(out)


def _by_own_line(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot
) -> list[tuple[tuple[str, str], tuple[int, int]]]:
    """The growth by the innermost frame in schnack's own code (the allocation happened there or
    in what it called: asyncio, uvloop, expat), largest first."""
    grown: dict[tuple[str, str], list[int]] = {}
    for stat in after.compare_to(before, "traceback"):
        frames = list(reversed(stat.traceback))  # innermost first
        ours = next((f for f in frames if "/schnack/" in f.filename), None)
        key = (f"{ours.filename.partition('/schnack/')[2]}:{ours.lineno}" if ours else "-",
               f"{Path(frames[0].filename).name}:{frames[0].lineno}")
        entry = grown.setdefault(key, [0, 0])
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
    return sorted(((key, (size, count)) for key, (size, count) in grown.items()), key=lambda kv: -abs(kv[1][0]))


def _reachable(root: object, stop: Callable[[object], bool]) -> dict[int, object]:
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or stop(obj):
            continue
        seen[id(obj)] = obj
        # Of a function only its closure: its code, globals and defaults are the module's.
        todo.extend((obj.__closure__ or ()) if isinstance(obj, FunctionType) else gc.get_referents(obj))
    return seen


def _walk(server: Server) -> str:
    """The objects reachable from one connection and not from another (so not shared), with
    their ``sys.getsizeof`` (for an instance without slots that leaves out its attribute values):
    where one session's bytes are, object by object."""
    from schnack.server.module import Module

    shared = (type, ModuleType, Module, asyncio.AbstractEventLoop, ssl.SSLContext)
    first, second = list(server.connections)[-2:]

    def stop(obj: object) -> bool:
        return obj is server or isinstance(obj, shared)

    mine = _reachable(first, stop)
    for key in _reachable(second, stop):
        mine.pop(key, None)
    rows = sorted(((sys.getsizeof(obj), type(obj).__qualname__, _describe(obj)) for obj in mine.values()), reverse=True)
    out = ["", f"one connection's own objects: {len(rows)}, {sum(r[0] for r in rows):,} bytes (sys.getsizeof)",
           "bytes  type  what"]
    out += [f"{size:5}  {name}  {what}" for size, name, what in rows]
    return "\n".join(out)


def _describe(obj: object) -> str:
    text = repr(obj) if isinstance(obj, (str, bytes, bytearray, int, float, tuple, list, dict, set)) else ""
    if isinstance(obj, CoroutineType | FunctionType):
        code = obj.cr_code if isinstance(obj, CoroutineType) else obj.__code__
        text = f"{code.co_qualname} {code.co_filename.rpartition('/')[2]}"
    return text[:110]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.session_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=2000, help="sessions measured")
    parser.add_argument("--warm", type=int, default=50, help="sessions logged in before the first snapshot")
    parser.add_argument("-c", "--concurrency", type=int, default=20, help="logins at a time")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per allocation")
    parser.add_argument("--walk", action="store_true", help="also list one connection's own objects")
    parser.add_argument("--top", type=int, default=30, help="lines, tracebacks and types shown")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--clients"]:
        port, first, count, concurrency = (int(arg) for arg in argv[1:5])
        uvloop.run(hold_clients(port, first, count, concurrency))
        return 0
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    driver = SchnackDriver()
    with tempfile.TemporaryDirectory(prefix="bench-session-memory-") as tmp:
        driver.dir = Path(tmp)
        driver.port = port = free_port()
        from schnack.server.tls import make_self_signed

        make_self_signed([DOMAIN], driver.dir / "cert.pem", driver.dir / "key.pem")
        driver.prepare([f"{PREFIX}{i}" for i in range(args.warm + args.count)], PASSWORD)
        tracemalloc.start(args.frames)
        try:
            print(uvloop.run(measure(args, driver.dir / "schnack.toml", port)))
        finally:
            # Tracing slows every allocation down, for whatever the process runs next.
            tracemalloc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
