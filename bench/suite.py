"""``make bench`` and ``make bench-compare``: every scenario against schnack and the other
servers, a table of medians and ratios.

    python -m bench.suite [--repeat N] [--servers schnack,prosody,ejabberd] [--write docs/benchmarks.md]
    python -m bench.suite --scenarios 5,6 [--repeat N] [--servers ...]   # some scenarios, printed only

Each scenario runs ``--repeat`` times against each server, every run on a freshly started server;
the servers take turns scenario by scenario, so that a change in the machine's load during the
suite touches all alike. The table shows the median of the runs and their range, and the ratio
of the first server's median to the best median of the others (the higher or the lower,
whichever is better for that figure). With ``--write`` the results replace the part of that
file between the two marker lines ``<!-- bench:results -->`` and ``<!-- bench:end -->``; the
rest of the file is left alone.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import procfs
from .loadgen import execute
from .scenarios import Chat, Figure, Figures, IdleConnections, LoginStorm, OfflineBurst, Scenario
from .servers import SERVERS, chosen_servers, private_driver

BEGIN = "<!-- bench:results -->"
END = "<!-- bench:end -->"

SUITE: tuple[Scenario, ...] = (
    LoginStorm(count=500, concurrency=20),
    IdleConnections(count=1000, concurrency=20),
    IdleConnections(count=10000, concurrency=50),
    # The server holds every connection in one process: 19,500 and its own files fit in the
    # per-process cap of 20,000 open files of the machine the suite was written on.
    IdleConnections(count=19500, concurrency=50),
    Chat(pairs=50, messages=200, window=10, idle=1000),
    Chat(pairs=50, messages=50, rate=500, idle=1000),
    OfflineBurst(messages=10000),
)


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure of one scenario of :data:`SUITE`."""

    scenario: int
    key: str
    label: str
    better: str  # "higher" or "lower"


ROWS = (
    Row(0, "logins_per_s", "logins/s", "higher"),
    Row(0, "server_cpu_ms_per_login", "server CPU ms per login", "lower"),
    Row(1, "server_rss_kib_per_connection", "server RSS KiB per idle connection", "lower"),
    Row(2, "server_rss_kib_per_connection", "server RSS KiB per idle connection", "lower"),
    Row(2, "server_rss_after_kib", "server RSS KiB with 10,000 online", "lower"),
    Row(2, "logins_per_s", "logins/s while 10,000 log in", "higher"),
    Row(3, "server_rss_kib_per_connection", "server RSS KiB per idle connection", "lower"),
    Row(3, "server_rss_after_kib", "server RSS KiB with 19,500 online", "lower"),
    Row(4, "msgs_per_s", "messages/s at saturation", "higher"),
    Row(4, "latency_p50_ms", "latency p50 ms (window 10 per pair)", "lower"),
    Row(4, "latency_p99_ms", "latency p99 ms (window 10 per pair)", "lower"),
    Row(4, "server_cpu_ms_per_1000_msgs", "server CPU ms per 1,000 messages", "lower"),
    Row(5, "latency_p50_ms", "latency p50 ms at 500 msg/s", "lower"),
    Row(5, "latency_p99_ms", "latency p99 ms at 500 msg/s", "lower"),
    Row(5, "server_cpu_ms_per_1000_msgs", "server CPU ms per 1,000 messages at 500 msg/s", "lower"),
    Row(6, "store_msgs_per_s", "offline messages stored/s", "higher"),
    Row(6, "server_cpu_ms_per_1000_stored", "server CPU ms per 1,000 stored", "lower"),
    Row(6, "recipient_login_ms", "recipient login ms", "lower"),
    Row(6, "drain_s", "drain s (login to last message)", "lower"),
    Row(6, "drain_msgs_per_s", "messages/s while draining", "higher"),
)

SCENARIO_TITLES = (
    "Login storm",
    "1,000 idle connections",
    "10,000 idle connections",
    "19,500 idle connections",
    "1:1 chat at saturation",
    "1:1 chat at a fixed rate",
    "Offline burst of 10,000",
)


def problems(scenario: Scenario, figures: Figures) -> list[str]:
    """What makes a run unsound: failed logins, lost or refused messages, dropped connections."""
    found = [f"{key} {figures[key]}" for key in ("login_failures", "errors") if figures.get(key)]
    found += [f"{key} {figures[key]}" for key in ("lost", "stale") if figures.get(key)]
    if isinstance(scenario, IdleConnections) and figures["still_open"] != scenario.count:
        found.append(f"only {figures['still_open']} of {scenario.count} connections still open")
    return found


def _number(value: Figure) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return _fmt(median)
    return f"{_fmt(median)} ({_fmt(min(values))}-{_fmt(max(values))})"


def _ratio(first: list[float], others: list[list[float]], better: str) -> str:
    """The first server's median over the best median of the others ("higher" or "lower" is
    better): below 1.00 the first needs less, above 1.00 it does more, whichever the direction."""
    medians = [statistics.median(values) for values in others if values]
    if not first or not medians:
        return "n/a"
    best = max(medians) if better == "higher" else min(medians)
    return "n/a" if best == 0 else f"{statistics.median(first) / best:.2f}"


def render(
    results: dict[str, list[list[Figures]]],
    names: dict[str, str],
    *,
    command: str,
    started: str,
    load: tuple[str, str],
    repeat: int,
    scenarios: Sequence[int] | None = None,
) -> str:
    """The results section of docs/benchmarks.md: when, where, how, the table, and any problems;
    ``scenarios`` (indices into :data:`SUITE`) limits it to the scenarios that were run."""
    chosen = range(len(SUITE)) if scenarios is None else scenarios
    servers = list(results)
    facts = procfs.machine_facts()
    lines = [
        BEGIN,
        "",
        f"Measured {started} with `{command}` ({repeat} runs of each scenario per server; "
        "median, and the range in parentheses).",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory']} RAM, {facts['kernel']}, "
        f"Python {facts['python']}",
        f"- Servers: {', '.join(names[s] for s in servers)}",
        f"- Load average (1 min) before and after the suite: {load[0]}, {load[1]}",
        "",
        "Each scenario on its own, as the suite runs it:",
        "",
        "```sh",
        *(
            shlex.join([".venv/bin/python", "-m", "bench.loadgen", "--server", "SERVER", *SUITE[i].args()])
            for i in chosen
        ),
        "```",
        "",
    ]
    header = " | ".join(names[s] for s in servers)
    ratio = len(servers) >= 2
    ratio_title = f"{servers[0]}/{servers[1]}" if len(servers) == 2 else f"{servers[0]}/best of the others"
    lines += [
        f"| scenario | figure | better | {header} |" + (f" {ratio_title} |" if ratio else ""),
        "| --- | --- | --- |" + " --- |" * (len(servers) + ratio),
    ]
    shown = -1
    for row in (row for row in ROWS if row.scenario in chosen):
        title = SCENARIO_TITLES[row.scenario] if row.scenario != shown else ""
        shown = row.scenario
        values = {
            s: [v for run in results[s][row.scenario] if (v := _number(run.get(row.key))) is not None]
            for s in servers
        }
        cells = [_cell(values[s]) for s in servers]
        if ratio:
            cells.append(_ratio(values[servers[0]], [values[s] for s in servers[1:]], row.better))
        lines.append(f"| {title} | {row.label} | {row.better} | " + " | ".join(cells) + " |")
    trouble = [
        f"- {names[s]}, {SCENARIO_TITLES[i].lower()}, run {n + 1}: {'; '.join(found)}"
        for i, scenario in enumerate(SUITE)
        for s in servers
        for n, run in enumerate(results[s][i])
        if (found := problems(scenario, run))
    ]
    lines += ["", "Runs that were not clean:", "", *trouble] if trouble else ["", "Every run was clean."]
    return "\n".join([*lines, "", END])


def write_section(path: Path, section: str) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: the markers {BEGIN} and {END} are missing")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(head + section + tail)


def _load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario per server")
    parser.add_argument(
        "--servers", default="schnack,prosody", help=f"comma-separated, of: {', '.join(SERVERS)}"
    )
    parser.add_argument("--write", type=Path, help="replace the results section of this Markdown file")
    parser.add_argument(
        "--scenarios",
        help="comma-separated numbers (1 = the first row of the table's scenarios) to run only those; "
        "the table is printed, never written",
    )
    args = parser.parse_args(argv)
    chosen = list(range(len(SUITE)))
    if args.scenarios:
        if args.write:
            parser.error("--write needs every scenario: a table of some would replace the full one")
        try:
            chosen = sorted({int(n) - 1 for n in args.scenarios.split(",")})
        except ValueError:
            parser.error(f"--scenarios: {args.scenarios!r} is not a list of numbers")
        if not all(0 <= i < len(SUITE) for i in chosen):
            parser.error(f"--scenarios: numbers go from 1 to {len(SUITE)}")
    servers = chosen_servers(parser, args.servers)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = _load_average()
    results: dict[str, list[list[Figures]]] = {s: [[] for _ in SUITE] for s in servers}
    names = {"schnack": f"schnack {importlib.metadata.version('schnack')}"}
    for run in range(args.repeat):
        for i in chosen:
            scenario = SUITE[i]
            for server in servers:
                print(f"[bench] run {run + 1}/{args.repeat}: {server} {shlex.join(scenario.args())}", flush=True)
                target, figures = execute(private_driver(server), scenario)
                names[server] = target.name
                results[server][i].append(figures)
    command = shlex.join(["python", "-m", "bench.suite", *(sys.argv[1:] if argv is None else argv)])
    section = render(
        results,
        names,
        command=command,
        started=started,
        load=(load_before, _load_average()),
        repeat=args.repeat,
        scenarios=chosen,
    )
    print(section)
    if args.write:
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
