"""Drive the profanity console client (Debian's, built on libstrophe) in a tmux session of its own.

Each :class:`Profanity` has a home directory with profanity's configuration (``profrc``) and
account file, so nothing is read from or written to the user's own. Keys go in with
``tmux send-keys``; the screen is read back with ``tmux capture-pane``. Every tmux call runs as
an asyncio subprocess, so the server under test, in the same event loop, keeps serving while the
test waits for the screen.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
from pathlib import Path

PROFANITY = "profanity"
TMUX = "tmux"
POLL = 0.2  # seconds between two reads of the screen


def available() -> tuple[bool, str]:
    """Whether profanity, tmux and openssl (to hash the trusted certificate) are installed, and why not."""
    missing = [name for name in (PROFANITY, TMUX, "openssl") if shutil.which(name) is None]
    if missing:
        return False, f"{', '.join(missing)} not installed (apt-get install {' '.join(missing)})"
    return True, ""


def fingerprint(text: str) -> str:
    """An OMEMO fingerprint as 64 hex digits, from profanity's dashed or our spaced form."""
    return re.sub(r"[^0-9a-f]", "", text.lower())


class ScreenTimeout(AssertionError):
    """What was awaited did not show; the message holds the last screen."""


class Profanity:
    """One profanity user: its home in ``home``, its screens saved to ``artifacts``."""

    def __init__(self, home: Path, artifacts: Path, account: str, password: str, host: str, port: int,
                 trusted_certificate: Path | None, resource: str = "console") -> None:
        self.home = home
        self.artifacts = artifacts
        self.account = account
        # A tmux server of its own, so that nothing else's sessions are touched.
        self.socket = f"schnack-profanity-{secrets.token_hex(6)}"
        self.target = "profanity"
        # Where profanity logs under XDG_DATA_HOME.
        self.log = home / "data" / "profanity" / "logs" / "profanity.log"
        self._configure(password, host, port, trusted_certificate, resource)

    def _configure(self, password: str, host: str, port: int, trusted_certificate: Path | None,
                   resource: str) -> None:
        """profanity's account file (server and port override, STARTTLS required) and profrc.

        A ``trusted_certificate`` (the server's self-signed one) is given as the only CA, in an
        OpenSSL hashed directory (``tls.certpath``): the certificate is still checked against
        the domain, as one from a public CA would be. Without it, the system's CAs are used.
        """
        data = self.home / "data" / "profanity"
        config = self.home / "config" / "profanity"
        data.mkdir(parents=True)
        config.mkdir(parents=True)
        (data / "accounts").write_text(
            f"[{self.account}]\nenabled=true\njid={self.account}\nserver={host}\nport={port}\n"
            f"password={password}\nresource={resource}\ntls.policy=force\n"
        )
        if trusted_certificate is not None:
            certs = self.home / "certs"
            certs.mkdir()
            shutil.copy(trusted_certificate, certs / "server.crt")
            subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
            (config / "profrc").write_text(f"[connection]\ntls.certpath={certs}\n")

    async def _tmux(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            TMUX, "-L", self.socket, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def start(self) -> None:
        """Start profanity in a new 200x50 tmux session and wait for its welcome screen."""
        environment = {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_DATA_HOME": str(self.home / "data"),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
        }
        options = [arg for name, value in environment.items() for arg in ("-e", f"{name}={value}")]
        # DEBUG: profanity's log then holds the XML it sent and received, kept as an artifact.
        await self._tmux("new-session", "-d", "-s", self.target, "-x", "200", "-y", "50", *options,
                         PROFANITY, "-l", "DEBUG")  # fmt: skip
        await self.wait_for("Type '/help' to show complete help.", "started")

    async def type(self, line: str) -> None:
        """Type ``line`` (literally, no key names) and press Enter."""
        await self._tmux("send-keys", "-t", self.target, "-l", line)
        await self._tmux("send-keys", "-t", self.target, "Enter")

    async def screen(self) -> str:
        """The visible screen, wrapped lines joined."""
        return await self._tmux("capture-pane", "-p", "-J", "-t", self.target)

    async def wait_for(self, pattern: str, step: str, *, timeout: float = 20.0, regex: bool = False) -> re.Match[str]:
        """Wait until the screen shows ``pattern`` (a literal, or a regular expression if ``regex``);
        the screen is then saved as ``<step>.txt``. On time-out it is saved as well, and raised."""
        compiled = re.compile(pattern if regex else re.escape(pattern), re.MULTILINE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            screen = await self.screen()
            found = compiled.search(screen)
            if found is not None:
                self.save(step, screen)
                return found
            if loop.time() > deadline:
                self.save(f"{step}-timeout", screen)
                raise ScreenTimeout(f"{pattern!r} not on profanity's screen after {timeout} s:\n{screen}")
            await asyncio.sleep(POLL)

    def save(self, step: str, screen: str) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.artifacts / f"{step}.txt").write_text(screen)

    async def running(self) -> bool:
        """Whether profanity's tmux session still exists (it ends when profanity exits)."""
        process = await asyncio.create_subprocess_exec(
            TMUX, "-L", self.socket, "has-session", "-t", self.target,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await process.wait() == 0

    async def quit(self, timeout: float = 10.0) -> None:
        """``/quit``, and wait until profanity has exited."""
        await self.type("/quit")
        async with asyncio.timeout(timeout):
            # Another process's end: nothing in this loop to wait on but its tmux session.
            while True:
                if not await self.running():
                    return
                await asyncio.sleep(POLL)

    async def stop(self) -> None:
        """End this instance's tmux server (and profanity in it), keeping profanity's log."""
        if await self.running():
            self.save("last", await self.screen())
            await self._tmux("kill-server")
        if self.log.exists():
            self.artifacts.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log, self.artifacts / "profanity.log")
