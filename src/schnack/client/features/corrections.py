"""XEP-0308: Last Message Correction (v1.2): correcting what we sent.

A correction is a chat message of its own, encrypted like any other, carrying
``<replace id='…'/>`` with the id of the original (§3; also when correcting a correction, §4).
It goes through the outbox, so it is stored before it leaves and sent until the server has it;
the original's text in the store becomes the new one at once. Corrections that arrive (from
the contact, or from our other devices) are applied by messages.py and the store: only to a
message of the same sender in the same conversation (§5) that was encrypted as the correction
is (an OMEMO message is corrected only by an OMEMO message), and published as a
:class:`~.messages.Message` whose ``replaces`` names the original. A correction of an encrypted
message is refused in plaintext. Live messages and the archive catch-up (history.py) may bring
them out of order: a correction older than the one applied changes nothing and is not published,
and one that came before its original is a message of its own until the original comes, which
then takes its text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...xmpp.jid import JID
from ..errors import ClientError, EncryptionRequired
from .messages import Messages

if TYPE_CHECKING:
    from ..client import Client


class Corrections:
    """Sends corrections of our messages for one client."""

    def __init__(self, client: Client, messages: Messages) -> None:
        self.client = client
        self._messages = messages

    async def correct(self, peer: JID, message_id: str, text: str, *, encrypted: bool) -> str:
        """§3: replace the text of our message ``message_id`` to ``peer``; the correction's id.
        :class:`EncryptionRequired` if the original was encrypted and ``encrypted`` is False."""
        original = self.client.store.message(peer, message_id, outgoing=True)
        if original is None:
            raise ClientError(f"no message {message_id!r} to {peer.bare} was sent from this account")
        if original.encrypted and not encrypted:
            # The new text is mostly the old one: in plaintext it would give the original away.
            raise EncryptionRequired(f"message {message_id!r} to {peer.bare} was encrypted, so its correction must be too")
        return await self._messages.send(peer, text, encrypted=encrypted, replaces=message_id)
