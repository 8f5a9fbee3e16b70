"""SMS gateways: how the server sends a verification code to a phone (docs/phone.md).

A gateway has one call, :meth:`Gateway.send`, which returns once the message was handed on and
raises :class:`SmsError` with the reason when it was not. Three kinds:

- ``log``: the number and the text go to the server's log at WARNING, for trying schnack out
  (whoever reads the log reads the codes);
- ``http``: a webhook, ``POST`` of ``{"to": number, "text": text}`` as JSON to a URL, with
  ``Authorization: Bearer <token>`` if a token is set; any 2xx answer means sent;
- ``command``: a program run without a shell (e.g. gammu-smsd-inject for a GSM modem), with
  ``{number}`` and ``{text}`` replaced in its arguments; exit status 0 means sent.

The http and command gateways give up after ``timeout`` seconds (the program is killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp

log = logging.getLogger(__name__)

KINDS = ("log", "http", "command")
# What a failing program printed is shown up to this many characters.
_SHOWN = 200


class SmsError(Exception):
    """The gateway did not take the message; the text says why."""


class Gateway(Protocol):
    async def send(self, number: str, text: str) -> None:
        """Hand ``text`` on for ``number`` (E.164), or raise SmsError."""
        ...


class LogGateway:
    """Writes each message to the log: for trying schnack out, never for real users."""

    async def send(self, number: str, text: str) -> None:
        log.warning("SMS to %s (sms = \"log\": anyone with the log reads the codes): %s", number, text)


class HttpGateway:
    """POSTs each message as JSON to a webhook."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    async def send(self, number: str, text: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as http,
                http.post(self.url, json={"to": number, "text": text}, headers=headers) as answer,
            ):
                if not 200 <= answer.status < 300:
                    body = (await answer.text(errors="replace"))[:_SHOWN].strip()
                    raise SmsError(f"{self.url} answered {answer.status} {answer.reason}: {body}".rstrip(": "))
        except TimeoutError:
            raise SmsError(f"{self.url} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as err:
            raise SmsError(f"{self.url} could not be reached: {err}") from None


class CommandGateway:
    """Runs a program for each message; ``{number}`` and ``{text}`` in its arguments are replaced."""

    def __init__(self, command: Sequence[str], timeout: float) -> None:
        self.command = tuple(command)
        self.timeout = timeout

    async def send(self, number: str, text: str) -> None:
        # str.replace, not str.format: other braces in an argument stay as they are.
        argv = [arg.replace("{number}", number).replace("{text}", text) for arg in self.command]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as err:
            raise SmsError(f"{self.command[0]} could not be run: {err}") from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise SmsError(f"{self.command[0]} did not finish within {self.timeout:g} s") from None
        if process.returncode != 0:
            shown = output.decode(errors="replace")[:_SHOWN].strip()
            raise SmsError(f"{self.command[0]} exited with status {process.returncode}: {shown}".rstrip(": "))
