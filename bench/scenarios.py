"""The scenarios: log clients in, drive them, measure the server from /proc and report figures.

Every scenario is a frozen dataclass of its parameters with ``run(session)``, which returns flat
figures (numbers, or text for failures), and ``args()``, the same parameters as options of
``python -m bench.loadgen``. The server's CPU time and memory are read at the boundaries of the
measured phase, so set-up (starting the server, logging the clients in) is never in a per-unit
cost unless the unit is the login itself. Nothing is timed against a threshold here: the figures
are reported as measured, with the counts (sent, delivered, lost, failed) that show whether a
run was sound.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import math
import multiprocessing
import os
import resource
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection as Pipe
from typing import ClassVar

import uvloop

from . import procfs
from .client import IQ, MESSAGE, Connection, Element, XmppError, insecure_tls_context, login, xml_escape
from .servers import Target

Figure = float | int | str | None
Figures = dict[str, Figure]
# A sender, the text of its messages before and after the id, and its window of messages in flight.
Pair = tuple[Connection, tuple[str, str], asyncio.Semaphore]

LOGIN_TIMEOUT = 30.0
# Connections per source address: below the 28,232 ephemeral ports Linux has by default for one
# source and destination, so that 30,000 connections to one server port can be made on loopback
# (from 127.0.0.1, 127.0.0.2, ...).
PER_SOURCE = 20_000


@dataclass
class Session:
    """What every scenario needs: the server, the users' password and names, one TLS context, and
    a tag in every message id so that messages of another run (left in an offline store) are not
    counted."""

    target: Target
    password: str
    prefix: str = "bench"
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    tls: ssl.SSLContext = field(default_factory=insecure_tls_context)
    per_source: int = PER_SOURCE

    def source(self, user: int) -> str | None:
        """The source address of ``user``'s connection: 127.0.0.1 for the first ``per_source``
        users, then 127.0.0.2 and so on (a loopback server only); None for the kernel's choice."""
        if user < self.per_source or self.target.host != "127.0.0.1":
            return None
        return f"127.0.0.{1 + min(user // self.per_source, 253)}"

    def jid(self, user: int) -> str:
        return f"{self.prefix}{user}@{self.target.domain}"

    async def login(self, user: int, *, presence: bool = False) -> Connection:
        t = self.target
        return await login(
            t.host,
            t.port,
            t.domain,
            f"{self.prefix}{user}",
            self.password,
            resource=f"{self.tag}-{user}",
            tls=self.tls,
            presence=presence,
            timeout=LOGIN_TIMEOUT,
            local_addr=self.source(user),
        )


@dataclass(frozen=True)
class Mark:
    """The state at a phase boundary: time, the server's CPU and RSS, the generator's CPU."""

    at: float
    server_cpu: float | None
    server_rss_kib: int | None
    own_cpu: float

    @classmethod
    def now(cls, target: Target) -> Mark:
        pid = target.pid
        return cls(
            time.monotonic(),
            procfs.cpu_seconds(pid) if pid is not None else None,
            procfs.rss_kib(pid) if pid is not None else None,
            procfs.own_cpu_seconds(),
        )


def server_cpu_ms_per(first: Mark, last: Mark, count: int, scale: int = 1) -> float | None:
    """The server's CPU milliseconds between two marks, per ``scale`` units of work."""
    if first.server_cpu is None or last.server_cpu is None or count == 0:
        return None
    return _round((last.server_cpu - first.server_cpu) * 1000 * scale / count)


def cores(first: Mark, last: Mark) -> Figures:
    """The CPU each side used between two marks, in cores: near 1.0 a side is the bottleneck."""
    wall = last.at - first.at
    if wall <= 0:
        return {"server_cpu_cores": None, "generator_cpu_cores": None}
    server = None if first.server_cpu is None or last.server_cpu is None else last.server_cpu - first.server_cpu
    return {
        "server_cpu_cores": _round(server / wall) if server is not None else None,
        "generator_cpu_cores": _round((last.own_cpu - first.own_cpu) / wall),
    }


def _round(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if abs(value) < 10**digits else float(round(value))


def percentile(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of sorted ``samples``."""
    if not samples:
        return None
    return samples[min(len(samples) - 1, max(0, math.ceil(q * len(samples)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else _round(seconds * 1000)


def _failures(failures: Counter[str], example: str) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in failures.most_common()) + (f" (e.g. {example})" if example else "")


@dataclass
class Logins:
    """How a batch of logins went."""

    connections: dict[int, Connection] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    example: str = ""
    mechanisms: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    ended: float = 0.0

    def figures(self) -> Figures:
        self.latencies.sort()
        wall = self.ended - self.started
        ok = len(self.latencies)
        return {
            "logins": ok,
            "login_failures": _failures(self.failures, self.example) if self.failures else None,
            "mechanism": ", ".join(sorted(self.mechanisms)),
            "logins_per_s": _round(ok / wall) if wall > 0 else None,
            "login_p50_ms": _ms(percentile(self.latencies, 0.5)),
            "login_p99_ms": _ms(percentile(self.latencies, 0.99)),
        }


async def log_in(
    session: Session, users: Iterable[int], concurrency: int, *, keep: bool, presence: bool = False
) -> Logins:
    """Log ``users`` in, ``concurrency`` at a time.

    With ``keep`` the sessions stay open; otherwise each is closed right after its login, in the
    background so that the slot is free for the next login at once. All closes finish before this
    returns, so the server's cost of a whole session is within the caller's marks.
    """
    result = Logins(started=time.monotonic())
    closing: set[asyncio.Task[None]] = set()
    queue = iter(users)

    async def lane() -> None:
        for user in queue:  # the lanes share one iterator: each user is taken once
            began = time.monotonic()
            try:
                conn = await session.login(user, presence=presence)
            except XmppError as exc:
                result.failures[exc.kind] += 1
                result.example = result.example or str(exc)
                continue
            result.ended = time.monotonic()
            result.latencies.append(result.ended - began)
            result.mechanisms[conn.mechanism] += 1
            if keep:
                result.connections[user] = conn
            else:
                task = asyncio.create_task(conn.close())
                closing.add(task)
                task.add_done_callback(closing.discard)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    if closing:
        await asyncio.wait(closing)
    return result


async def close_all(conns: Iterable[Connection]) -> None:
    """Close many streams at once, each politely and bounded in time."""
    await asyncio.gather(*(conn.close() for conn in conns))


def _ignore(_el: Element) -> None:
    """Idle clients read and drop whatever the server sends them."""


@dataclass(frozen=True)
class Scenario(abc.ABC):
    """A scenario's parameters; subclasses are frozen dataclasses with defaults for each."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def users(self) -> int:
        """How many accounts (PREFIX0 ... PREFIX{users-1}) the scenario logs in."""

    @abc.abstractmethod
    async def run(self, session: Session) -> Figures: ...

    @abc.abstractmethod
    def args(self) -> list[str]:
        """The scenario as arguments of ``python -m bench.loadgen``."""


@dataclass(frozen=True)
class LoginStorm(Scenario):
    """``count`` logins (TCP, STARTTLS, SCRAM, bind, close), ``concurrency`` at a time."""

    name: ClassVar[str] = "login"
    count: int = 1000
    concurrency: int = 20

    @property
    def users(self) -> int:
        return self.count

    async def run(self, session: Session) -> Figures:
        before = Mark.now(session.target)
        logins = await log_in(session, range(self.count), self.concurrency, keep=False)
        after = Mark.now(session.target)
        return {
            **logins.figures(),
            "server_cpu_ms_per_login": server_cpu_ms_per(before, after, len(logins.latencies)),
            **cores(before, after),
        }

    def args(self) -> list[str]:
        return [self.name, "-n", str(self.count), "-c", str(self.concurrency)]


def connections_per_process() -> int:
    """How many connections one generator process holds: its open-file limit, less a margin."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200


@dataclass(frozen=True)
class IdleConnections(Scenario):
    """``count`` authenticated sessions held open: the server's memory per connection.

    When ``count`` does not fit in one process's open files (see :func:`connections_per_process`),
    the connections are made by several generator processes, each logging in its share of the
    users, ``concurrency`` at a time over all of them. ``per_process`` overrides that share.
    """

    name: ClassVar[str] = "idle"
    count: int = 2000
    concurrency: int = 20
    settle: float = 2.0  # seconds between the last login and reading the RSS
    per_process: int | None = None

    @property
    def users(self) -> int:
        return self.count

    async def run(self, session: Session) -> Figures:
        share = self.per_process or connections_per_process()
        processes = math.ceil(self.count / share)
        before = Mark.now(session.target)
        if processes == 1:
            logins = await log_in(session, range(self.count), self.concurrency, keep=True)
            conns = logins.connections.values()
            for conn in conns:
                conn.start_handling(_ignore)
            await asyncio.sleep(self.settle)
            after = Mark.now(session.target)
            still_open = sum(conn.is_open for conn in conns)
            sources = {conn.transport.get_extra_info("sockname")[0] for conn in conns if conn.transport is not None}
            await close_all(conns)
        else:
            logins, after, still_open, sources = await self._in_processes(session, processes, share)
        grown = None
        held = len(logins.latencies)
        if before.server_rss_kib is not None and after.server_rss_kib is not None and held:
            grown = _round((after.server_rss_kib - before.server_rss_kib) / held)
        return {
            **logins.figures(),
            "generator_processes": processes,
            "still_open": still_open,
            "source_addresses": len(sources),
            "server_rss_before_kib": before.server_rss_kib,
            "server_rss_after_kib": after.server_rss_kib,
            "server_rss_kib_per_connection": grown,
        }

    async def _in_processes(
        self, session: Session, processes: int, share: int
    ) -> tuple[Logins, Mark, int, set[str]]:
        """Log the users in from ``processes`` generator processes (fresh interpreters); read the
        server once all hold their sessions; then have them close."""
        context = multiprocessing.get_context("spawn")
        lanes = max(1, self.concurrency // processes)
        pipes: list[Pipe] = []
        workers = []
        for i in range(processes):
            ours, theirs = context.Pipe()
            users = range(i * share, min(self.count, (i + 1) * share))
            worker = context.Process(
                target=_idle_worker,
                args=(session.target, session.password, session.prefix, session.tag, session.per_source, users, lanes, theirs),
            )
            worker.start()
            theirs.close()
            pipes.append(ours)
            workers.append(worker)
        try:
            parts: list[Logins] = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
            await asyncio.sleep(self.settle)
            after = Mark.now(session.target)
            for pipe in pipes:
                pipe.send("report")
            reports: list[tuple[int, set[str]]] = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
            for pipe in pipes:
                pipe.send("close")
            for pipe in pipes:
                await asyncio.to_thread(pipe.recv)
        finally:
            for worker in workers:
                await asyncio.to_thread(worker.join, 60)
                if worker.is_alive():
                    worker.kill()
        merged = Logins(started=min(p.started for p in parts), ended=max(p.ended for p in parts))
        for part in parts:
            merged.latencies += part.latencies
            merged.failures += part.failures
            merged.mechanisms += part.mechanisms
            merged.example = merged.example or part.example
        return merged, after, sum(n for n, _ in reports), set().union(*(s for _, s in reports))

    def args(self) -> list[str]:
        per_process = ["--per-process", str(self.per_process)] if self.per_process else []
        return [self.name, "-n", str(self.count), "-c", str(self.concurrency), "--settle", f"{self.settle:g}", *per_process]


def _idle_worker(
    target: Target, password: str, prefix: str, tag: str, per_source: int, users: range, lanes: int, pipe: Pipe
) -> None:
    """A generator process of :class:`IdleConnections`: log ``users`` in, send the parent how it
    went, hold the sessions until asked for a report and then to close."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(_hold_idle(Session(target, password, prefix, tag=tag, per_source=per_source), users, lanes, pipe))


async def _hold_idle(session: Session, users: range, lanes: int, pipe: Pipe) -> None:
    logins = await log_in(session, users, lanes, keep=True)
    conns = list(logins.connections.values())
    for conn in conns:
        conn.start_handling(_ignore)
    pipe.send(replace(logins, connections={}))
    await asyncio.to_thread(pipe.recv)
    sources = {conn.transport.get_extra_info("sockname")[0] for conn in conns if conn.transport is not None}
    pipe.send((sum(conn.is_open for conn in conns), sources))
    await asyncio.to_thread(pipe.recv)
    await close_all(conns)
    pipe.send("closed")


OMEMO_FALLBACK = (
    "I sent you an OMEMO encrypted message but your client doesn't seem to support that. "
    "Find more information on https://conversations.im/omemo"
)


def _b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def omemo_message(to: str, payload_size: int) -> tuple[str, str]:
    """A chat message shaped like those OMEMO apps send (XEP-0384 0.3, as Conversations does), as
    the text before and after its id: only the id changes from one message to the next.

    The header carries the sender's device id, one key per recipient device (two: the contact's
    and the sender's other device; 98 bytes each, a Signal message carrying a 16-byte key and its
    16-byte tag) and the 12-byte IV; the payload is ``payload_size`` bytes of ciphertext; then the
    fallback body for apps without OMEMO and the XEP-0334 store hint. Every server gets the same
    bytes, and schnack's end-to-end policy lets them through.
    """
    sid, rid, own = (secrets.randbelow(2**31) for _ in range(3))
    return (
        f"<message to='{xml_escape(to)}' type='chat' id='",
        "'><encrypted xmlns='eu.siacs.conversations.axolotl'>"
        f"<header sid='{sid}'><key rid='{rid}'>{_b64(98)}</key><key rid='{own}'>{_b64(98)}</key>"
        f"<iv>{_b64(12)}</iv></header><payload>{_b64(payload_size)}</payload></encrypted>"
        f"<body>{OMEMO_FALLBACK}</body><store xmlns='urn:xmpp:hints'/></message>",
    )


def error_condition(el: Element) -> str:
    error = next((c for c in el.children if c.local == "error"), None)
    if error is None:
        return "undefined"
    return next((c.local for c in error.children if c.local != "text"), "undefined")


class Traffic:
    """Counts and latencies of the messages of one run. ``done`` is set once ``expected``
    messages have arrived or bounced. The id of each message is ``TAG:SEQ:STAMP``, its sending
    time in nanoseconds of the monotonic clock."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.expected = 0
        self.sent = 0
        self.received = 0
        self.bounced = 0
        self.stale = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.first_sent = 0.0
        self.last_received = 0.0
        self.done = asyncio.Event()

    def progress(self) -> int:
        return self.sent + self.received + self.bounced

    def send(self, conn: Connection, template: tuple[str, str], seq: int, stamp_ns: int) -> None:
        conn.send(f"{template[0]}{self.tag}:{seq}:{stamp_ns}{template[1]}")
        self.sent += 1

    def receiver(self, window: asyncio.Semaphore) -> Callable[[Element], None]:
        """The handler of a receiving client: ``window`` gets a slot back per message."""
        tag = self.tag

        def on_stanza(el: Element) -> None:
            if el.tag != MESSAGE:
                return
            parts = el.attrs.get("id", "").split(":")
            if len(parts) != 3 or parts[0] != tag:
                self.stale += 1
                return
            now = time.monotonic_ns()
            self.latencies.append((now - int(parts[2])) / 1e9)
            self.received += 1
            self.last_received = now / 1e9
            window.release()
            self._check_done()

        return on_stanza

    def sender(self, window: asyncio.Semaphore) -> Callable[[Element], None]:
        """The handler of a sending client: a bounced message never arrives, so it is counted and
        its window slot freed here."""

        def on_stanza(el: Element) -> None:
            if el.tag == MESSAGE and el.attrs.get("type") == "error":
                self.errors[error_condition(el)] += 1
                self.bounced += 1
                window.release()
                self._check_done()

        return on_stanza

    def _check_done(self) -> None:
        if self.received + self.bounced >= self.expected:
            self.done.set()

    async def settle(self, stall: float, sending: Coroutine[None, None, None] | None = None) -> None:
        """Run ``sending`` (if any) until every message arrived or bounced, or nothing moved for
        ``stall`` seconds (then whatever is missing is lost)."""
        task = asyncio.create_task(sending) if sending is not None else None
        seen = -1
        while not self.done.is_set() and self.progress() != seen:
            seen = self.progress()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), stall)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def figures(self) -> Figures:
        self.latencies.sort()
        span = self.last_received - self.first_sent if self.received else 0.0
        return {
            "sent": self.sent,
            "delivered": self.received,
            "errors": ", ".join(f"{n} {c}" for c, n in self.errors.most_common()) or None,
            "lost": self.expected - self.received - self.bounced,
            "stale": self.stale,
            "msgs_per_s": _round(self.received / span) if span > 0 else None,
            "latency_p50_ms": _ms(percentile(self.latencies, 0.5)),
            "latency_p99_ms": _ms(percentile(self.latencies, 0.99)),
        }


@dataclass(frozen=True)
class Chat(Scenario):
    """``pairs`` senders each send ``messages`` to their receiver's full JID, while ``idle`` more
    clients stay online doing nothing.

    At saturation (``rate`` 0) each sender keeps ``window`` messages in flight: the receiver frees
    a slot per message that arrives, so flow control stays in the generator and the server routes
    only measured messages; latency is then mostly the time in that queue. With ``rate`` the
    messages go out open loop at that many per second over all pairs, each stamped with its
    scheduled time: a send that falls behind shows in the latency instead of lowering the load.

    Full JIDs, because a message to a bare JID needs the receiver's presence and a roster, and this
    measures routing alone.
    """

    name: ClassVar[str] = "chat"
    pairs: int = 50
    messages: int = 200
    window: int = 10
    rate: float = 0.0
    idle: int = 0
    concurrency: int = 20
    payload_size: int = 64
    stall: float = 10.0

    @property
    def users(self) -> int:
        return 2 * self.pairs + self.idle

    async def run(self, session: Session) -> Figures:
        logins = await log_in(session, range(self.users), self.concurrency, keep=True)
        conns = logins.connections
        traffic = Traffic(session.tag)
        pairs: list[Pair] = []
        for p in range(self.pairs):
            sender, receiver = conns.get(2 * p), conns.get(2 * p + 1)
            if sender is None or receiver is None:
                continue  # counted in the login failures
            window = asyncio.Semaphore(self.window)
            sender.start_handling(traffic.sender(window))
            receiver.start_handling(traffic.receiver(window))
            pairs.append((sender, omemo_message(receiver.jid, self.payload_size), window))
        idle = [conns[user] for user in range(2 * self.pairs, self.users) if user in conns]
        for conn in idle:
            conn.start_handling(_ignore)
        traffic.expected = len(pairs) * self.messages
        if not pairs:
            traffic.done.set()

        before = Mark.now(session.target)
        traffic.first_sent = time.monotonic()
        sending = self._offer(pairs, traffic) if self.rate else self._saturate(pairs, traffic)
        await traffic.settle(self.stall, sending)
        after = Mark.now(session.target)
        await close_all(conns.values())
        return {
            "pairs": len(pairs),
            "idle_online": len(idle),
            "login_failures": logins.figures()["login_failures"],
            **traffic.figures(),
            "server_cpu_ms_per_1000_msgs": server_cpu_ms_per(before, after, traffic.received, 1000),
            **cores(before, after),
        }

    async def _saturate(self, pairs: list[Pair], traffic: Traffic) -> None:
        async def one(sender: Connection, template: tuple[str, str], window: asyncio.Semaphore) -> None:
            for seq in range(self.messages):
                await window.acquire()
                traffic.send(sender, template, seq, time.monotonic_ns())

        await asyncio.gather(*(one(*pair) for pair in pairs))

    async def _offer(self, pairs: list[Pair], traffic: Traffic) -> None:
        total = len(pairs) * self.messages
        interval_ns = 1e9 / self.rate
        start = time.monotonic_ns()
        k = 0
        while k < total:
            due = min(total, int((time.monotonic_ns() - start) / interval_ns) + 1)
            while k < due:
                sender, template, _ = pairs[k % len(pairs)]
                traffic.send(sender, template, k // len(pairs), start + int(k * interval_ns))
                k += 1
            # Event-loop timers have about 1 ms resolution: shorter sleeps return at once and would
            # spin. Waking at most every millisecond and sending whatever is due keeps the rate.
            await asyncio.sleep(max(0.001, (start + k * interval_ns - time.monotonic_ns()) / 1e9))

    def args(self) -> list[str]:
        args = [self.name, "-p", str(self.pairs), "-m", str(self.messages)]
        args += ["-r", f"{self.rate:g}"] if self.rate else ["-w", str(self.window)]
        return [*args, "-k", str(self.idle), "-c", str(self.concurrency)]


@dataclass(frozen=True)
class OfflineBurst(Scenario):
    """``messages`` to the bare JID of a user who is offline; then that user logs in with initial
    presence and receives them all (XEP-0160): how fast the server stores, and how long the
    login and the drain take."""

    name: ClassVar[str] = "offline"
    messages: int = 1000
    payload_size: int = 64
    timeout: float = 120.0  # for storing all messages
    stall: float = 10.0

    @property
    def users(self) -> int:
        return 2

    async def run(self, session: Session) -> Figures:
        sender = await session.login(0)
        template = omemo_message(session.jid(1), self.payload_size)
        traffic = Traffic(session.tag)
        stored = asyncio.Event()
        window = asyncio.Semaphore(0)
        on_bounce = traffic.sender(window)

        def on_stanza(el: Element) -> None:
            if el.tag == IQ and el.attrs.get("id") == "flush":
                stored.set()
            else:
                on_bounce(el)

        sender.start_handling(on_stanza)
        before = Mark.now(session.target)
        for seq in range(self.messages):
            traffic.send(sender, template, seq, time.monotonic_ns())
        # A server handles one stream's stanzas in order: the answer to this ping means every
        # message before it has been dealt with, that is stored.
        domain = xml_escape(session.target.domain)
        sender.send(f"<iq type='get' id='flush' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await sender.wait_while_open(stored, self.timeout)
        stored_mark = Mark.now(session.target)

        began = time.monotonic()
        recipient = await session.login(1, presence=True)
        bound = time.monotonic()
        traffic.expected = traffic.sent
        traffic.first_sent = bound
        recipient.start_handling(traffic.receiver(window))
        await traffic.settle(self.stall)
        drained = Mark.now(session.target)
        await close_all([sender, recipient])
        delivery = traffic.figures()
        drain_s = traffic.last_received - bound if traffic.received else None
        return {
            "sent": traffic.sent,
            "errors": delivery["errors"],
            "store_msgs_per_s": _round(traffic.sent / (stored_mark.at - before.at)),
            "server_cpu_ms_per_1000_stored": server_cpu_ms_per(before, stored_mark, traffic.sent, 1000),
            "recipient_login_ms": _ms(bound - began),
            "delivered": traffic.received,
            "lost": delivery["lost"],
            "stale": traffic.stale,
            "drain_s": _round(drain_s) if drain_s is not None else None,
            "drain_msgs_per_s": delivery["msgs_per_s"],
            "server_cpu_ms_per_1000_delivered": server_cpu_ms_per(stored_mark, drained, traffic.received, 1000),
        }

    def args(self) -> list[str]:
        return [self.name, "-x", str(self.messages)]
