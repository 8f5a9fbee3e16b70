"""What every compliance check shares: its result, its registration, and the context it runs in.

A check is ``async def check_x(ctx: Context) -> Result`` wrapped by :func:`check`, which names
the specification section it tests and turns what goes wrong into a result: a
:class:`~.session.CheckFailed` (or any client error, or the time running out) fails the check
with the reason and the XML sent and received, :class:`Skip` skips it. The :class:`Context`
holds the operator's two accounts and the connections the checks open, so that one run logs
each account in once and closes everything at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.negotiation import FastToken
from ...xmpp.payloads.disco import INFO, ITEMS, DiscoInfo, DiscoItems
from ...xmpp.payloads.sasl2 import UserAgent
from ...xmpp.payloads.sm import Resume
from ...xmpp.xml import element, qname
from ..errors import ClientError
from ..net import Endpoint, Link, endpoints
from ..tls import Verify
from .session import CheckFailed, Refused, Session, sender

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Result:
    """How a check ended: ``reason`` says why (or, when passed, what was found); a failure
    carries the XML that was sent and what came back, where there was an exchange."""

    status: Status
    reason: str = ""
    sent: str | None = None
    received: str | None = None


def passed(detail: str = "") -> Result:
    return Result("passed", detail)


def failed(reason: str, sent: str | None = None, received: str | None = None) -> Result:
    return Result("failed", reason, sent, received)


class Skip(Exception):
    """The check cannot run here (a feature it builds on is missing); the text says why."""


@dataclass(frozen=True)
class Check:
    """A named check: ``spec`` is the specification and section (e.g. "XEP-0115 §6.3")."""

    spec: str
    name: str
    function: Callable[[Context], Awaitable[Result]]

    async def __call__(self, ctx: Context) -> Result:
        """Run the check; whatever goes wrong becomes its result, never an exception."""
        try:
            async with asyncio.timeout(ctx.settings.check_timeout):
                return await self.function(ctx)
        except Skip as err:
            return Result("skipped", str(err))
        except CheckFailed as err:
            return failed(err.reason, err.sent, err.received)
        except ClientError as err:
            return failed(str(err))
        except ValueError as err:
            # The payload classes raise ValueError subclasses for what they cannot read.
            return failed(f"an answer of the server cannot be read: {err}")
        except TimeoutError:
            return failed(f"the check did not finish within {ctx.settings.check_timeout:g} s")


def check(spec: str, name: str) -> Callable[[Callable[[Context], Awaitable[Result]]], Check]:
    """Register ``async def check_x(ctx) -> Result`` as the check of ``spec``."""

    def wrap(function: Callable[[Context], Awaitable[Result]]) -> Check:
        return Check(spec, name, function)

    return wrap


@dataclass(frozen=True)
class Account:
    """One of the operator's test accounts."""

    jid: JID
    password: str


@dataclass(frozen=True)
class Settings:
    """Where and how to connect.

    ``server`` (host, port) replaces the DNS SRV lookup for STARTTLS connections;
    ``direct_tls`` (host, port) is the direct TLS listener to try when DNS names none (XEP-0368);
    ``verify`` is True (the system's trust store), a CA file, or False (no certificate checks).
    ``timeout`` bounds each request, ``check_timeout`` each check.
    """

    first: Account
    second: Account
    server: tuple[str, int] | None = None
    direct_tls: tuple[str, int] | None = None
    verify: Verify = True
    timeout: float = 10.0
    check_timeout: float = 60.0


class Context:
    """The run's accounts and connections; :meth:`close` ends every connection it opened."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._main: dict[int, Session] = {}
        self._opened: list[Session] = []

    def account(self, which: int) -> Account:
        return self.settings.first if which == 0 else self.settings.second

    @property
    def domain(self) -> str:
        """The domain of the first account: the server under test."""
        return self.settings.first.jid.domain

    @staticmethod
    def unique(prefix: str) -> str:
        """A name no earlier run used, so that leftovers cannot make a check pass."""
        return f"{prefix}-{secrets.token_hex(4)}"

    async def endpoints(self, which: int) -> list[Endpoint]:
        """Where the account's STARTTLS connections go: the given server, or what DNS says."""
        host, port = self.settings.server or (None, None)
        return await endpoints(self.account(which).jid.domain, host=host, port=port, direct_tls=False)

    async def link(self, which: int, *, places: Sequence[Endpoint] | None = None, user_agent: UserAgent | None = None,
                   token: FastToken | None = None, resume: Resume | None = None) -> Link:
        """A raw negotiated link of account ``which`` (SASL2 where ``user_agent`` is given)."""
        account = self.account(which)
        return await Link.open(
            account.jid, account.password, resource=self.unique("compliance"), verify=self.settings.verify,
            endpoints=places if places is not None else await self.endpoints(which), timeout=self.settings.timeout,
            resume=resume, user_agent=user_agent, token=token,
        )

    async def open(self, which: int, *, available: bool = True) -> Session:
        """A new session of account ``which``, closed by :meth:`close`; ``available`` sends the
        initial presence (RFC 6121 §4.2), which messages to the bare JID need."""
        session = Session(await self.link(which), self.settings.timeout)
        self._opened.append(session)
        if available:
            presence = element(qname(ns.CLIENT, "presence"))
            session.send(presence)
            # §4.2.2: the server reflects it to the resource that sent it; then it is in effect.
            with contextlib.suppress(CheckFailed):
                await session.presence(lambda el: sender(el) == session.jid, "the reflected initial presence",
                                       timeout=min(5.0, self.settings.timeout))
        return session

    @contextlib.asynccontextmanager
    async def extra(self, which: int, *, available: bool = True) -> AsyncIterator[Session]:
        """Another session of account ``which`` for the length of a block."""
        session = await self.open(which, available=available)
        try:
            yield session
        finally:
            self._opened.remove(session)
            with contextlib.suppress(ClientError, CheckFailed, OSError):
                await session.close()

    async def session(self, which: int) -> Session:
        """The account's main session, opened on first use (and again if it was lost)."""
        current = self._main.get(which)
        if current is None or current.lost is not None:
            current = self._main[which] = await self.open(which)
        return current

    async def drop(self, which: int) -> None:
        """Close the account's main session (the next :meth:`session` opens a new one)."""
        current = self._main.pop(which, None)
        if current is not None:
            self._opened.remove(current)
            await current.close()

    async def disco_info(self, target: JID | str, *, node: str | None = None, which: int = 0) -> DiscoInfo:
        """XEP-0030 §3.1: what ``target`` says it is and does."""
        session = await self.session(which)
        reply = await session.iq("get", element(INFO, {"node": node}), target)
        query = reply.find(INFO)
        if query is None:
            raise CheckFailed(f"{target} answered disco#info without a query", received=reply)
        return DiscoInfo.from_xml(query)

    async def disco_items(self, target: JID | str) -> DiscoItems:
        """XEP-0030 §4.1: the entities ``target`` lists."""
        session = await self.session(0)
        reply = await session.iq("get", element(ITEMS), target)
        query = reply.find(ITEMS)
        if query is None:
            raise CheckFailed(f"{target} answered disco#items without a query", received=reply)
        return DiscoItems.from_xml(query)

    async def find_service(self, feature: str) -> JID | None:
        """The first item of the domain's disco#items (or the domain itself) with ``feature``;
        items that do not answer are passed over, as clients do."""
        candidates = [item.jid for item in (await self.disco_items(self.domain)).items if item.node is None]
        for candidate in (*candidates, self.domain):
            try:
                info = await self.disco_info(candidate)
            except (Refused, CheckFailed):
                continue
            if feature in info.features:
                return JID.parse(candidate)
        return None

    async def close(self) -> None:
        self._main.clear()
        opened, self._opened = self._opened, []
        for session in opened:
            with contextlib.suppress(ClientError, CheckFailed, OSError):
                await session.close()
