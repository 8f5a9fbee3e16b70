"""schnack's client library: ``async with Client(jid, password) as c:`` and the types it speaks."""

from .client import Client, Connected, ConnectionEvent, Disconnected
from .errors import (
    AuthenticationError,
    CertificateError,
    ClientError,
    ConnectError,
    EncryptionRequired,
    NotConnected,
    RequestTimeout,
    XmppError,
)
from .features.chatstates import ChatStateChange
from .features.messages import Message
from .features.presence import PresenceUpdate
from .features.receipts import Receipt
from .features.roster import Contact

__all__ = [
    "AuthenticationError",
    "CertificateError",
    "ChatStateChange",
    "Client",
    "ClientError",
    "ConnectError",
    "Connected",
    "ConnectionEvent",
    "Contact",
    "Disconnected",
    "EncryptionRequired",
    "Message",
    "NotConnected",
    "PresenceUpdate",
    "Receipt",
    "RequestTimeout",
    "XmppError",
]
