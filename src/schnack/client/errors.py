"""What the client raises: one class per kind of failure, each with a sentence a user understands."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from ..xmpp import ns
from ..xmpp.errors import StanzaError


class ClientError(Exception):
    """Anything the client could not do; ``str()`` is the whole explanation."""


class ConnectError(ClientError):
    """The server could not be reached, or the connection could not be set up."""


class CertificateError(ConnectError):
    """The server's certificate did not pass verification."""


class AuthenticationError(ClientError):
    """The server refused the login (RFC 6120 §6.5); ``condition`` is the SASL condition."""

    def __init__(self, text: str, condition: str | None = None) -> None:
        super().__init__(text)
        self.condition = condition


class NotConnected(ClientError):
    """The client is not connected (closed, or the link dropped while waiting)."""


class RequestTimeout(ClientError):
    """No answer to a request in time."""


class EncryptionRequired(ClientError):
    """A message would have left unencrypted without the caller asking for that explicitly."""


class XmppError(ClientError):
    """An error reply from the other side (RFC 6120 §8.3): ``condition``, ``type`` and ``text``."""

    def __init__(self, condition: str, text: str | None = None, type: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = type

    @classmethod
    def from_stanza(cls, el: Element) -> XmppError:
        """The error carried by an error stanza (undefined-condition if it carries none)."""
        error = el.find(f"{{{ns.CLIENT}}}error")
        if error is None:
            return cls("undefined-condition")
        parsed = StanzaError.from_xml(error)
        return cls(parsed.condition, parsed.text, parsed.type)
