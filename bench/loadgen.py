"""XMPP load generator: login storm, idle connections, chat throughput and latency, offline burst.

Run from the repository root::

    python -m bench.loadgen [--server schnack|prosody|ejabberd|external ...] SCENARIO [scenario options]

``--server schnack`` (the default), ``--server prosody`` and ``--server ejabberd`` start a
private server with the users the scenario needs, run it and stop the server; ``--server
external --port P --domain D [--pid PID]`` drives a server that is already running on this
machine, whose accounts PREFIX0, PREFIX1, ... exist with the given password (``--pid`` lets
the generator read its CPU time and memory). Each run prints its figures and, with ``--json
FILE``, writes them together with the command line, the date and the machine's facts.

One generator process holds about as many connections as its open-file limit allows and uses
one core; idle connections beyond that are made by several generator processes. The server holds
them all in one process, so a run never exceeds the open-file limit (a process with the
capability raises it to what the run needs; the server it starts inherits it). Beyond 20,000
connections the further ones come from 127.0.0.2, 127.0.0.3, ... so that a loopback server's port
does not run out of ephemeral ports.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import resource
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from . import procfs
from .scenarios import Chat, Figures, IdleConnections, LoginStorm, OfflineBurst, Scenario, Session
from .servers import SERVERS, ExternalDriver, ServerDriver, Target, private_driver

PASSWORD = "bench-password"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="XMPP load generator (STARTTLS, SCRAM, OMEMO-shaped messages).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server = parser.add_argument_group("server under test")
    server.add_argument("--server", choices=[*SERVERS, "external"], default="schnack")
    server.add_argument("--host", default="127.0.0.1", help="external: address (this machine only)")
    server.add_argument("--port", type=int, default=5222, help="external: STARTTLS port")
    server.add_argument("--domain", default="localhost", help="external: the XMPP domain")
    server.add_argument("--pid", type=int, help="external: the server process to measure")
    parser.add_argument("--prefix", default="bench", help="accounts are PREFIX0, PREFIX1, ...")
    parser.add_argument("--password", default=PASSWORD, help="the accounts' password")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")

    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("login", help="logins (TLS, SCRAM, bind, close): logins/s, server CPU per login")
    p.add_argument("-n", "--count", type=_positive_int, default=LoginStorm.count)
    p.add_argument("-c", "--concurrency", type=_positive_int, default=LoginStorm.concurrency)

    p = sub.add_parser("idle", help="authenticated connections held open: server memory per connection")
    p.add_argument("-n", "--count", type=_positive_int, default=IdleConnections.count)
    p.add_argument("-c", "--concurrency", type=_positive_int, default=IdleConnections.concurrency)
    p.add_argument("--settle", type=float, default=IdleConnections.settle, help="seconds before reading RSS")
    p.add_argument(
        "--per-process", type=_positive_int, help="connections per generator process (default: its open-file limit)"
    )

    p = sub.add_parser("chat", help="pairs exchanging OMEMO-shaped messages: throughput, latency, CPU")
    p.add_argument("-p", "--pairs", type=_positive_int, default=Chat.pairs)
    p.add_argument("-m", "--messages", type=_positive_int, default=Chat.messages, help="per sender")
    p.add_argument("-w", "--window", type=_positive_int, default=Chat.window, help="in flight per pair")
    p.add_argument("-r", "--rate", type=float, default=Chat.rate, help="msg/s over all pairs; 0: saturation")
    p.add_argument("-k", "--idle", type=int, default=Chat.idle, help="extra idle clients online")
    p.add_argument("-c", "--concurrency", type=_positive_int, default=Chat.concurrency, help="logins at a time")
    p.add_argument("--payload-size", type=_positive_int, default=Chat.payload_size, help="OMEMO payload bytes")

    p = sub.add_parser("offline", help="messages to an offline user, then its login and drain")
    p.add_argument("-x", "--messages", type=_positive_int, default=OfflineBurst.messages)
    p.add_argument("--payload-size", type=_positive_int, default=OfflineBurst.payload_size)

    args = parser.parse_args(argv)
    if args.server == "external" and not ipaddress.ip_address(socket.gethostbyname(args.host)).is_loopback:
        parser.error(f"--host {args.host}: the generator only loads servers on this machine")
    return args


def scenario_from(args: argparse.Namespace) -> Scenario:
    if args.scenario == "login":
        return LoginStorm(count=args.count, concurrency=args.concurrency)
    if args.scenario == "idle":
        return IdleConnections(
            count=args.count, concurrency=args.concurrency, settle=args.settle, per_process=args.per_process
        )
    if args.scenario == "chat":
        return Chat(
            pairs=args.pairs,
            messages=args.messages,
            window=args.window,
            rate=args.rate,
            idle=args.idle,
            concurrency=args.concurrency,
            payload_size=args.payload_size,
        )
    return OfflineBurst(messages=args.messages, payload_size=args.payload_size)


def driver_from(args: argparse.Namespace) -> ServerDriver:
    if args.server == "external":
        return ExternalDriver(Target("external", args.host, args.port, args.domain, args.pid))
    return private_driver(args.server)


def _check_open_files(connections: int) -> None:
    """Raise the soft limit of open files to the hard one (a server started from here inherits
    it), as root the hard one too where the run needs more, and refuse a run that the server
    (one process holding every connection) cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + 100
    if need > hard and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            soft, hard = need, need
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if need > hard:
        raise SystemExit(f"{connections} connections exceed the open-file limit of {hard}")


def execute(
    driver: ServerDriver, scenario: Scenario, *, password: str = PASSWORD, prefix: str = "bench"
) -> tuple[Target, Figures]:
    """Start the server with the scenario's users, run the scenario, stop the server."""
    _check_open_files(scenario.users)
    with driver:
        target = driver.start([f"{prefix}{i}" for i in range(scenario.users)], password)
        figures = uvloop.run(scenario.run(Session(target, password, prefix)))
    return target, figures


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['scenario']} against {result['server']}: {result['command']}"]
    lines += [f"  {key}: {'n/a' if value is None else value}" for key, value in result["figures"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    scenario = scenario_from(args)
    target, figures = execute(driver_from(args), scenario, password=args.password, prefix=args.prefix)
    result = {
        "scenario": scenario.name,
        "server": target.name,
        "command": shlex.join(["python", "-m", "bench.loadgen", *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": procfs.machine_facts(),
        "figures": figures,
    }
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
