"""XEP-0077: In-Band Registration: create an account before login, change its password, delete it.

Off by default (enable with ``[modules] enable = ["register"]``). A username in E.164 form is
refused: phone numbers are registered by SMS verification (docs/phone.md). Before authentication the
client stream hands this module its IQs (event ``c2s/unauthenticated-iq``); registration is
offered only on encrypted streams (XEP-0077 §10) and limited per address and hour. After login
an account changes its password (§3.3) or deletes itself (§3.2): the server then deletes it
(:meth:`Server.delete_account`, which tells contacts and lets modules drop their data), answers,
and closes every session of the account with the stream error not-authorized.

Error replies leave out the query, which would echo the password (§3.3: "SHOULD NOT return the
original XML").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.dataforms import DataForm, DataFormError, Field
from ...xmpp.payloads.register import FEATURE, QUERY, RegisterQuery
from ...xmpp.phone import is_e164
from ...xmpp.sasl import UNUSABLE_PASSWORD, derive_credentials, usable_password
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element
from ..config import bounded
from ..deletion import DeletionUnderWay
from ..hooks import HANDLED, Handled
from ..module import Module
from ..storage import AlreadyExists
from ..throttle import address_group

if TYPE_CHECKING:
    from ..app import Server
    from ..c2s import C2SStream
    from ..sessions import Session

log = logging.getLogger(__name__)

_HOUR = 3600.0
# Deriving SCRAM keys from a huge password would cost CPU for nothing; no one types this much.
MAX_PASSWORD = 1024
_CHANGE_PASSWORD_FORM = "jabber:iq:register:changepassword"


@dataclass(frozen=True)
class RegisterOptions:
    """Who may create accounts in-band, and how strong their passwords must be."""

    allow_registration: bool = bounded(True, help="let new users create accounts in-band")
    min_password_length: int = bounded(8, min=1, max=MAX_PASSWORD, help="characters")
    max_per_ip_per_hour: int = bounded(5, min=1, help="new accounts from one address per hour")


def password_problem(password: str, min_length: int) -> str | None:
    """What makes ``password`` unfit for an account (too short or long, or one SCRAM's SASLprep
    refuses), or None; every way of setting a password checks it alike."""
    if len(password) < min_length:
        return f"the password needs at least {min_length} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password may have at most {MAX_PASSWORD} characters"
    if not usable_password(password):
        return UNUSABLE_PASSWORD
    return None


def _error(stanza: Stanza, err: StanzaError) -> Element:
    """The error reply without the query, so the password is not sent back."""
    reply = stanza.error(err)
    for child in reply.findall(QUERY):
        reply.remove(child)
    return reply


def _credentials(query: RegisterQuery, form_types: tuple[str, ...]) -> tuple[str | None, str | None]:
    """Username and password, from the data form if one was submitted (§6: it takes precedence)."""
    form = query.form
    if form is None:
        return query.username, query.password
    if form.type != "submit" or form.form_type not in form_types:
        raise StanzaError("bad-request", "submit the registration form")
    return form.value("username"), form.value("password")


def _localpart(username: str, host: str) -> str:
    """The normalized localpart (RFC 7622 §3.3) of ``username`` on ``host``."""
    try:
        jid = JID.parse(username) if "@" in username else JID.parse(f"{username}@{host}")
    except JIDError:
        jid = None
    if jid is None or jid.local is None or jid.resource is not None or jid.domain != host:
        raise StanzaError("not-acceptable", f"{username!r} is not a valid username")
    return jid.local


class Register(Module[RegisterOptions]):
    """Creates, changes and removes accounts in-band (XEP-0077 §3)."""

    name = "register"
    features = (ns.REGISTER,)
    Options = RegisterOptions

    def __init__(self, server: Server, options: RegisterOptions) -> None:
        super().__init__(server, options)
        # Successful registrations per address, oldest first, within the last hour.
        self._recent: dict[str, deque[float]] = {}

    def setup(self) -> None:
        self.hook("stream-features", self.stream_feature)
        self.hook("c2s/unauthenticated-iq", self.unauthenticated_iq)
        for target in ("host", "self"):
            self.iq(target, QUERY, get=self.account_info, set=self.account_change)

    # Before login -----------------------------------------------------------------------------

    def _open_to(self, stream: C2SStream) -> bool:
        return self.options.allow_registration and stream.conn.secure and not stream.authenticated

    async def stream_feature(self, stream: C2SStream) -> Element | None:
        """§8: announce registration to clients that have not logged in."""
        return element(FEATURE) if self._open_to(stream) else None

    async def unauthenticated_iq(self, stream: C2SStream, el: Element) -> Handled | None:
        """Answer a ``jabber:iq:register`` IQ sent before login; anything else is not ours."""
        if len(el) != 1 or el[0].tag != QUERY or el.get("type") not in ("get", "set"):
            return None
        to = el.get("to")
        if to is not None:
            try:
                target = JID.parse(to)
            except JIDError:
                return None
            if target.local is not None or target.resource is not None or target.domain != stream.host:
                return None
        stanza = Stanza(el, None, None)
        try:
            if not stanza.id:
                raise StanzaError("bad-request", "an iq needs an id")
            reply = await self._unauthenticated(stream, stanza)
        except StanzaError as err:
            reply = _error(stanza, err)
        stream.send(reply)
        return HANDLED

    async def _unauthenticated(self, stream: C2SStream, stanza: Stanza) -> Element:
        if not self.options.allow_registration:
            raise StanzaError("service-unavailable", "in-band registration is disabled")
        if not stream.conn.secure:
            raise StanzaError("not-authorized", "register only over an encrypted connection")
        if stanza.type == "get":
            return stanza.result(self._form().to_xml())
        assert stanza.payload is not None and stream.host is not None
        try:
            query = RegisterQuery.from_xml(stanza.payload)
        except DataFormError as err:
            raise StanzaError("bad-request", str(err)) from None
        if query.remove:
            raise StanzaError("unexpected-request", "log in to delete an account")
        username, password = _credentials(query, (ns.REGISTER,))
        if not username or not password:
            raise StanzaError("not-acceptable", "a username and a password are required")
        host = stream.host
        local = _localpart(username, host)
        if is_e164(local):
            # Only the number's owner may have its account (docs/phone.md), module on or off.
            raise StanzaError("not-acceptable", "phone numbers are registered by SMS verification")
        self._check_password(password)
        ip = address_group(stream.conn.peer.rpartition(":")[0] or stream.conn.peer)
        if self._throttled(ip):
            raise StanzaError("resource-constraint", "too many new accounts from your address; try later")
        # Counted before the awaits, or registrations racing from one address would all pass the
        # check above; a registration that fails gives its place back.
        stamp = time.monotonic()
        recent = self._recent.setdefault(ip, deque())
        recent.append(stamp)
        try:
            await self._create(host, local, password)
        except BaseException:
            recent.remove(stamp)
            raise
        log.info("registered %s@%s in-band from %s", local, host, stream.conn.peer)
        return stanza.result()

    async def _create(self, host: str, local: str, password: str) -> None:
        """§3.1: create the account; conflict if the username is taken."""
        credentials = await asyncio.to_thread(derive_credentials, password)
        try:
            await self.server.create_account(host, local, credentials)
        except AlreadyExists:
            raise StanzaError("conflict", "that username is taken") from None
        except DeletionUnderWay:
            raise StanzaError("conflict", "an account of that username is being deleted; try again shortly") from None

    def _form(self) -> RegisterQuery:
        """§3.1 with a §4 form: the legacy fields for old clients, the form for the rest."""
        text = f"Choose a username and a password of at least {self.options.min_password_length} characters."
        form = DataForm(
            type="form",
            title="Create an account",
            instructions=(text,),
            fields=(
                Field("FORM_TYPE", "hidden", values=(ns.REGISTER,)),
                Field("username", "text-single", "Username", required=True),
                Field("password", "text-private", "Password", required=True),
            ),
        )
        return RegisterQuery(instructions=text, username="", password="", form=form)

    def _check_password(self, password: str) -> None:
        problem = password_problem(password, self.options.min_password_length)
        if problem is not None:
            raise StanzaError("not-acceptable", problem)

    def _throttled(self, ip: str) -> bool:
        """Whether ``ip`` used up its registrations for the hour (forgetting older ones)."""
        cutoff = time.monotonic() - _HOUR
        for address in list(self._recent):
            recent = self._recent[address]
            while recent and recent[0] < cutoff:
                recent.popleft()
            if not recent:
                del self._recent[address]
        return len(self._recent.get(ip, ())) >= self.options.max_per_ip_per_hour

    # After login ------------------------------------------------------------------------------

    async def account_info(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.1: a registered entity gets ``<registered/>`` and its username."""
        session = self._own_session(stanza, origin)
        return stanza.result(RegisterQuery(registered=True, username=session.username, password="").to_xml())

    async def account_change(self, stanza: Stanza, origin: Session | None) -> Element | Handled:
        """§3.2 account removal and §3.3 password change."""
        try:
            session = self._own_session(stanza, origin)
            assert stanza.payload is not None
            try:
                query = RegisterQuery.from_xml(stanza.payload)
            except DataFormError as err:
                raise StanzaError("bad-request", str(err)) from None
            if query.remove:
                if len(stanza.payload) != 1:
                    raise StanzaError("bad-request", "<remove/> must be the only child of the query")
                await self._remove(stanza, session)
                return HANDLED
            await self._change_password(query, session)
        except StanzaError as err:
            return _error(stanza, err)
        return stanza.result()

    def _own_session(self, stanza: Stanza, origin: Session | None) -> Session:
        if origin is None:
            raise StanzaError("forbidden", "only the account itself manages its registration")
        if stanza.to is not None and stanza.to.domain != origin.host:
            raise StanzaError("not-allowed", "log in to that domain to manage an account there")
        return origin

    async def _change_password(self, query: RegisterQuery, session: Session) -> None:
        username, password = _credentials(query, (ns.REGISTER, _CHANGE_PASSWORD_FORM))
        if username is None:
            raise StanzaError("bad-request", "include your username")
        if _localpart(username, session.host) != session.username:
            raise StanzaError("forbidden", "you can only change your own password")
        if not session.secure:
            raise StanzaError("not-authorized", "change passwords only over an encrypted connection")
        if not password:
            raise StanzaError("not-acceptable", "the password may not be empty; it was left unchanged")
        self._check_password(password)
        credentials = await asyncio.to_thread(derive_credentials, password)
        await self.server.storage.accounts.set_credentials(session.host, session.username, credentials)
        log.info("%s changed its password in-band", session.jid.bare)

    async def _remove(self, stanza: Stanza, session: Session) -> None:
        host, username = session.host, session.username
        log.info("%s@%s deletes its account in-band", username, host)
        try:
            await self.server.delete_account(host, username)
        except Exception:
            if await self.server.storage.accounts.get(host, username) is not None:
                log.exception("could not delete the account %s@%s", username, host)
                raise StanzaError("internal-server-error", "the account was not deleted; try again") from None
            # Deleted, though a module failed to drop what it keeps elsewhere: the account is gone.
            log.exception("the account %s@%s is deleted, not all that it kept", username, host)
        # §3.2: the result first, then not-authorized on every stream of the account.
        session.send(stanza.result())
        self.server.end_account_sessions(host, username)
