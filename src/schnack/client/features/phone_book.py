"""Contact discovery by phone number: Quicksy's ``im.quicksy.synchronization:0`` phone book.

The numbers of the address book (E.164) go to the account's own server in an IQ get; the
result names the accounts among them. The last answer and its ``ver`` (the hash of the answer,
schnack.xmpp.payloads.phone_book) are kept in the account's store: the next request carries that
``ver``, and while the answer stays the same the server sends an empty result, so asking again
costs one small round trip.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.phone_book import PHONE_BOOK, Entry, PhoneBook, PhoneBookError, answer_hash
from ...xmpp.phone import is_e164
from ...xmpp.xml import element, qname
from ..errors import ClientError, XmppError

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_IQ = qname(ns.CLIENT, "iq")
_SETTING = "phone-book"
# What a server says when it does not speak the protocol (RFC 6120 §8.3.3).
_UNSUPPORTED = frozenset({"service-unavailable", "feature-not-implemented"})


class DiscoveryError(ClientError):
    """The server did not answer the phone book: it does not offer discovery, or refused it."""


class PhoneBookSync:
    """Asks the account's server which numbers have accounts, keeping the last answer."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def discover(self, numbers: Iterable[str]) -> dict[str, tuple[JID, ...]]:
        """The accounts of ``numbers`` (E.164): number -> bare JIDs, for the numbers that have any."""
        requested = sorted(set(numbers))
        for number in requested:
            if not is_e164(number):
                raise ValueError(f"{number!r} is not a number in E.164 form")
        kept, ver = self._stored()
        domain = self.client.account.domain
        request = PhoneBook(tuple(Entry(number) for number in requested), ver)
        try:
            reply = await self.client.iq(element(_IQ, {"type": "get", "to": domain}, children=[request.to_xml()]))
        except XmppError as err:
            if err.condition in _UNSUPPORTED:
                raise DiscoveryError(f"{domain} does not offer contact discovery by phone number") from None
            raise DiscoveryError(f"{domain} refused the contact discovery: {err.text or err.condition}") from None
        payload = reply.find(PHONE_BOOK)
        if payload is None:
            # The answer is the one kept: its hash is the ver sent.
            entries = kept
        else:
            try:
                entries = PhoneBook.from_xml(payload).entries
            except PhoneBookError as err:
                raise XmppError("bad-request", f"the server sent a broken phone book: {err}") from None
            self._save(entries)
        return {entry.number: tuple(jid.bare for jid in entry.jids) for entry in entries if entry.jids}

    def _stored(self) -> tuple[tuple[Entry, ...], str | None]:
        """The answer kept and its ver; nothing if none is kept, or if it cannot be read."""
        stored = self.client.store.setting(_SETTING)
        if not stored:
            return (), None
        try:
            data = json.loads(stored)
            entries = tuple(Entry(number, tuple(JID.parse(jid) for jid in jids))
                            for number, jids in data["entries"].items())
        except (ValueError, KeyError, TypeError, AttributeError, JIDError) as err:
            log.warning("ignoring the stored phone book answer: %s", err)
            return (), None
        # The ver is the hash of the entries kept, made again here: a ver that did not match them
        # would make the server's empty answer mean an answer this client does not hold.
        return entries, answer_hash(entries)

    def _save(self, entries: tuple[Entry, ...]) -> None:
        self.client.store.save_setting(_SETTING, json.dumps(
            {"entries": {entry.number: [str(jid) for jid in entry.jids] for entry in entries}}))
