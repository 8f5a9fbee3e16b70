"""Signing up by phone number: Quicksy's HTTP API, as Conversations' and Monal's Quicksy builds use it.

An account named by its number (``+4915123456789@example.org``) is made, or given a new password
on a new phone, in two requests to the server's API (by default ``https://DOMAIN:5281/phone``):

1. ``GET /authentication/{number}``: the server sends a 6-digit code to the number by SMS.
2. ``POST /password`` with ``Authorization: base64(number NUL code)`` and the new password as
   the body: 201 made the account, 200 gave the existing one that password (its other devices
   are logged out). The server answers the same request sent again as it did the first, so a
   request whose answer was lost on the way (the connection dropped after it went out) is sent
   again, and so is one the server answered 503 for (storage failed; the code still works), after
   the wait it asks: the user needs no new SMS for a bad link.

Every refusal is a :class:`SignupError` with a sentence a user understands; the password is made
here (:func:`new_password`), as Quicksy does, so the user never needs to know it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import ssl
import uuid
from pathlib import Path
from urllib.parse import quote

import aiohttp

from .. import __version__
from ..xmpp.phone import is_e164
from .errors import CertificateError, ClientError, ConnectError
from .tls import context, verification_failure

# Enough for any status line a server means to be read; the rest of a long body is not shown.
_MAX_BODY = 1000
# How often the password request goes again after its answer was lost or was 503.
_RESENDS = 2
# The longest Retry-After of a 503 that is waited for before the request goes again.
_LONGEST_WAIT = 30


class _AnswerLost(ConnectError):
    """The connection failed once the request may have gone out: its answer was lost."""


class SignupError(ClientError):
    """The server refused a step: ``status`` is its HTTP status, ``retry_after`` the seconds it
    asked to wait (429), if it said."""

    def __init__(self, text: str, status: int, retry_after: int | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.retry_after = retry_after


class WrongCode(SignupError):
    """The code is not the one the SMS carried; the same code may be tried again a few times."""


def default_api(domain: str) -> str:
    """Where a server serves the API unless told otherwise: its HTTPS listener's default port."""
    return f"https://{domain}:5281/phone"


def new_password() -> str:
    """A password nobody types: 256 random bits, in characters any SASL mechanism takes."""
    return secrets.token_urlsafe(32)


class PhoneSignup:
    """The sign-up of ``number`` (E.164) through the API at ``api``.

    ``verify`` is as the client's (True, a CA file, or False for test servers); ``installation``
    names this installation to the server (Quicksy's ``Installation-Id``, a UUID), which counts
    it against its limits and takes a code back only from the installation that asked for it;
    ``language`` is the one the SMS should be written in (``Accept-Language``), if known.
    """

    def __init__(self, api: str, number: str, *, verify: bool | str | Path = True, timeout: float = 30.0,
                 installation: str | None = None, language: str | None = None) -> None:
        if not is_e164(number):
            raise ValueError(f"{number!r} is not a number in E.164 form ('+' and the digits)")
        self.api = api.rstrip("/")
        self.number = number
        self._verify = verify
        self._timeout = timeout
        self._headers = {"User-Agent": f"schnack/{__version__}",
                         "Installation-Id": installation or str(uuid.uuid4())}
        if language:
            self._headers["Accept-Language"] = language

    async def request_code(self) -> None:
        """Step 1: have the server send the code by SMS."""
        status, text, retry_after = await self._request("GET", f"/authentication/{quote(self.number, safe='+')}")
        if status == 200:
            return
        if status == 400:
            raise SignupError(f"the server refused the request: {text}", status)
        if status == 429:
            raise SignupError(f"too many codes asked for {self.number}: {_later(retry_after)}", status, retry_after)
        if status >= 500:
            raise SignupError(f"the server could not send the SMS ({text}): try again later", status)
        raise self._unexpected(status, text)

    async def set_password(self, code: str, password: str) -> bool:
        """Step 2: prove the number with ``code`` and set ``password``; True if the account is new,
        False if an existing one now has this password."""
        token = base64.b64encode(f"{self.number}\0{code}".encode()).decode("ascii")
        for resends_left in range(_RESENDS, -1, -1):
            try:
                status, text, retry_after = await self._request("POST", "/password", password, {"Authorization": token})
            except _AnswerLost:
                if not resends_left:
                    raise
                continue
            wait = 1 if retry_after is None else retry_after
            if status != 503 or not resends_left or wait > _LONGEST_WAIT:
                break
            await asyncio.sleep(wait)
        if status in (200, 201):
            return status == 201
        if status == 400:
            raise SignupError(f"the server refused the password: {text}", status)
        if status == 401:
            raise WrongCode("wrong code", status)
        if status == 404:
            raise SignupError(f"the code has expired, was used, or was never sent to {self.number}:"
                              " ask for a new one", status)
        if status == 429:
            raise SignupError(f"too many wrong codes: this one no longer works; ask for a new one, {_later(retry_after)}",
                              status, retry_after)
        if status == 503:
            raise SignupError(f"the server could not set the password ({text}): {_later(retry_after)}",
                              status, retry_after)
        raise self._unexpected(status, text)

    def _unexpected(self, status: int, text: str) -> SignupError:
        if status == 404:
            return SignupError(f"{self.api} does not sign up phone numbers (HTTP 404): the server's phone module"
                               " is off, or the API is elsewhere", status)
        return SignupError(f"unexpected answer from {self.api}: HTTP {status} ({text})", status)

    async def _request(self, method: str, path: str, body: str | None = None,
                       headers: dict[str, str] | None = None) -> tuple[int, str, int | None]:
        """One request: the status, the first line of the body (else the reason), and Retry-After."""
        url = self.api + path
        ssl_context: ssl.SSLContext | bool = False if self._verify is False else context(self._verify, direct_tls=False)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as http, http.request(
                method, url, data=body.encode() if body is not None else None, ssl=ssl_context,
                headers={**self._headers, **(headers or {}),
                         **({"Content-Type": "text/plain; charset=utf-8"} if body is not None else {})},
            ) as response:
                raw = await response.content.read(_MAX_BODY)
                text = raw.decode("utf-8", "replace").strip().partition("\n")[0].strip()
                return response.status, text or response.reason or "", _seconds(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError as err:
            certificate_error = err.certificate_error
            if isinstance(certificate_error, ssl.SSLCertVerificationError):
                raise verification_failure(err.host, certificate_error) from None
            raise CertificateError(f"the certificate of {err.host} is not trusted: {certificate_error}") from None
        except aiohttp.ClientConnectorError as err:
            # Its own text names the SSL context it was given ("ssl:<ssl.SSLContext object at
            # 0x...>"); the system's reason is what a user can act on.
            cause = err.os_error
            reason = os.strerror(cause.errno) if cause.errno and cause.errno > 0 else cause.strerror or str(cause)
            raise ConnectError(f"cannot reach {url}: {reason}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            reason = "no answer in time" if isinstance(err, TimeoutError) else str(err) or type(err).__name__
            raise _AnswerLost(f"cannot reach {url}: {reason}") from None


def _seconds(value: str | None) -> int | None:
    """RFC 9110 §10.2.3: Retry-After in seconds (the HTTP-date form is not used by the API)."""
    return int(value) if value is not None and value.strip().isdigit() else None


def _later(seconds: int | None) -> str:
    return f"try again in {seconds} s" if seconds is not None else "try again later"
