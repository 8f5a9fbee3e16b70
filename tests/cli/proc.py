"""Running the ``schnack`` client commands as real processes next to a server in this event loop.

The server under test runs in the test's event loop, so the commands are started with asyncio's
subprocess support: a blocking ``subprocess.run`` would stop the server from answering them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from schnack.server.app import Server

SCHNACK = [sys.executable, "-m", "schnack.cli"]
# Generous: each command starts a Python process on a busy machine.
PROCESS_WAIT = 60


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a client command: its own client directory, and no system keyring (as on
    a headless machine) unless the test chooses one."""
    env = {key: value for key, value in os.environ.items() if key != "SCHNACK_ACCOUNT"}
    env.update(SCHNACK_CLIENT_DIR=str(tmp_path / "client"), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


async def start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SCHNACK, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )


async def schnack(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """Run one command to its end."""
    proc = await start(env, *args)
    async with asyncio.timeout(PROCESS_WAIT):
        out, err = await proc.communicate(input.encode() if input is not None else None)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def login(server: Server, env: dict[str, str], jid: str, password: str, *options: str) -> Result:
    """``schnack login`` against ``server``'s STARTTLS port, its self-signed certificate unchecked
    unless ``options`` say otherwise."""
    host, port = server.bound["c2s"][0]
    extra = options or ("--insecure",)
    return await schnack(env, "login", jid, "--password-stdin", "--host", host, "--port", str(port), *extra,
                         input=password + "\n")


async def line_of(stream: asyncio.StreamReader | None) -> str:
    """The next line a running command writes, without its end of line."""
    assert stream is not None
    async with asyncio.timeout(PROCESS_WAIT):
        line = await stream.readline()
    assert line, "the command ended"
    return line.decode().rstrip("\n")


async def stop(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, as an interrupted user would; the exit status."""
    if proc.returncode is None:
        proc.terminate()
    async with asyncio.timeout(PROCESS_WAIT):
        return await proc.wait()


def serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    """``schnack serve`` started as a process of its own, and what it announced once it listens."""
    proc = subprocess.Popen(
        [*SCHNACK, "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + PROCESS_WAIT
    while "add a user" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    return proc, seen
