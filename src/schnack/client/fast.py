"""What the client keeps between logins to come back in one round trip (XEP-0388, XEP-0484, XEP-0509).

The user-agent id names this device to the server (XEP-0388 §2.3): a UUID made once and kept in
the store, so the server keeps the device's token apart and gives it the same resource for the
same tag (XEP-0386).
The FAST token is a secret like the password: with a data directory it is kept where the
password is (system keyring or a 0600 file); without one it lives in memory. The server's
SASL2 features of the last connection are kept too: with them the next login sends its
``<authenticate/>`` right behind the stream header (XEP-0509).
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from xml.etree.ElementTree import Element

from ..xmpp.errors import StreamError
from ..xmpp.jid import JID
from ..xmpp.negotiation import ClientStream, FastToken
from ..xmpp.parser import parse_frame
from ..xmpp.payloads.sasl2 import UserAgent
from ..xmpp.xml import serialize
from .store import Store, StoreError, forget_secret, load_secret, save_secret

log = logging.getLogger(__name__)

TOKEN_SECRET = "fast-token"
_AGENT = "user-agent"
_FEATURES = "sasl2-features"
SOFTWARE = "schnack"


class LoginMemory:
    """The device's user agent, its token and the server's features, for one account."""

    def __init__(self, store: Store, account: JID, *, bind2: bool = True, device: str | None = None) -> None:
        # XEP-0386: the tag names our software in the resource, with a suffix of this client object
        # (as Conversations adds one per installation): the server keeps the resource for the same
        # tag and user agent, so reconnects keep the full JID, while two programs sharing one
        # store (a listener and a `schnack send`) do not take each other's resource. None binds
        # the RFC 6120 way.
        self.tag = f"{SOFTWARE}.{secrets.token_hex(2)}" if bind2 else None
        self._store = store
        self._account = account.bare
        self._directory: Path | None = store.directory
        agent_id = store.setting(_AGENT)
        if agent_id is None:
            agent_id = str(uuid.uuid4())
            store.save_setting(_AGENT, agent_id)
        self.user_agent = UserAgent(agent_id, SOFTWARE, device)
        self._token: FastToken | None = None
        self._features: Element | None = None
        if self._directory is not None:
            self._token = _token_from(load_secret(self._directory, self._account, TOKEN_SECRET))
            self._features = _features_from(store.setting(_FEATURES))

    @property
    def token(self) -> FastToken | None:
        """The token to log in with next, if there is one that has not expired."""
        if self._token is not None and self._token.expiry <= datetime.now(UTC):
            return None
        return self._token

    @property
    def features(self) -> Element | None:
        """The SASL2 features of the last connection, to pipeline the next login with."""
        return self._features

    def learn(self, stream: ClientStream) -> None:
        """Keep what a finished login left: the token (new, counted on, or dropped) and the features."""
        if stream.token != self._token:
            self._token = stream.token
            self._save_token()
        if stream.sasl2_features is not None:
            self._features = stream.sasl2_features
            self._store.save_setting(_FEATURES, serialize(stream.sasl2_features))

    def forget_features(self) -> None:
        """The pipelined login failed: the next one waits for the features again."""
        self._features = None
        self._store.save_setting(_FEATURES, None)

    def _save_token(self) -> None:
        if self._directory is None:
            return
        try:
            if self._token is None:
                forget_secret(self._directory, self._account, TOKEN_SECRET)
            else:
                token = self._token
                save_secret(self._directory, self._account, TOKEN_SECRET, json.dumps({
                    "token": token.token, "mechanism": token.mechanism, "expiry": token.expiry.isoformat(),
                    "count": token.count,
                }))
        except OSError as err:
            raise StoreError(f"cannot keep the login token: {err}") from None


def _token_from(text: str | None) -> FastToken | None:
    if not text:
        return None
    try:
        data = json.loads(text)
        return FastToken(str(data["token"]), str(data["mechanism"]), datetime.fromisoformat(data["expiry"]),
                         int(data["count"]))
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable login token")
        return None


def _features_from(text: str | None) -> Element | None:
    if not text:
        return None
    try:
        return parse_frame(text.encode(), 1 << 20)
    except StreamError:
        return None
