"""The real coturn (Debian's ``turnserver``) as a subprocess on loopback ports, for TURN tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.calls import turnserver as run_turnserver

from ..conftest import require_service
from .process import listening

TURNSERVER = shutil.which("turnserver")
SCHNACK = [sys.executable, "-m", "schnack.cli"]


def require_coturn() -> None:
    require_service(TURNSERVER is not None, "coturn is not installed (apt-get install coturn)")


def turn_config(config: Path) -> str:
    """What ``schnack admin turn-config --loopback`` prints for the schnack configuration ``config``."""
    done = subprocess.run(
        [*SCHNACK, "admin", "turn-config", "--loopback", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def turn_config_for(config: Path, port: int, secret: str) -> str:
    """Write a schnack configuration handing out a TURN server on ``port`` with ``secret`` to
    ``config``; return the coturn configuration that ``schnack admin turn-config`` makes of it."""
    config.write_text(
        'domains = ["localhost"]\n[modules]\nenable = ["extdisco"]\n[modules.extdisco]\n'
        f'turn_host = "127.0.0.1"\nturn_port = {port}\nturn_transports = ["udp", "tcp"]\n'
        f'secret = "{secret}"\nlifetime = 600\n'
    )
    return turn_config(config)


@contextlib.contextmanager
def turnserver(config_text: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run turnserver with ``config_text`` (its files in ``workdir``) until the block ends."""
    assert TURNSERVER is not None
    with run_turnserver(TURNSERVER, config_text, workdir) as process:
        yield process


async def ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until coturn's TCP listener on ``port`` accepts (it opens its UDP listener first)."""
    await listening(process, port, log, "turnserver")
