"""tsung (Debian's package) as a second, independent load generator beside ``bench.loadgen``.

    python -m bench.tsung [--servers schnack,prosody,ejabberd] [--users N] [--concurrency C]
                          [--pairs P] [--rate R] [--duration S]

Each server is started by its driver in :mod:`bench.servers`, with the same accounts, certificate
and ports as the suite gives it, and stopped afterwards; tsung is then pointed at its STARTTLS
port with a configuration written for the run. Two scenarios:

- login storm (:class:`TsungLogin`): ``concurrency`` tsung sessions, each logging in one account
  after the other until ``users`` logins are done (TCP, STARTTLS, SASL PLAIN, resource binding,
  the RFC 3921 session, initial presence, close), as ``bench.loadgen login`` does with SCRAM;
- 1:1 chat at a fixed offered rate (:class:`TsungChat`): ``2 * pairs`` accounts online, each
  sending the OMEMO-shaped messages of ``bench.loadgen chat`` to its peer's full JID on a fixed
  schedule, ``rate`` messages per second over all of them, for ``duration`` seconds.

tsung runs as one local Erlang node (``use_controller_vm``: no ssh, no second node), with its
distribution on a free port and no EPMD started (as :class:`bench.servers.EjabberdDriver` does),
a random controller id, its web dashboard off, and its own home and log directory under a
temporary directory. Its ``fullstats`` backend writes every sample, from which the percentiles
are computed here; ``tsung.log`` gives the counters and the sessions' durations.

What tsung measures: a *transaction* is the time from its first request being sent to the
acknowledgement of its last (``ack="parse"``: an answer matching a regular expression arrived).
Chat messages are not acknowledged by XMPP; their latency is tsung's own ``xmpp_msg_latency``: the sender puts its clock in the message (``@@@node,timestamp@@@``, here
as the id), and the receiving session of the same tsung node takes the difference when the
message arrives. Sent messages are counted by tsung (``chat_sent``), delivered ones are the
latency samples.

SASL PLAIN: all three servers offer it after STARTTLS and check it against the same stored
SCRAM-SHA-256 keys the suite creates, so every server gets the same authentication. With PLAIN
the server itself derives the salted password (PBKDF2, 4,096 iterations) at every login, work
that SCRAM leaves to the client: a PLAIN login costs a server more than ``bench.loadgen``'s.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import procfs
from .loadgen import PASSWORD
from .ports import free_port
from .scenarios import Figures, omemo_message, percentile
from .servers import SERVERS, ServerDriver, Target, chosen_servers, private_driver

TSUNG = "/usr/bin/tsung"
DTD = "/usr/share/tsung/tsung-1.0.dtd"
START_ALLOWANCE = 5.0  # seconds for tsung's node to start before its first session
ANSWER_TIMEOUT_MS = 30_000  # a session waiting this long for an answer gives up (tsung's idle_timeout)
# What ends each awaited answer. Prosody and ejabberd prefix the features element, schnack
# declares its namespace instead: both forms are closing tags of the same element.
FEATURES = "</(stream:)?features>"


def available() -> bool:
    return Path(TSUNG).exists() and Path(DTD).exists()


def _erlang_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _await(parent: ET.Element, regexp: str) -> None:
    """Make the next request wait for an answer matching ``regexp`` (``ack="parse"``).

    tsung 1.7's jabber plugin reads that expression from its session process's dictionary;
    with Debian's build the ``regexp`` attribute never arrives there, and then any answer
    acknowledges, a stream header without its features too, so that the next request overtakes
    the server. A snippet run in the session's process stores the expression instead.
    """
    code = f'fun(_) -> put(regexp, {_erlang_string(regexp)}), "" end.'
    ET.SubElement(
        ET.SubElement(parent, "setdynvars", {"sourcetype": "eval", "code": code}), "var", {"name": "awaited"}
    )


def _request(
    parent: ET.Element, jabber_type: str, *, regexp: str = "", data: str = "", ack: str = ""
) -> ET.Element:
    if regexp:
        _await(parent, regexp)
    request = ET.SubElement(parent, "request", {"subst": "true"} if "%%" in data else {})
    attrs = {"type": jabber_type, "ack": ack or ("parse" if regexp else "no_ack")}
    if data:
        attrs["data"] = data
    ET.SubElement(request, "jabber", attrs)
    return request


def _eval(parent: ET.Element, name: str, code: str) -> None:
    ET.SubElement(
        ET.SubElement(parent, "setdynvars", {"sourcetype": "eval", "code": code}), "var", {"name": name}
    )


def _login(parent: ET.Element, port: int) -> None:
    """One login on a fresh connection, timed as three transactions (tsung does not nest
    them): ``tls`` (stream, STARTTLS, new stream), ``auth`` (SASL PLAIN with the ``plain``
    variable; tsung's own ``auth_sasl`` would keep one user per session) and ``bind`` (new
    stream, resource binding, session); then initial presence."""
    # A new plain TCP connection: a session that has done STARTTLS would reconnect with TLS.
    ET.SubElement(
        parent,
        "change_type",
        {
            "new_type": "ts_jabber",
            "host": "127.0.0.1",
            "port": str(port),
            "server_type": "tcp",
            "bidi": "true",
        },
    )
    tls = ET.SubElement(parent, "transaction", {"name": "tls"})
    _request(tls, "connect", regexp=FEATURES)
    _request(tls, "starttls", ack="bidi_ack")
    _request(tls, "connect", regexp=FEATURES)
    auth = ET.SubElement(parent, "transaction", {"name": "auth"})
    request = _request(
        auth,
        "raw",
        regexp="<success|<failure",
        data="<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%%_plain%%</auth>",
    )
    # A refused login ends its session: the logins it would have done are missing from the count.
    match = ET.Element("match", {"do": "abort", "when": "match", "name": "auth_failure"})
    match.text = "<failure"
    request.insert(0, match)
    bind = ET.SubElement(parent, "transaction", {"name": "bind"})
    _request(bind, "connect", regexp=FEATURES)
    _request(bind, "auth_sasl_bind", regexp="</jid>")
    _request(bind, "auth_sasl_session", regexp="<iq")
    _request(parent, "raw", data="<presence/>")


def _close(parent: ET.Element) -> None:
    _request(parent, "close", regexp="</stream:stream>")


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _user_row(parent: ET.Element, names: Sequence[str]) -> None:
    """The next line of the accounts file (each line is taken once, in order)."""
    row = ET.SubElement(
        parent, "setdynvars", {"sourcetype": "file", "fileid": "users", "delimiter": ";", "order": "iter"}
    )
    for name in names:
        ET.SubElement(row, "var", {"name": name})


@dataclass(frozen=True)
class TsungLogin:
    """``users`` logins by ``concurrency`` sessions, each taking the next account when its
    previous login has closed (a closed loop, as ``bench.loadgen login`` runs)."""

    users: int = 500
    concurrency: int = 20

    def __post_init__(self) -> None:
        if self.users % self.concurrency:
            raise ValueError(f"{self.users} logins do not divide among {self.concurrency} sessions")

    @property
    def sessions(self) -> int:
        return self.concurrency

    def rows(self, password: str) -> list[str]:
        return [_plain(f"bench{i}", password) for i in range(self.users)]

    def session(self, port: int) -> ET.Element:
        session = ET.Element(
            "session", {"name": "login", "probability": "100", "type": "ts_jabber", "bidi": "true"}
        )
        loop = ET.SubElement(
            session, "for", {"var": "i", "from": "1", "to": str(self.users // self.concurrency)}
        )
        _user_row(loop, ["plain"])
        _login(loop, port)
        _close(loop)
        return session


# The wait until a moment given in milliseconds of the system clock (``due`` is Erlang code
# over the session's variables D), as a thinktime in seconds; a moment already past counts
# under ``late`` in tsung's statistics.
WAIT = (
    "fun({{_, D}}) -> V = fun(K) -> binary_to_integer(proplists:get_value(K, D)) end, "
    "Due = {due}, Left = Due - os:system_time(millisecond), "
    "if Left < 0 -> ts_mon_cache:add({{count, {late}}}); true -> ok end, "
    'lists:flatten(io_lib:format("~.3f", [max(0, Left) / 1000])) end.'
)
# tsung's own stamp (ts_jabber's message_bidi): the node, and the time the message is sent;
# each one is also counted as sent.
STAMP = (
    "fun(_) -> {Mega, Secs, Micro} = erlang:timestamp(), ts_mon_cache:add({count, chat_sent}), "
    'lists:flatten(io_lib:format("~b,~b;~b;~b", [erlang:phash2(node()), Mega, Secs, Micro])) end.'
)


@dataclass(frozen=True)
class TsungChat:
    """``pairs`` pairs of users online; each user sends chat messages to its peer's full JID
    on a fixed schedule, ``rate`` messages per second over all users, for ``duration`` seconds.

    Every user logs in first; sending starts for all at one moment of the system clock (a
    fixed delay after tsung is started) and is spread evenly, each user's sends at fixed
    times (open loop: a late send does not shift the next). Sessions stay online ``drain``
    seconds after the last send, then close.
    """

    pairs: int = 50
    rate: float = 500.0
    duration: float = 20.0
    payload_size: int = 64  # OMEMO payload bytes, as bench.loadgen chat
    drain: float = 5.0
    login_allowance: float = 10.0  # seconds from tsung's start to the first send

    @property
    def users(self) -> int:
        return 2 * self.pairs

    @property
    def sessions(self) -> int:
        return self.users

    @property
    def per_user(self) -> int:
        return max(1, round(self.rate * self.duration / self.users))

    @property
    def interval_ms(self) -> float:
        return self.users * 1000 / self.rate

    def rows(self, password: str) -> list[str]:
        step = self.interval_ms / self.users
        return [f"{_plain(f'bench{i}', password)};bench{i ^ 1};{round(i * step)}" for i in range(self.users)]

    def start_ms(self, launched_ms: int) -> int:
        return launched_ms + round((START_ALLOWANCE + self.login_allowance) * 1000)

    def end_ms(self, start_ms: int) -> int:
        return start_ms + round((self.per_user * self.interval_ms) + self.drain * 1000)

    def session(self, port: int, start_ms: int, domain: str) -> ET.Element:
        session = ET.Element(
            "session", {"name": "chat", "probability": "100", "type": "ts_jabber", "bidi": "true"}
        )
        _user_row(session, ["plain", "peer", "offset"])
        _login(session, port)
        interval = f"{self.interval_ms:.3f}"
        _eval(session, "wait", WAIT.format(due=f"{start_ms} + V(offset)", late="late_start"))
        ET.SubElement(session, "thinktime", {"value": "%%_wait%%", "random": "false"})
        loop = ET.SubElement(session, "for", {"var": "i", "from": "1", "to": str(self.per_user)})
        _eval(loop, "stamp", STAMP)
        # The OMEMO-shaped message bench.loadgen sends (schnack's end-to-end policy refuses
        # plaintext chat), with tsung's stamp as its id.
        before, after = omemo_message(f"%%_peer%%@{domain}/tsung", self.payload_size)
        _request(loop, "raw", data=f"{before}@@@%%_stamp%%@@@{after}")
        due = f"{start_ms} + V(offset) + round(proplists:get_value(i, D) * {interval})"
        _eval(loop, "wait", WAIT.format(due=due, late="late_send"))
        ET.SubElement(loop, "thinktime", {"value": "%%_wait%%", "random": "false"})
        _eval(session, "wait", WAIT.format(due=str(self.end_ms(start_ms)), late="late_drain"))
        ET.SubElement(session, "thinktime", {"value": "%%_wait%%", "random": "false"})
        _close(session)
        return session


Scenario = TsungLogin | TsungChat


def write_config(
    path: Path, scenario: Scenario, target: Target, users_file: Path, session: ET.Element
) -> None:
    root = ET.Element("tsung", {"loglevel": "warning", "version": "1.0", "backend": "fullstats"})
    clients = ET.SubElement(root, "clients")
    ET.SubElement(
        clients,
        "client",
        {"host": "localhost", "use_controller_vm": "true", "maxusers": str(scenario.sessions + 10)},
    )
    ET.SubElement(
        ET.SubElement(root, "servers"),
        "server",
        {"host": target.host, "port": str(target.port), "type": "tcp"},
    )
    # tsung's arrivals are random (exponential intervals): at this rate all sessions have
    # started within a fraction of a second, and maxnumber ends the phase there.
    phase = ET.SubElement(
        ET.SubElement(root, "load"), "arrivalphase", {"phase": "1", "duration": "60", "unit": "second"}
    )
    rate = str(max(200, 20 * scenario.sessions))
    ET.SubElement(
        phase, "users", {"arrivalrate": rate, "maxnumber": str(scenario.sessions), "unit": "second"}
    )
    options = ET.SubElement(root, "options")
    # The jabber plugin takes a user id for every session from its own pool (unused here: the
    # accounts come from the file) and ends a session that finds none free.
    for name, value in (
        ("domain", target.domain),
        ("userid_max", str(max(scenario.users, scenario.sessions))),
    ):
        ET.SubElement(options, "option", {"type": "ts_jabber", "name": name, "value": value})
    ET.SubElement(options, "option", {"name": "file_server", "id": "users", "value": str(users_file)})
    ET.SubElement(options, "option", {"name": "idle_timeout", "value": str(ANSWER_TIMEOUT_MS)})
    ET.SubElement(root, "sessions").append(session)
    ET.indent(root)
    doctype = f'<?xml version="1.0"?>\n<!DOCTYPE tsung SYSTEM "{DTD}">\n'
    path.write_text(doctype + ET.tostring(root, encoding="unicode") + "\n")


@dataclass
class TsungLog:
    """What one run of tsung left: totals of its counters, the last dump's sample lines, and
    every sample of the ``fullstats`` backend."""

    counters: dict[str, int]
    samples: dict[str, list[float]]
    lines: dict[str, list[str]]

    @classmethod
    def read(cls, logdir: Path) -> TsungLog:
        counters: dict[str, int] = {}
        lines: dict[str, list[str]] = {}
        for line in (logdir / "tsung.log").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "stats:":
                lines[fields[1]] = fields[2:]
                if len(fields) == 4:  # a counter: this interval's value and the total
                    counters[fields[1]] = int(float(fields[3]))
        samples: dict[str, list[float]] = {}
        text = (logdir / "tsung-fullstats.log").read_text()
        for name, values in re.findall(r"\{sample,\s*(\w+),\s*\[([^\]]*)\]\}", text):
            samples.setdefault(name, []).extend(float(v) for v in values.split(","))
        for name, value in re.findall(r"\{sample,\s*(\w+),\s*([-0-9.e+]+)\}", text):
            samples.setdefault(name, []).append(float(value))
        return cls(counters, samples, lines)

    def count(self, name: str) -> int:
        return len(self.samples.get(name, []))

    def percentile_ms(self, name: str, q: float) -> float | None:
        value = percentile(sorted(self.samples.get(name, [])), q)
        return None if value is None else _round(value)

    def mean_ms(self, name: str) -> float | None:
        values = self.samples.get(name, [])
        return _round(sum(values) / len(values)) if values else None

    def max_session_s(self) -> float | None:
        """The longest session, from tsung.log (``session``: count mean stddev max min ...)."""
        fields = self.lines.get("session")
        return float(fields[3]) / 1000 if fields else None

    def errors(self) -> str | None:
        found = {
            k: v for k, v in self.counters.items() if v and (k.startswith(("error", "late")) or k == "match")
        }
        return ", ".join(f"{v} {k}" for k, v in sorted(found.items())) or None


def _round(value: float) -> float:
    return float(f"{value:.3g}") if abs(value) < 1000 else float(round(value))


def _launch(workdir: Path, config: Path) -> subprocess.Popen[bytes]:
    """Start tsung in its own session (its node, and nothing else, is stopped on a timeout)."""
    env = {
        **os.environ,
        "HOME": str(workdir),  # tsung keeps its state under ~/.tsung
        # One node, distribution on a free port, no EPMD started or asked.
        "ERL_FLAGS": f"-start_epmd false -erl_epmd_port {free_port()}",
    }
    argv = [TSUNG, "-n", "-i", uuid.uuid4().hex[:8], "-f", str(config), "-l", str(workdir / "log"), "start"]
    with (workdir / "tsung.out").open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
        )


def _finish(proc: subprocess.Popen[bytes], workdir: Path, timeout: float) -> TsungLog:
    """Wait for tsung's end; read what it logged."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RuntimeError(f"tsung did not finish within {timeout:g} s") from None
    logs = sorted((workdir / "log").glob("*/tsung.log"))
    if proc.returncode != 0 or not logs:
        output = (workdir / "tsung.out").read_text(errors="replace")
        raise RuntimeError(f"tsung failed (exit {proc.returncode}): {output[-2000:]}")
    return TsungLog.read(logs[-1].parent)


def _cpu(target: Target) -> float | None:
    return procfs.cpu_seconds(target.pid) if target.pid is not None else None


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root``'s descendants (tsung's script runs its Erlang node as a child)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree = {root}
    grown = True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    total = 0.0
    for pid in tree - {root}:
        try:
            total += procfs.cpu_seconds(pid)
        except OSError:
            continue  # gone meanwhile
    return total


def _sleep_until(ms: int) -> None:
    time.sleep(max(0.0, ms / 1000 - time.time()))


def _cpu_ms_per(before: float | None, after: float | None, count: int, scale: int = 1) -> float | None:
    if before is None or after is None or count == 0:
        return None
    return _round((after - before) * 1000 * scale / count)


def execute(driver: ServerDriver, scenario: Scenario, password: str = PASSWORD) -> tuple[Target, Figures]:
    """Start the server with the scenario's accounts, run tsung against it, stop the server."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-tsung-"))
    try:
        with driver:
            target = driver.start([f"bench{i}" for i in range(scenario.users)], password)
            users_file = workdir / "users.csv"
            users_file.write_text("".join(f"{row}\n" for row in scenario.rows(password)))
            config = workdir / "tsung.xml"
            if isinstance(scenario, TsungChat):
                start = scenario.start_ms(round(time.time() * 1000))
                end = scenario.end_ms(start)
                write_config(
                    config, scenario, target, users_file, scenario.session(target.port, start, target.domain)
                )
                figures = _run_chat(workdir, config, scenario, target, start, end)
            else:
                write_config(config, scenario, target, users_file, scenario.session(target.port))
                figures = _run_login(workdir, config, scenario, target)
        return target, figures
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_login(workdir: Path, config: Path, scenario: TsungLogin, target: Target) -> Figures:
    before = _cpu(target)
    log = _finish(_launch(workdir, config), workdir, timeout=START_ALLOWANCE + 60 + scenario.users)
    after = _cpu(target)
    logins = log.count("tr_bind")
    longest = log.max_session_s()
    parts = [log.mean_ms(name) for name in ("tr_tls", "tr_auth", "tr_bind")]
    return {
        "logins": logins,
        "login_failures": scenario.users - logins or None,
        "errors": log.errors(),
        # The sessions start within milliseconds of each other: the longest is the run.
        "logins_per_s": _round(logins / longest) if longest else None,
        "login_mean_ms": _round(sum(p for p in parts if p is not None)) if None not in parts else None,
        "auth_p50_ms": log.percentile_ms("tr_auth", 0.5),
        "auth_p99_ms": log.percentile_ms("tr_auth", 0.99),
        "server_cpu_ms_per_login": _cpu_ms_per(before, after, logins),
    }


def _run_chat(
    workdir: Path, config: Path, scenario: TsungChat, target: Target, start: int, end: int
) -> Figures:
    proc = _launch(workdir, config)
    # The server's CPU is read when every session is online and none sends yet, and again
    # when the last has drained, just before the closes: the messages' cost only.
    _sleep_until(start)
    before, tsung_before = _cpu(target), _tree_cpu(proc.pid)
    _sleep_until(end - 100)
    after, tsung_after = _cpu(target), _tree_cpu(proc.pid)
    log = _finish(proc, workdir, timeout=120)
    sent = log.counters.get("chat_sent", 0)
    delivered = log.count("xmpp_msg_latency")
    return {
        "logins": log.count("tr_bind"),
        "errors": log.errors(),
        "sent": sent,
        "delivered": delivered,
        "offered_msgs_per_s": _round(scenario.per_user * scenario.users / scenario.duration),
        "msgs_per_s": _round(delivered * 1000 / (scenario.per_user * scenario.interval_ms)),
        "latency_p50_ms": log.percentile_ms("xmpp_msg_latency", 0.5),
        "latency_p99_ms": log.percentile_ms("xmpp_msg_latency", 0.99),
        "server_cpu_ms_per_1000_msgs": _cpu_ms_per(before, after, delivered, 1000),
        "server_cpu_cores": None
        if before is None or after is None
        else _round((after - before) * 1000 / (end - start)),
        "tsung_cpu_cores": _round((tsung_after - tsung_before) * 1000 / (end - start)),
    }


ROWS = (
    ("login", "logins", "logins"),
    ("login", "logins_per_s", "logins/s"),
    ("login", "login_mean_ms", "login ms, mean (TLS + auth + bind)"),
    ("login", "auth_p50_ms", "auth (SASL PLAIN) ms, p50"),
    ("login", "auth_p99_ms", "auth (SASL PLAIN) ms, p99"),
    ("login", "server_cpu_ms_per_login", "server CPU ms per login"),
    ("login", "errors", "errors"),
    ("chat", "sent", "messages sent"),
    ("chat", "delivered", "messages delivered"),
    ("chat", "msgs_per_s", "messages/s delivered (over the sending time)"),
    ("chat", "latency_p50_ms", "latency ms, p50"),
    ("chat", "latency_p99_ms", "latency ms, p99"),
    ("chat", "server_cpu_ms_per_1000_msgs", "server CPU ms per 1,000 messages"),
    ("chat", "server_cpu_cores", "server CPU, cores (while sending and draining)"),
    ("chat", "tsung_cpu_cores", "tsung CPU, cores (the same time)"),
    ("chat", "errors", "errors"),
)


def render(results: dict[str, dict[str, Figures]], names: dict[str, str], titles: dict[str, str]) -> str:
    servers = list(results)
    lines = [
        "| scenario | figure | " + " | ".join(names[s] for s in servers) + " |",
        "| --- | --- |" + " --- |" * len(servers),
    ]
    shown = ""
    for scenario, key, label in ROWS:
        cells = []
        for server in servers:
            value = results[server][scenario].get(key)
            cells.append("n/a" if value is None else f"{value:,}" if isinstance(value, int) else str(value))
        lines.append(
            f"| {titles[scenario] if scenario != shown else ''} | {label} | " + " | ".join(cells) + " |"
        )
        shown = scenario
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tsung", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers", default="schnack,prosody,ejabberd", help=f"comma-separated, of: {', '.join(SERVERS)}"
    )
    parser.add_argument("--users", type=int, default=TsungLogin.users, help="logins of the login storm")
    parser.add_argument("--concurrency", type=int, default=TsungLogin.concurrency, help="logins at a time")
    parser.add_argument("--pairs", type=int, default=TsungChat.pairs, help="chat: pairs of users")
    parser.add_argument("--rate", type=float, default=TsungChat.rate, help="chat: messages/s over all users")
    parser.add_argument("--duration", type=float, default=TsungChat.duration, help="chat: seconds of sending")
    args = parser.parse_args(argv)
    if not available():
        parser.error("tsung is not installed (apt-get install tsung)")
    servers = chosen_servers(parser, args.servers)
    try:
        login = TsungLogin(users=args.users, concurrency=args.concurrency)
    except ValueError as exc:
        parser.error(str(exc))
    chat = TsungChat(pairs=args.pairs, rate=args.rate, duration=args.duration)
    scenarios: dict[str, Scenario] = {"login": login, "chat": chat}
    titles = {
        "login": f"Login storm, {login.users} logins, {login.concurrency} at a time",
        "chat": f"1:1 chat, {chat.pairs} pairs, {chat.rate:g} msg/s offered for {chat.duration:g} s",
    }
    load_before = Path("/proc/loadavg").read_text().split()[0]
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, dict[str, Figures]] = {s: {} for s in servers}
    names: dict[str, str] = {}
    for name, scenario in scenarios.items():
        for server in servers:  # the servers take turns, as in bench.suite
            print(f"[bench.tsung] {server}: {name}", file=sys.stderr, flush=True)
            target, figures = execute(private_driver(server), scenario)
            names[server] = target.name
            results[server][name] = figures
    facts = procfs.machine_facts()
    command = shlex.join(["python", "-m", "bench.tsung", *(sys.argv[1:] if argv is None else argv)])
    print(f"Measured {started} with `{command}`, tsung {_version()}.\n")
    print(f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory']} RAM, {facts['kernel']}")
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print(f"- Load average (1 min) before and after: {load_before}, {load_after}\n")
    print(render(results, names, titles))
    return 0


def _version() -> str:
    out = subprocess.run([TSUNG, "-v"], capture_output=True, text=True, check=False).stdout
    return out.split()[-1] if out.strip() else "(unknown version)"


if __name__ == "__main__":
    sys.exit(main())
