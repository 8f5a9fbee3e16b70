"""XEP-0313: Message Archive Management (v1.1, ``urn:xmpp:mam:2``): catching up after a login.

After every new login (not after a resumed session, which lost nothing) the client reads its
account's archive from where the last catch-up ended, or, the first time, from
:data:`FIRST_CATCH_UP` ago (§4.1: the ``start`` field), a page of :data:`PAGE` messages at a
time with XEP-0059 ``<after/>`` (§4.3.2) until the server says the result is complete. Each
page goes through the same ordered pipeline as live messages (messages.py), flagged as history:
what this device already has (it arrived live meanwhile, as a carbon or from offline storage) is
dropped by its XEP-0359 ids before it is decrypted, the rest is decrypted, stored and published
as history. Where the catch-up got to is saved after each page, once the page is stored, but
never past a message that could not be decrypted for a reason that may pass (OMEMO not set up
on this login, a lost link, the sender's keys not fetched yet, no session yet): the catch-up
reads on past it, and what came after it is stored and published, but it is read again from
just before it, for up to ``messages.RETRY_FOR`` after it was sent, and what is stored by then is
skipped (by its stanza-id, so that nothing is shown twice): in the same login once the keys of
the sender of such a message are fetched or updated (``Omemo.on_keys``), and at the next login
anyway. If the
server no longer has that message (§4.3.2 ``item-not-found``: expired from the archive), the
catch-up starts again from the time bound. A catch-up cut short by a lost link is taken up
again when the link is back, also when the session was resumed.

A client that logs in without announcing presence (a program that only sends) does not catch
up: it takes no messages, and what it stored would never be shown as new by the program that
does.

Results are taken only from our own account (§4.2: the archive is the account's) and only for
a query this client made and is still waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.mam import FIN, RESULT, Filter, Fin, MamError, Query, Result
from ...xmpp.payloads.rsm import ResultSet
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..errors import ClientError, XmppError
from .messages import Incoming, Messages, UndecryptedYet, first_waiting

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_IQ = qname(ns.CLIENT, "iq")
# How far back the first catch-up of a device reaches.
FIRST_CATCH_UP = timedelta(days=30)
# Messages asked for per page (servers cap it: ours at its max_page_size).
PAGE = 100


class History:
    """The archive catch-up of one client."""

    def __init__(self, client: Client, messages: Messages, *, enabled: bool = True) -> None:
        self.client = client
        self._messages = messages
        self._results: dict[str, list[Result]] = {}
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        # Why the last catch-up stopped short or left a message to read again, if it did.
        self.problem: str | None = None
        # The first message of this catch-up that could not be decrypted yet: no position past it
        # is saved.
        self._waiting: UndecryptedYet | None = None
        # Whose keys (bare) the messages this catch-up could not decrypt yet need, and whether
        # some of those came while it ran: it then runs again once it is over.
        self._senders: set[JID] = set()
        self._again = False
        self._archived: list[Callable[[Element, datetime | None], None]] = []
        if not enabled:
            self._done.set()
            return
        client.on_connect(self._on_connect)
        client.omemo.on_keys(self._keys_arrived)
        client.on_message(self._result)

    def on_archived(self, handler: Callable[[Element, datetime | None], None]) -> None:
        """Also hand each message the catch-up reads to ``handler``, with its archive stamp: one
        that is no chat message (a call's XEP-0353 signals) is read for what it tells."""
        self._archived.append(handler)

    async def _on_connect(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        await self._cancel()
        self._start()

    def _start(self) -> None:
        self._done.clear()
        self._task = asyncio.create_task(self._catch_up())

    async def _watch(self) -> None:
        """Take up a catch-up that a lost link cut short once the link is back (a resumed
        session runs no steps after login)."""
        from ..client import Connected

        async for event in self.client.events():
            idle = self._task is None or self._task.done()
            if isinstance(event, Connected) and self.problem is not None and idle:
                self._start()

    def _keys_arrived(self, jid: JID) -> None:
        """``jid``'s keys were fetched or updated: a message of theirs that the catch-up could not
        decrypt yet may be read now, by catching up again from the saved position."""
        if self._watcher is None or (jid not in self._senders and jid not in self._messages.undecrypted.values()):
            return  # closed, or nothing of theirs waits
        if self._task is not None and not self._task.done():
            self._again = True
        else:
            self._start()

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Stop catching up: the client is closing."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self._cancel()
        self._done.set()

    async def wait(self, timeout: float | None) -> None:
        """Wait until the catch-up after the last login is over (complete, or given up), at most
        ``timeout`` seconds (TimeoutError) if given."""
        async with asyncio.timeout(timeout):
            await self._done.wait()

    def _result(self, el: Element) -> None:
        """§4.2: one archived message of a page we asked for."""
        found = el.find(RESULT)
        if found is None:
            return
        waiting = self._results.get(found.get("queryid") or "")
        if waiting is None:
            return  # a query of someone else's, such as a group's archive (groups.py)
        try:
            sender = Stanza.parse(el).from_
        except StanzaError:
            return
        if sender is not None and sender != self.client.account:
            log.warning("ignoring an archive result from %s", sender)
            return
        try:
            waiting.append(Result.from_xml(found))
        except MamError as err:
            log.debug("ignoring a broken archive result: %s", err)

    async def _catch_up(self) -> None:
        self._again = True
        try:
            while self._again:
                self._again = False
                await self._read()
        finally:
            self._done.set()

    async def _read(self) -> None:
        """Read the archive from the saved position to its end."""
        position = self.client.store.archive_position()
        self._waiting = None
        self._senders.clear()
        try:
            while True:
                try:
                    complete, position = await self._page(position)
                except XmppError as err:
                    if err.condition != "item-not-found" or position is None:
                        raise
                    log.info("the archive no longer has message %s; catching up by time", position)
                    position = None
                    continue
                if complete:
                    break
            self.problem = str(self._waiting) if self._waiting is not None else None
            if self.problem is not None:
                log.info("caught up from the archive of %s: %s", self.client.account, self.problem)
        except (ClientError, MamError) as err:
            self.problem = str(err) or type(err).__name__
            log.warning("catching up from the archive of %s stopped: %s", self.client.account, self.problem)
            self._again = False  # taken up when the link is back (_watch)

    async def _page(self, after: str | None) -> tuple[bool, str | None]:
        """Fetch, store and publish one page after ``after``; whether it was the last, and the new
        position."""
        queryid = secrets.token_hex(8)
        start = None if after is not None else self.client.store.now() - FIRST_CATCH_UP
        query = Query(queryid, Filter(start=start), ResultSet(max=PAGE, after=after))
        results: list[Result] = []
        self._results[queryid] = results
        try:
            reply = await self.client.iq(element(_IQ, {"type": "set"}, children=[query.to_xml()]))
        finally:
            self._results.pop(queryid, None)
        fin_el = reply.find(FIN)
        if fin_el is None:
            raise MamError("bad-request", "the archive answered without <fin/>")
        fin = Fin.from_xml(fin_el)
        account = self.client.account
        for result in results:
            try:
                stanza = Stanza.parse(result.forwarded.stanza)
            except StanzaError:
                continue
            sender = stanza.from_ or account
            # Ours to someone else; a message between our own devices counts as one we got.
            outgoing = sender.bare == account and stanza.to is not None and stanza.to.bare != account
            for handler in self._archived:
                handler(result.forwarded.stanza, result.forwarded.stamp)
            self._messages.deliver(Incoming(stanza, sender, outgoing=outgoing, history=True,
                                            stamp=result.forwarded.stamp, stanza_id=result.id))
        await self._messages.settled()
        undecrypted = self._messages.undecrypted
        waiting = first_waiting(results, undecrypted, after)
        self._senders.update(undecrypted.values())
        undecrypted.clear()
        if self._waiting is None and waiting is not None:
            self._waiting = waiting
            if waiting.position is not None and waiting.position != after:
                self.client.store.save_archive_position(waiting.position)
        last = results[-1].id if results else fin.rsm.last
        if self._waiting is None and last is not None and last != after:
            self.client.store.save_archive_position(last)
        # No progress means nothing more to fetch, whatever the server says.
        return fin.complete or not results or last == after, last if last is not None else after
