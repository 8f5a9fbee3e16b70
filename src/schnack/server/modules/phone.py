"""Phone-number accounts verified by SMS, with Quicksy's HTTP API (docs/phone.md).

An account named by its number in E.164 form (``+4915123456789@example.org``) is created, or
given a new password, only by proving the number: the server sends a code by SMS, and whoever
sends it back sets the password. This is the API of Quicksy (the phone-number XMPP service that
Conversations' and Monal's Quicksy builds use), under ``/phone`` of the HTTP listeners:

- ``GET /phone/authentication/{number}``: send a fresh 6-digit code to the number. 200 sent;
  400 not a number in E.164 form, or a missing or malformed ``Installation-Id`` (a UUID,
  required so that web pages cannot have their visitors' browsers ask for codes); 429 with
  ``Retry-After`` when a limit was reached; 500 when the SMS gateway failed, 503 with
  ``Retry-After`` when storage did (no SMS is then sent, nothing counted as sent, and a code
  sent before stays pending: the code is stored before its SMS goes out).
- ``POST /phone/password`` with ``Authorization: base64(number "\\0" code)`` (or ``Basic
  base64(number ":" code)``), the ``Installation-Id`` that asked for the code, and the new
  password as the UTF-8 body. 201 the account was created (anew, for a reassigned number:
  below; or by this request sent before, whose node was killed or whose storage failed before
  it answered); 200 the existing account got the new password; 400 malformed (the Installation-Id
  too) or a password the server refuses; 401 a wrong code; 404 no code is pending (never sent,
  used, or expired) or another installation asked for it (so that a stranger's tries neither
  void the owner's code nor tell that one is pending); 429 with ``Retry-After`` when this
  wrong code was the last one allowed, or no try was left (the code is void); 503 with
  ``Retry-After`` when storage failed (the code is used only together with the account's
  change, so the same request made again goes through), or when another request with the
  right code was still at it after ``_WAIT_FOR_USE`` seconds. A request that set the password,
  sent again (its answer was lost) before the code would have expired, gets the same answer;
  only the same number, code, Installation-Id and password do. Sent again while the first is
  still at it (on any node), the right code waits for the first and is then answered as it
  was, spending no try.

Both answer 403 over plain HTTP from anywhere but this machine (a TLS-terminating proxy on it):
codes and passwords travel only encrypted.

**Codes.** Six digits from ``secrets``; only a salted SHA-256 of the code is stored, with one
of the Installation-Id that asked for it and its expiry (``code_lifetime``). Everything lives
in the shared key-value store, so any node of a cluster checks a code another node sent, and
the counts hold across nodes: the i-th try, right or wrong, claims the key
``phone-try/{code id}/{i}`` with ``set_default`` (insert if absent, atomic in both backends)
before the code is compared, so that of tries sent at once only ``code_attempts`` are judged;
a wrong one that claims the last key, or any try that finds none left, voids the code. A right
code is used once (it claims ``phone-used/{code id}`` the same way), and only with the
account's change: when storage fails to make that, the claim and the try's place are given
back. The claim names its node, when that node started (as upload's claims do) and the try's
place: once the cluster knows the node dead (its heartbeat is gone, or it came back as another
process), the app's retry frees both (compare and delete) and makes the change, while a live
node's claim makes it wait (it takes no try's place while it does: with ``code_attempts = 1``
it would find none left). The request that used it is remembered until the code's expiry
under ``phone-done/{number}``, as salted hashes of the code and the Installation-Id only: the
same request sent again is answered alike if its password is the account's (checked against
the account's SCRAM keys), and any other gets 404. Before it creates an account, the request
notes so under ``phone-new/{code id}`` until the code's expiry: a retry that finds that note
and an account with its password (not an old one of a reassigned number, not yet deleted)
knows that its first sending created the account, and answers 201 as that would have. A node
that cannot tell whether the cluster still takes it for alive (the cluster bus's ``is_member``;
cut off from Redis for half of ``node_ttl``), or that came back as another process since it
claimed the use, makes no change under the claim: it gives both back and answers 503.

**Limits.** Per number one code per ``sms_interval`` and ``sms_per_day`` a UTC day, of which
``sms_per_day_per_address`` asked for from any one client address (an IPv6 /64 as one): a
stranger who asks for a number's codes uses up the share of the stranger's address, and the
owner, asking from another, still gets codes, while the SMS a number gets stay bounded by
``sms_per_day`` however many addresses ask. Per ``Installation-Id``
``sms_per_installation_per_day`` (all of these claimed as numbered keys, as the guesses are,
so they hold across nodes), and per client address (an IPv6 /64 as one)
``sms_per_ip_per_hour`` in any hour, claimed the same way, a key claimed over an hour ago being
free again (taken over with ``replace``, compare and set, so that one node wins it). The keys
are indexed in the map ``phone-sweep`` with the time they may go, noted before they are
written, and a sweep every hour deletes those past it, each only as the sweep read it (compare
and delete): a code sent while the sweep runs is not taken for the expired one before it.

**Verified numbers.** The key ``phone`` of the account itself marks its number verified (the
account is named by the number): storage deletes it with the account on every path that
deletes one, and an account made otherwise (``schnack admin user add``) has none.

**A new phone.** Verifying a number whose account exists sets the new password: the old one
no longer works, the account's FAST tokens (XEP-0484) are revoked, and its sessions end
with not-authorized, on every node of a cluster (each node ends those that logged in with
other credentials than the stored ones).

**A reassigned number.** Carriers give numbers that were given up to new customers. As Quicksy
does, an account with no session on any node whose last activity (the end of its last session,
when the server let it go if it hibernated, or the start of a later one whose end a killed
server did not record, kept by the module ``last``, XEP-0012) is more than ``reassign_after``
days ago is taken for one whose number has a new owner: verifying the number deletes it as
``schnack admin user delete`` and in-band cancellation do (:meth:`Server.delete_account`:
roster, archive, vCard, PEP, everything) and creates it anew, 201. An account with no recorded
end counts as active since it was created or since the server began to record ends, whichever
is later; with ``reassign_after = 0`` or the module ``last`` off, the account is always kept
and re-keyed.

**Contact discovery** (Quicksy's ``im.quicksy.synchronization:0``). A user of the server sends
the numbers of its address book in an IQ get to its own domain; the result names the account of
each number that is verified here, and when its hash equals the ``ver`` the client sent, the
result is empty. An account may look up ``discovery_limit`` distinct numbers a UTC day (kept as
hashes in its map ``phone-book`` until the sweep after the day, which the index ``phone-sweep``
names it to); more get policy-violation saying when to try again. The
domain's disco#info shows the feature.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID
from ...xmpp.payloads.phone_book import NS, PHONE_BOOK, Entry, PhoneBook, PhoneBookError, answer_hash
from ...xmpp.phone import PhoneNumberError, is_e164, normalize
from ...xmpp.sasl import derive_credentials, password_matches
from ...xmpp.stanza import Stanza
from .. import websocket
from ..background import Background
from ..cluster.claims import claim_notes, claimant_lives, node_claim, still_mine
from ..config import ConfigError, bounded
from ..locks import AccountLocks
from ..module import Module
from ..sasl2 import LoginKeys, fingerprint
from ..sms import KINDS, CommandGateway, Gateway, HttpGateway, LogGateway, SmsError
from ..storage import Account, AlreadyExists, StorageError
from ..throttle import address_group
from .fast import FastTokens
from .last import LastActivity
from .register import MAX_PASSWORD, password_problem

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from ..app import Server
    from ..sessions import Session

log = logging.getLogger(__name__)

PREFIX = "/phone"
# kv (host, number, STORE): the account's number is verified.
STORE = "phone"
# maps (host, username, BOOK): a hash of a number the account looked up -> the UTC day it did.
BOOK = "phone-book"
# maps (host, "", SWEEP): a key of the kv store (user "") -> when it may be deleted; or
# BOOK + "/" + an account's bare JID -> when the numbers it looked up may be forgotten.
SWEEP = "phone-sweep"
DAY = 86_400.0
_HOUR = 3600.0
_SWEEP_INTERVAL = _HOUR
_CODE_DIGITS = 6
# Seconds an app is asked to wait before sending a password again that was not set (storage
# failed, or another request with the code was still at it).
_AGAIN_AFTER = 3.0
# Seconds a request with a code waits for another one using the code (the same request, whose
# app sent it again) before it is told to come again; and between two looks at it.
_WAIT_FOR_USE = 10.0
_LOOK_AGAIN = 0.2
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A body declared longer than any password the server takes is refused unread.
_MAX_BODY = MAX_PASSWORD * 4


@dataclass(frozen=True)
class PhoneOptions:
    """The host, the SMS gateway, the text, and the limits on codes and discovery."""

    host: str = bounded("", help="the domain phone-number accounts live on; default: the first domain")
    sms: str = bounded("", choices=("", *KINDS), help="the SMS gateway: log, http or command (required)")
    sms_url: str = bounded("", help="http: the webhook URL")
    sms_token: str = bounded("", help="http: sent as Authorization: Bearer <token>")
    sms_command: list[str] = bounded([], help="command: program and arguments; {number} and {text} are replaced")
    sms_timeout: float = bounded(10.0, min=0.1, max=600, help="seconds the gateway may take")
    sms_text: str = bounded("{code} is your code for {domain}. Do not share it.", help="must contain {code}")
    code_lifetime: float = bounded(600.0, min=1, max=DAY, help="seconds a code stays valid")
    code_attempts: int = bounded(3, min=1, max=100, help="wrong codes before the code is void")
    sms_interval: float = bounded(60.0, min=0, max=DAY, help="seconds between two codes to one number")
    sms_per_day: int = bounded(5, min=1, max=1000, help="codes to one number per UTC day, from all addresses together")
    sms_per_day_per_address: int = bounded(2, min=1, max=1000,
                                           help="codes to one number per UTC day asked for from one address")
    sms_per_ip_per_hour: int = bounded(20, min=1, help="codes asked for from one address per hour")
    sms_per_installation_per_day: int = bounded(5, min=1, help="codes asked for by one Installation-Id per UTC day")
    min_password_length: int = bounded(8, min=1, max=MAX_PASSWORD, help="characters")
    discovery_limit: int = bounded(2048, min=1, help="distinct numbers an account may look up per UTC day")
    reassign_after: int = bounded(28, min=0, max=36500,
                                  help="days without a session after which the number's account goes to its new owner; 0: never")


class _Refused(Exception):
    """An HTTP answer other than success: status, a line saying why, and Retry-After if any."""

    def __init__(self, status: int, text: str, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.retry_after = retry_after

    def response(self) -> web.Response:
        headers = {"Retry-After": str(max(1, math.ceil(self.retry_after)))} if self.retry_after is not None else {}
        return web.Response(status=self.status, text=self.text + "\n", headers=headers)


@dataclass(frozen=True)
class _Code:
    """A code sent and not yet used: its id, the salted hashes of its digits and of the
    Installation-Id that asked for it, and its expiry."""

    id: str
    salt: str
    digest: str
    expires: float
    asker: str

    @classmethod
    def make(cls, digits: str, installation: str, expires: float) -> _Code:
        salt = secrets.token_hex(16)
        return cls(secrets.token_urlsafe(12), salt, _digest(salt, digits), expires, _digest(salt, installation))

    def matches(self, digits: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(self.salt, digits))

    def asked_by(self, installation: str) -> bool:
        return hmac.compare_digest(self.asker, _digest(self.salt, installation))

    def dump(self) -> bytes:
        return json.dumps([self.id, self.salt, self.digest, self.expires, self.asker]).encode()

    @classmethod
    def load(cls, raw: bytes) -> _Code:
        # A code stored by a version that kept no asker is asked by none: its owner asks anew.
        code_id, salt, digest, expires, *asker = json.loads(raw)
        return cls(code_id, salt, digest, expires, asker[0] if asker else "")


def _reverified() -> StreamError:
    return StreamError("not-authorized", "the number was verified again (a new phone): log in with the new password")


async def _has_password(account: Account | None, password: str) -> bool:
    """Whether ``account`` exists and has ``password`` (checked against its SCRAM keys)."""
    credential = account.credentials.get("SHA-256") if account is not None else None
    return credential is not None and await asyncio.to_thread(password_matches, password, credential)


def _digest(salt: str, digits: str) -> str:
    return hashlib.sha256(f"{salt}:{digits}".encode()).hexdigest()


def _code_key(number: str) -> str:
    return f"phone-code/{number}"


def _done_key(number: str) -> str:
    return f"phone-done/{number}"


def _created_key(code: _Code) -> str:
    return f"phone-new/{code.id}"


def _installation(request: web.Request) -> str:
    """The request's ``Installation-Id``, in lower case; _Refused 400 unless it is a UUID.

    Required with each request: a web page can make its visitors' browsers send the GET for a
    code (an image, a prefetched link), but not with a header of its own without a CORS
    preflight, which this server never grants, so pages cannot have SMS sent to a victim; and a
    code is tried only by the installation that asked for it.
    """
    installation = request.headers.get("Installation-Id")
    if installation is None:
        raise _Refused(400, "the Installation-Id header (a UUID the app keeps per installation) is required")
    if not _UUID.fullmatch(installation):
        raise _Refused(400, "Installation-Id must be a UUID")
    return installation.lower()


def gateway(options: PhoneOptions) -> Gateway:
    """The gateway ``options`` choose; ConfigError naming the option that is missing or wrong."""
    if options.sms == "log":
        return LogGateway()
    if options.sms == "http":
        if not re.match(r"https?://[^/\s]+", options.sms_url):
            raise ConfigError("modules.phone.sms_url", f'sms = "http" needs an http:// or https:// URL, got {options.sms_url!r}')
        return HttpGateway(options.sms_url, options.sms_token, options.sms_timeout)
    if options.sms == "command":
        if not options.sms_command or not options.sms_command[0]:
            raise ConfigError("modules.phone.sms_command", 'sms = "command" needs the program and its arguments')
        return CommandGateway(options.sms_command, options.sms_timeout)
    raise ConfigError("modules.phone.sms", f"choose how codes are sent: one of {', '.join(KINDS)}")


def parse_authorization(header: str) -> tuple[str, str]:
    """Number and code from Quicksy's ``base64(number "\\0" code)`` (a leading NUL, as SASL
    PLAIN writes it, is allowed) or from ``Basic base64(number ":" code)``."""
    scheme, _, rest = header.strip().partition(" ")
    basic = scheme.lower() == "basic" and rest
    try:
        text = base64.b64decode((rest if basic else header).strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _Refused(400, "the Authorization header is not base64 of the number and the code") from None
    number, sep, code = text.rpartition(":" if basic else "\0")
    number = number.removeprefix("\0")
    if not sep or not is_e164(number):
        raise _Refused(400, "the Authorization header must hold the number in E.164 form and the code")
    if not re.fullmatch(f"[0-9]{{{_CODE_DIGITS}}}", code):
        raise _Refused(400, f"the code has {_CODE_DIGITS} digits")
    return number, code


class Phone(Module[PhoneOptions]):
    """SMS verification of phone-number accounts over HTTP (Quicksy's API)."""

    name = "phone"
    features = (NS,)
    Options = PhoneOptions

    def __init__(self, server: Server, options: PhoneOptions) -> None:
        super().__init__(server, options)
        domains = server.config.domains
        if options.host and options.host not in domains:
            raise ConfigError("modules.phone.host", f"{options.host!r} is not one of the server's domains ({', '.join(domains)})")
        self.host = options.host or domains[0]
        if "{code}" not in options.sms_text:
            raise ConfigError("modules.phone.sms_text", f"must contain {{code}}, got {options.sms_text!r}")
        self.gateway = gateway(options)
        self._sweeper: asyncio.Task[None] | None = None

    def announcement(self) -> str:
        """One line for the start-up summary: where phones sign up, and how codes are sent."""
        domain = self.server.config.domains[0]
        urls = [f"{scheme}://{domain}:{addrs[0][1]}{PREFIX}" for scheme in ("https", "http")
                if (addrs := self.server.bound.get(scheme))]  # fmt: skip
        where = urls[0] if urls else "no HTTP listener (listen.http or listen.https) to serve it on"
        sent = "in this log, for trying out" if self.options.sms == "log" else f"by {self.options.sms}"
        return f"{where} (accounts at {self.host}; codes sent {sent})"

    def setup(self) -> None:
        bus = self.server.cluster.bus
        self._locks = AccountLocks(bus, "phone")
        self._book_locks = AccountLocks(bus, "phone-book")
        self._ending = Background(log, "ending the sessions of a re-verified account failed")
        self._last = self.optional(LastActivity)
        bus.on_changed(self._changed_elsewhere)
        # Last of the handlers: nothing waits between its look at the keys and the session's
        # registration, so that a re-verification after that look finds the session.
        self.hook("session-bound", self.bound, priority=-100)
        self.iq("host", PHONE_BOOK, get=self.phone_book)
        router = self.server.http_app.router
        # A HEAD would send an SMS as the GET does, and a link checker or preview fetcher sends those.
        router.add_get(PREFIX + "/authentication/{number}", self.authentication, allow_head=False)
        router.add_post(PREFIX + "/password", self.password)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_periodically())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self._ending.stop()

    # --- HTTP ------------------------------------------------------------------------------

    async def authentication(self, request: web.Request) -> web.Response:
        """``GET /phone/authentication/{number}``: send a code (see the module's docstring)."""
        try:
            self._only_secure(request)
            number = request.match_info["number"]
            try:
                valid = normalize(number) == number
            except PhoneNumberError as err:
                raise _Refused(400, str(err)) from None
            if not valid:
                raise _Refused(400, f"{number!r} is not in E.164 form (+ and the digits of the number)")
            await self.send_code(number, address_group(request.remote or "?"), _installation(request))
        except _Refused as refused:
            return refused.response()
        except StorageError as err:
            log.error("a code for %s was not sent, as storage failed: %s", request.match_info["number"], err)
            return _Refused(503, "the code could not be recorded just now, and none was sent: ask again shortly",
                            _AGAIN_AFTER).response()
        return web.Response(text="the code was sent\n")

    async def password(self, request: web.Request) -> web.Response:
        """``POST /phone/password``: set the password with a code (see the module's docstring)."""
        try:
            self._only_secure(request)
            header = request.headers.get("Authorization")
            if header is None:
                raise _Refused(400, "the number and the code go in the Authorization header")
            number, digits = parse_authorization(header)
            installation = _installation(request)
            if (request.content_length or 0) > _MAX_BODY:
                raise _Refused(400, f"the password may have at most {MAX_PASSWORD} characters")
            body = await request.read()
            try:
                password = body.decode()
            except UnicodeDecodeError:
                raise _Refused(400, "the password must be UTF-8 text") from None
            problem = password_problem(password, self.options.min_password_length)
            if problem is not None:
                raise _Refused(400, problem)
            created = await self.verify(number, digits, password, installation)
        except _Refused as refused:
            return refused.response()
        except StorageError as err:
            log.error("a password sent with a code was not set: %s", err)
            return _Refused(503, "the account could not be saved just now: send the same request again shortly",
                            _AGAIN_AFTER).response()
        if created:
            return web.Response(status=201, text="the account was created\n")
        return web.Response(text="the password was changed\n")

    def _only_secure(self, request: web.Request) -> None:
        if not websocket.secure(request):
            raise _Refused(403, "use HTTPS: codes and passwords are not sent in the clear")

    # --- codes -----------------------------------------------------------------------------

    async def send_code(self, number: str, address: str, installation: str) -> None:
        """Send a new code to ``number`` unless a limit says no (_Refused 429), replacing any code
        sent before; a gateway failure is _Refused 500, a StorageError passes, and either way no
        SMS was sent, nothing counts as sent and the code before stays pending."""
        now = time.time()
        day = int(now // DAY)
        next_day = (day + 1) * DAY
        kv = self.server.storage.kv
        claimed: list[str] = []
        try:
            key, taken = await self._claim(f"phone-address/{address}", self.options.sms_per_ip_per_hour, now,
                                           now + _HOUR, window=_HOUR)
            if key is None:
                raise _Refused(429, "too many codes asked for from your address", min(taken) + _HOUR - now)
            claimed.append(key)
            key, _ = await self._claim(f"phone-installation/{installation}/{day}",
                                       self.options.sms_per_installation_per_day, now, next_day)
            if key is None:
                raise _Refused(429, "this installation asked for too many codes today", next_day - now)
            claimed.append(key)
            # Each address has its share of the number's codes, so that a stranger asking for
            # them from one address cannot use up the day's codes of the owner, who asks from
            # another (docstring, "Limits").
            key, _ = await self._claim(f"phone-share/{number}/{address}/{day}",
                                       self.options.sms_per_day_per_address, now, next_day)
            if key is None:
                raise _Refused(429, "too many codes for this number from your address today", next_day - now)
            claimed.append(key)
            await self._claim_sms(number, now, claimed)
            digits = f"{secrets.randbelow(10**_CODE_DIGITS):0{_CODE_DIGITS}d}"
            code = _Code.make(digits, installation, now + self.options.code_lifetime).dump()
            # The code is stored before the SMS goes out: an SMS whose code storage then failed
            # to keep would be a code that cannot work, and would still count against the limits.
            before = await kv.get(self.host, "", _code_key(number))
            await self._sweep_later(_code_key(number), now + self.options.code_lifetime)
            await kv.set(self.host, "", _code_key(number), code)
            text = self.options.sms_text.replace("{code}", digits).replace("{domain}", self.host)
            try:
                await self.gateway.send(number, text)
            except SmsError as err:
                log.error("the SMS with a code for %s was not sent: %s", number, err)
                await self._unstore(number, code, before)
                raise _Refused(500, "the SMS could not be sent; try again later") from None
        except BaseException:
            await self._give_back_claims(claimed)
            raise
        log.info("sent a code to %s", number)

    async def _unstore(self, number: str, code: bytes, before: bytes | None) -> None:
        """Put the number's code ``before`` (None: none) back in the place of ``code``, whose SMS
        was not sent, unless a newer one took it meanwhile."""
        kv = self.server.storage.kv
        try:
            if before is None:
                await kv.delete_if(self.host, "", _code_key(number), code)
            else:
                await kv.replace(self.host, "", _code_key(number), code, before)
        except StorageError as err:
            log.error("a code for %s whose SMS was not sent stays stored (no one knows it): %s", number, err)

    async def _give_back_claims(self, claimed: list[str]) -> None:
        """Free the limits' keys claimed for a code that was not sent."""
        for key in claimed:
            try:
                await self.server.storage.kv.delete(self.host, "", key)
            except StorageError as err:
                log.error("a claim for a code that was not sent stays counted until it expires: %s", err)

    async def _claim_sms(self, number: str, now: float, claimed: list[str]) -> None:
        """Claim one of the number's SMS of the day, ``sms_interval`` after the one before."""
        day = int(now // DAY)
        next_day = (day + 1) * DAY
        interval = self.options.sms_interval
        last = max(await self._sent(number, day - 1), default=0.0) if now - day * DAY < interval else 0.0
        last = max([last, *await self._sent(number, day)])
        if now - last < interval:
            raise _Refused(429, "a code was sent to this number just now", interval - (now - last))
        key, taken = await self._claim(f"phone-sms/{number}/{day}", self.options.sms_per_day, now, next_day + DAY)
        if key is None:
            raise _Refused(429, "too many codes for this number today", next_day - now)
        claimed.append(key)
        # Another node sent one meanwhile: the claim is given back.
        recent = [stamp for stamp in taken if now - stamp < interval]
        if recent:
            raise _Refused(429, "a code was sent to this number just now", interval - (now - max(recent)))

    async def _sent(self, number: str, day: int) -> list[float]:
        """When the number's codes of ``day`` were sent."""
        kv = self.server.storage.kv
        stamps = []
        for i in range(self.options.sms_per_day):
            raw = await kv.get(self.host, "", f"phone-sms/{number}/{day}/{i}")
            if raw is not None:
                stamps.append(float(raw.split()[0]))
        return stamps

    async def _claim(self, prefix: str, limit: int, now: float, keep_until: float,
                     window: float | None = None) -> tuple[str | None, list[float]]:
        """Claim the first free key of ``prefix/0`` to ``prefix/{limit-1}`` (set_default: of
        nodes claiming at once, one wins each key); with ``window``, a key claimed longer ago than
        that is free too, and taken over with replace (one node wins it as well). The key
        claimed, or None when all were taken, and when the keys taken before it were claimed."""
        kv = self.server.storage.kv
        mine = f"{now!r} {secrets.token_hex(8)}".encode()
        taken: list[float] = []
        for i in range(limit):
            key = f"{prefix}/{i}"
            stored = await kv.get(self.host, "", key)
            while stored is None or (window is not None and now - float(stored.split()[0]) > window):
                await self._sweep_later(key, keep_until)
                if stored is None:
                    stored = await kv.set_default(self.host, "", key, mine)
                    if stored == mine:
                        return key, taken
                elif await kv.replace(self.host, "", key, stored, mine):
                    return key, taken
                else:
                    # Taken over by another node, or deleted by the sweep: looked at anew.
                    stored = await kv.get(self.host, "", key)
            taken.append(float(stored.split()[0]))
        return None, taken

    async def verify(self, number: str, digits: str, password: str, installation: str) -> bool:
        """Check the code ``installation`` asked for and set the password; True if the account
        was created. _Refused 404 without a pending code (also one another installation asked
        for), 401 for a wrong one, 429 for the last wrong one allowed. A request that set the
        password, sent again while its code would still be valid, is answered as it was
        (:meth:`_answered`); sent again while the first is still at it (the app's connection
        dropped, or it gave up waiting), it waits for the first's answer without spending a
        try, and is told 503 to come again if that takes over ``_WAIT_FOR_USE`` seconds."""
        deadline = time.monotonic() + _WAIT_FOR_USE
        waiting = False
        while True:
            patient = time.monotonic() < deadline
            created = await self._try_code(number, digits, password, installation, patient)
            if created is not None:
                return created
            if not patient:
                raise _Refused(503, "this code is being used by another request: send the request again shortly",
                               _AGAIN_AFTER)
            if not waiting:
                log.info("a request with the code for %s waits for the request using it", number)
                waiting = True
            await asyncio.sleep(_LOOK_AGAIN)

    async def _try_code(self, number: str, digits: str, password: str, installation: str, patient: bool) -> bool | None:
        """One go of :meth:`verify`: None when another request is using the right code, to be
        waited for and looked at again; ``patient`` False once waiting is over, when a right try
        that finds every try's place taken voids the code as a wrong one does."""
        kv = self.server.storage.kv
        answered = await self._answered(number, digits, password, installation)
        if answered is not None:
            return answered
        raw = await kv.get(self.host, "", _code_key(number))
        # A try from another installation than the one that asked counts nothing, and learns
        # nothing: counted, a stranger's wrong tries would void each code the number's owner
        # asks for and keep them from signing up.
        if raw is None or (code := _Code.load(raw)).expires <= time.time() or not code.asked_by(installation):
            raise _Refused(404, "no code is pending for this number: ask for a new one")
        used = f"phone-used/{code.id}"
        await self._free_if_dead(used)
        # The right code, which another request is using: as a rule the same request, sent
        # again by the app that asked (only its installation gets here) while the first is at
        # it. It takes no try's place, or with code_attempts = 1 it would find none and void the
        # code; and it learns from waiting only what the request using the code knew.
        right = code.matches(digits)
        if right and await kv.get(self.host, "", used) is not None:
            return None
        # Every try claims its place before the digits are compared: of guesses sent at once,
        # only the first code_attempts are judged, the right digits among them or not.
        attempts = self.options.code_attempts
        key, _ = await self._claim(f"phone-try/{code.id}", attempts, time.time(), code.expires)
        if key is None:
            if right and patient:
                # One of the places may be the first sending's of this request, which has not
                # claimed the code's use yet: looked at again once the tries were judged.
                return None
            await self._void(number, raw)
            raise _Refused(429, "too many tries for this code: ask for a new one", await self._wait_for_sms(number))
        if not right:
            left = attempts - 1 - int(key.rpartition("/")[2])
            if left:
                raise _Refused(401, f"wrong code; {left} more {'try' if left == 1 else 'tries'} for this one")
            await self._void(number, raw)
            raise _Refused(429, "wrong code, and too many of them: ask for a new one", await self._wait_for_sms(number))
        # The use names this node and the try's place: a node that dies in the middle of the
        # account's change leaves both to be freed (_free_if_dead).
        mine = node_claim(self.server.cluster.bus, key)
        await self._sweep_later(used, code.expires)
        if await kv.set_default(self.host, "", used, mine) != mine:
            # Another request with the code claimed its use first: this try's place is given
            # back, as the try decided nothing, and that request is waited for.
            await kv.delete(self.host, "", key)
            return None
        if not still_mine(self.server.cluster.bus, mine):
            # Cut off from the cluster, this node may be declared dead while it changes the
            # account, and the app's retry on another node make the change beside it.
            await self._give_back(used, mine, key)
            raise _Refused(503, "this server is cut off from its cluster: send the request again shortly",
                           _AGAIN_AFTER)
        try:
            created = await self._assign(number, password, code)
            await self._note_answer(number, digits, installation, code.expires, created)
        except StorageError:
            # The account was not changed, so neither is the code used: the same request, made
            # again once storage works, goes through, and no new SMS is needed.
            await self._give_back(used, mine, key)
            raise
        await self._void(number, raw)
        return created

    async def _free_if_dead(self, used: str) -> None:
        """Free the code's use (``used``) and the place of the try that claimed it when that
        try's node is dead, as a right try whose change failed gives both back: the node died in
        the middle of the account's change, made or not, and the next right try makes it, to
        the same end. Compare and delete: a claim made anew meanwhile stays."""
        kv = self.server.storage.kv
        held = await kv.get(self.host, "", used)
        if held is None or await claimant_lives(self.server.cluster.bus, held):
            return
        if await kv.delete_if(self.host, "", used, held):
            log.info("freed the use of a code whose request's node is dead (%s)", used)
            for tried in claim_notes(held):
                await kv.delete(self.host, "", tried)

    async def _note_answer(self, number: str, digits: str, installation: str, until: float, created: bool) -> None:
        """Keep, until ``until``, salted hashes of the code and the installation that set the
        number's password, and whether that created the account (for :meth:`_answered`)."""
        done = _Code.make(digits, installation, until)
        await self._sweep_later(_done_key(number), until)
        await self.server.storage.kv.set(self.host, "", _done_key(number),
                                         json.dumps([done.salt, done.digest, done.asker, until, created]).encode())

    async def _answered(self, number: str, digits: str, password: str, installation: str) -> bool | None:
        """Whether the account was created, if this request (number, code, installation and
        password) set the account's password before, up to the code's expiry: an app whose
        answer was lost sends it again. The password is checked against the account's keys,
        so nothing else of it is kept, and a password changed since answers nothing."""
        raw = await self.server.storage.kv.get(self.host, "", _done_key(number))
        if raw is None:
            return None
        salt, digest, asker, until, created = json.loads(raw)
        done = _Code("", salt, digest, until, asker)
        if until <= time.time() or not (done.asked_by(installation) and done.matches(digits)):
            return None
        if not await _has_password(await self.server.storage.accounts.get(self.host, number), password):
            return None
        return bool(created)

    async def _give_back(self, used: str, mine: bytes, tried: str) -> None:
        """Undo the claims of a right try whose account change failed: the code's use
        (``used``, claimed as ``mine``) and the try's place (``tried``)."""
        kv = self.server.storage.kv
        try:
            await kv.delete_if(self.host, "", used, mine)
            await kv.delete(self.host, "", tried)
        except StorageError as err:
            log.error("a code whose account change failed could not be given back, and stays used: %s", err)

    async def _void(self, number: str, raw: bytes) -> None:
        """Forget the number's code stored as ``raw`` unless a newer one took its place (compare
        and delete: one sent at any time after ``raw`` was read stays)."""
        await self.server.storage.kv.delete_if(self.host, "", _code_key(number), raw)

    async def _wait_for_sms(self, number: str) -> float:
        """Seconds until the number may get a new code (at least the interval's rest)."""
        now = time.time()
        last = max(await self._sent(number, int(now // DAY)), default=0.0)
        return max(1.0, self.options.sms_interval - (now - last))

    # --- accounts --------------------------------------------------------------------------

    async def _assign(self, number: str, password: str, code: _Code) -> bool:
        """Create the number's account with ``password``, or one anew in place of an account
        unused for long (a reassigned number), or give the existing one the new password; in
        each case mark the number verified. True if created, also by this request sent before
        with ``code`` (:meth:`_created_with`).

        Whether the account was created is told by the answer, 201 or 200, and an app sets up
        a created one (its keys, its roster): so before one is created, that the request with
        ``code`` creates it is noted, until the code's expiry. Its node killed after creating it
        and before answering, the app's retry finds that note and the account with its
        password, and is told 201 as the first would have been."""
        host = self.host
        account = JID(number, host)
        credentials = await asyncio.to_thread(derive_credentials, password)
        accounts = self.server.storage.accounts
        kv = self.server.storage.kv
        async with self._locks.hold(account):
            stored = await accounts.get(host, number)
            if stored is not None and await self._created_with(code, stored, password):
                outcome = "created before"
            elif stored is None or await self._given_up(account):
                outcome = "created" if stored is None else "reassigned"
                await self._sweep_later(_created_key(code), code.expires)
                await kv.set(host, "", _created_key(code), repr(time.time()).encode())
                if stored is not None:
                    await self.server.delete_account(host, number)
                try:
                    await self.server.create_account(host, number, credentials)
                except AlreadyExists:
                    # Made meanwhile, not by this module (schnack admin user add): this request
                    # re-keys it, and the note goes, as it did not create it.
                    outcome = "re-keyed"
                    await kv.delete(host, "", _created_key(code))
                    await accounts.set_credentials(host, number, credentials)
            else:
                outcome = "re-keyed"
                await accounts.set_credentials(host, number, credentials)
            await kv.set(host, number, STORE, json.dumps({"verified": time.time()}).encode())
        if outcome == "created":
            log.info("created %s@%s, verified by SMS", number, host)
            return True
        if outcome == "created before":
            log.info("%s@%s was created by the same request sent before, which was not answered", number, host)
        elif outcome == "reassigned":
            log.info("%s@%s was unused for over %d days: deleted, and created anew for the number's new owner",
                     number, host, self.options.reassign_after)
        else:
            log.info("%s@%s was verified again by SMS: its password changed, its sessions end", number, host)
            fast = self.optional(FastTokens)
            if fast is not None:
                await fast.revoke(host, number, None)
        # The old owner's sessions end, on every node: with a reassigned number, one that logged
        # in while the account was being checked (also when the node that created it anew died
        # before it got here).
        await self._end_outdated(account)
        await self.server.cluster.bus.announce(STORE, f"{number}@{host}")
        return outcome != "re-keyed"

    async def _created_with(self, code: _Code, stored: Account, password: str) -> bool:
        """Whether a request with ``code`` created the ``stored`` account: it noted that it would
        (:meth:`_assign`), and the account has this request's password, so it is neither the old
        one of a reassigned number that request was to delete first nor one made otherwise."""
        if await self.server.storage.kv.get(self.host, "", _created_key(code)) is None:
            return False
        return await _has_password(stored, password)

    async def _given_up(self, account: JID) -> bool:
        """Whether the existing ``account`` looks given up with its number: no session on any
        node, and none ended in the last ``reassign_after`` days (docstring, "A reassigned number")."""
        days = self.options.reassign_after
        if not days or self._last is None or await self._last.connected(account):
            return False
        assert account.local is not None
        stored = await self.server.storage.accounts.get(account.domain, account.local)
        return stored is not None and time.time() - await self._last.idle_since(stored) > days * DAY

    async def bound(self, session: Session) -> None:
        """End a session that logged in with keys the account no longer has: the number was
        verified again between its login and its binding, before it could be found to end."""
        if session.host != self.host or not is_e164(session.username):
            return
        account = await self.server.storage.accounts.get(session.host, session.username)
        if account is None or session.slot(LoginKeys).keys != fingerprint(account.credentials):
            # At once: the client may have sent stanzas behind its bind request, and none of
            # them is to be handled.
            session.close(_reverified())

    def _changed_elsewhere(self, store: str, account: str) -> None:
        """Another node re-verified an account: its sessions here that logged in before end too."""
        if store == STORE:
            self._ending.spawn(self._end_outdated(JID.parse(account)))

    async def _end_outdated(self, account: JID) -> None:
        """End the account's sessions that logged in with other keys than the stored ones."""
        assert account.local is not None
        stored = await self.server.storage.accounts.get(account.domain, account.local)
        current = fingerprint(stored.credentials) if stored is not None else None
        # The sessions as they are once the keys were read: one registered meanwhile, having
        # read the old keys in bound, is among them.
        for session in self.server.sessions.resources(account):
            if session.slot(LoginKeys).keys != current:
                session.close(_reverified())

    # --- contact discovery -----------------------------------------------------------------

    async def phone_book(self, stanza: Stanza, origin: Session | None) -> Element:
        """Quicksy's phone book: the verified accounts among the numbers sent, or nothing new."""
        if origin is None:
            raise StanzaError("not-authorized", "contact discovery is for this server's own users")
        if stanza.to is not None and stanza.to.domain != origin.host:
            raise StanzaError("forbidden", "ask the domain of your own account")
        assert stanza.payload is not None
        try:
            book = PhoneBook.from_xml(stanza.payload)
        except PhoneBookError as err:
            raise StanzaError(err.condition, err.text) from None
        numbers = list(dict.fromkeys(book.numbers))
        await self._count_lookups(origin.jid.bare, numbers)
        kv = self.server.storage.kv
        entries = [Entry(number, (JID(number, self.host),)) for number in numbers
                   if await kv.get(self.host, number, STORE) is not None]
        ver = answer_hash(entries)
        if ver == book.ver:
            return stanza.result()
        return stanza.result(PhoneBook(tuple(entries), ver).to_xml())

    async def _count_lookups(self, account: JID, numbers: list[str]) -> None:
        """Count the numbers ``account`` looks up today, or policy-violation past the limit."""
        assert account.local is not None
        now = time.time()
        day = int(now // DAY)
        today = str(day).encode()
        maps = self.server.storage.maps
        # Hashed with the account and the day: the server keeps no address book in plain text.
        hashed = {hashlib.sha256(f"{account}\0{day}\0{number}".encode()).hexdigest()[:24] for number in numbers}
        async with self._book_locks.hold(account):
            known = await maps.items(account.domain, account.local, BOOK)
            seen = {key for key, value in known.items() if value == today}
            new = hashed - seen
            limit = self.options.discovery_limit
            if len(seen) + len(new) > limit:
                wait = math.ceil((day + 1) * DAY - now)
                raise StanzaError("policy-violation", f"at most {limit} numbers a day may be looked up; try again in {wait} s")
            changes: dict[str, bytes | None] = {key: None for key in known.keys() - seen}
            changes.update(dict.fromkeys(new, today))
            if changes:
                # Forgotten after the day, also if the account looks nothing up any more.
                await self._sweep_later(f"{BOOK}/{account}", (day + 1) * DAY)
                await maps.set_many(account.domain, account.local, BOOK, changes)

    async def _forget_lookups(self, key: str, now: float) -> None:
        """Forget what the account of the sweep's ``key`` looked up before the day of ``now``."""
        account = JID.parse(key.removeprefix(f"{BOOK}/"))
        assert account.local is not None
        day = int(now // DAY)
        maps = self.server.storage.maps
        async with self._book_locks.hold(account):
            known = await maps.items(account.domain, account.local, BOOK)
            stale: dict[str, bytes | None] = {name: None for name, value in known.items() if value != str(day).encode()}
            if stale:
                await maps.set_many(account.domain, account.local, BOOK, stale)
            if len(stale) < len(known):
                # Looked up again on this day, after the sweep read the index: forgotten after it.
                await self._sweep_later(key, (day + 1) * DAY)
            else:
                await maps.set(self.host, "", SWEEP, key, None)

    # --- expiry ----------------------------------------------------------------------------

    async def _sweep_later(self, key: str, when: float) -> None:
        """Note that ``key`` of the kv store, or the lookups ``BOOK/{account}``, may go at
        ``when`` (before it is written, so that nothing is written that the sweep does not know of)."""
        await self.server.storage.maps.set(self.host, "", SWEEP, key, repr(when).encode())

    async def _sweep_periodically(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("deleting expired phone verification data failed")
            await asyncio.sleep(_SWEEP_INTERVAL)

    async def sweep(self, now: float | None = None) -> int:
        """Delete the codes, guesses and counts, and forget the numbers looked up, that are
        past their time; how many keys went."""
        now = time.time() if now is None else now
        gone = 0
        for key, noted in (await self.due(now)).items():
            gone += await self.expire(key, noted, now)
        return gone

    async def due(self, now: float) -> dict[str, bytes]:
        """The keys of the index ``phone-sweep`` that may go at ``now``, with the time noted for each."""
        return {key: noted for key, noted in (await self.server.storage.maps.items(self.host, "", SWEEP)).items()
                if float(noted) <= now}

    async def expire(self, key: str, noted: bytes, now: float) -> bool:
        """Delete ``key``, found :meth:`due` with the time ``noted``, unless it was written anew
        since; whether it went.

        A new code for the number, or a claim of a key given back, may come while the sweep
        runs. Whoever writes a key notes its time in the index first (:meth:`_sweep_later`), so
        the index entry goes only if it still holds ``noted``, and then the key only if it
        still holds what was read before that: a value written after the read came with a new
        time in the index, and stays, indexed, until that time.
        """
        if key.startswith(f"{BOOK}/"):
            await self._forget_lookups(key, now)
            return True
        maps, kv = self.server.storage.maps, self.server.storage.kv
        stored = await kv.get(self.host, "", key)
        if not await maps.delete_if(self.host, "", SWEEP, key, noted):
            return False
        if stored is not None:
            await kv.delete_if(self.host, "", key, stored)
        return True
