"""What the benchmark reads from /proc: a server's CPU time and memory, and the machine's facts."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far, all its threads included."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may itself contain spaces or ')':
    # the fixed-position fields start after the last ')'. utime and stime are fields 14 and 15.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of the process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for process {pid}")


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


def own_cpu_seconds() -> float:
    """This process's CPU seconds (user + system): what the generator itself costs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _first_field(path: str, key: str) -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return ""


def machine_facts() -> dict[str, str]:
    """What a reader needs to compare figures between machines."""
    mem_kib = int(_first_field("/proc/meminfo", "MemTotal").split()[0])
    return {
        "cpu": _first_field("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024**2:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
