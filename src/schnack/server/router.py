"""The router: checks nothing but addresses, and runs the handlers registered for a route key.

The core only routes (as in Prosody). A stanza becomes a key ``{kind}/{target}`` where kind is
message, presence or iq and target is ``self`` (the sender's own account, or no 'to'), ``host``
(a domain served here), ``bare`` or ``full`` (a local account or resource), ``service/{domain}``
(any address at a domain a module serves, such as the group chat service) or ``remote`` (another
server's domain: the s2s package takes those when federation is enabled). Stanzas
a local client sends first pass ``pre-{kind}/{target}``, where a service's target is just
``service``. An IQ get/set, whoever sent it, first passes ``iq/{target}/*`` (:data:`ANY_PAYLOAD`:
checks that concern every request to the address, such as its account's blocklist), then
tries ``iq/{target}/{payload name}`` and then ``iq/{target}``. Handlers return a reply element,
:data:`HANDLED`, or None to pass; they raise :class:`StanzaError` to bounce the stanza.

A handler may also start a write on the stanza's behalf and hand it to :meth:`Router.defer`
instead of awaiting it: routing goes on at once, and the stanza is done (answered, and for its
sender's stream handled and acknowledged, XEP-0198 §4) only once the write is. :meth:`Router.begin`
runs the handlers and returns what finishes the stanza, so that a client stream routes its next
stanza while the last one's writes are under way, and counts them in order (c2s.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.stanza import Stanza
from .background import Background
from .hooks import Handled, Unanswered
from .storage.base import NAME_BYTES, STORAGE_DOWN, AccountGone, StorageError, TooLong

if TYPE_CHECKING:
    from .app import Server
    from .sessions import Session

log = logging.getLogger(__name__)

# What finishes a stanza whose handlers deferred writes (Router.begin).
Finish = Callable[[], Awaitable[None]]
# The payload part of the route key an IQ get/set passes before those of its payload.
ANY_PAYLOAD = "*"


class Router:
    """Routes stanzas between sessions, modules and the server (RFC 6120 §10, RFC 6121 §8)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._hooks = server.hooks
        self._hosts = server.hosts
        self._services = server.services
        # Each stanza's deferred writes, with what takes each back should the stanza be refused.
        self._deferred: dict[Stanza, list[tuple[asyncio.Future[Any], Finish | None]]] = {}
        self._withdrawing = Background(log, "taking back a write for a refused stanza failed")

    def target(self, to: JID | None, origin: Session | None) -> str:
        """The target part of a route key (see the module docstring)."""
        if to is None:
            return "self" if origin is not None else "host"
        if to.domain not in self._hosts:
            return f"service/{to.domain}" if to.domain in self._services else "remote"
        if to.local is None:
            return "host"
        if to.resource is None:
            return "self" if origin is not None and to == origin.jid.bare else "bare"
        return "full"

    async def route(self, stanza: Stanza, origin: Session | None = None) -> None:
        """Route ``stanza``; ``origin`` is the local session that sent it, None for the server.

        Errors go back to the sender; a failing handler is logged and answered with
        internal-server-error so the server keeps serving everyone else.
        """
        finish = await self.begin(stanza, origin)
        if finish is not None:
            await finish()

    async def begin(self, stanza: Stanza, origin: Session | None = None) -> Finish | None:
        """Run the handlers of ``stanza`` (as :meth:`route`); None once it is done, else what
        finishes it: wait for the writes they deferred, then answer. A stream that awaits the
        finishes of its stanzas in their order may read on meanwhile (c2s.py)."""
        try:
            result = await self._dispatch_or_abandon(stanza, origin)
        except StanzaError as err:
            result = _refusal(stanza, err)
        except Unanswered:
            raise
        except Exception as err:
            result = _failure(stanza, err)
        else:
            writes = self._deferred.pop(stanza, None) if self._deferred else None
            if writes is not None:
                return functools.partial(self._finish, stanza, origin, result, writes)
        await self._answer(stanza, origin, result)
        return None

    async def _finish(self, stanza: Stanza, origin: Session | None, result: Element | Handled | None,
                      writes: list[tuple[asyncio.Future[Any], Finish | None]]) -> None:
        """The rest of :meth:`begin`: a failed write is what the sender learns of."""
        failed = False
        for write, _undo in writes:
            if failed:
                write.add_done_callback(_observe)
                continue
            try:
                await write
            except StanzaError as err:
                result, failed = _refusal(stanza, err), True
            except Exception as err:
                result, failed = _failure(stanza, err), True
        await self._answer(stanza, origin, result)

    async def _answer(self, stanza: Stanza, origin: Session | None, result: Element | Handled | None) -> None:
        if result is None or isinstance(result, Handled):
            return
        if origin is not None and not origin.closed and result.get("to") in (None, str(origin.jid)):
            origin.send(result)
        else:
            await self.send(result)

    def defer(self, stanza: Stanza, write: asyncio.Future[Any], *, undo: Finish | None = None) -> None:
        """Finish routing ``stanza`` only once ``write`` is done, without making its handlers wait.

        Only a handler of a route that is under way defers. A write that fails is answered as a
        handler failing then would have been (a StorageError with a 'wait' error), but what
        routing did meanwhile stands: the message may have been delivered, and a client that
        sends it again makes it arrive twice rather than never, as after any failure it was not
        told the outcome of. Should a later handler refuse the stanza (a StanzaError: the sender
        learns it was not taken), ``undo`` takes the write back once it is done, so that nothing
        keeps what the sender was told was refused, nor a second copy when the sender tries again.
        """
        self._deferred.setdefault(stanza, []).append((write, undo))

    async def withdrawn(self) -> None:
        """Return once the writes of refused stanzas that were being taken back are (storage must
        stay open until then, see :meth:`defer`)."""
        await self._withdrawing.wait()

    async def send(self, el: Element) -> None:
        """Route a stanza the server itself originates (its 'from' is already set)."""
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            log.warning("dropping server stanza with a malformed address: %s", el.get("to"))
            return
        await self.route(stanza, None)

    async def _dispatch_or_abandon(self, stanza: Stanza, origin: Session | None) -> Element | Handled | None:
        """Dispatch; when that fails, the writes deferred meanwhile are left to end alone."""
        try:
            return await self._dispatch(stanza, origin)
        except BaseException as err:
            if self._deferred:
                for write, undo in self._deferred.pop(stanza, ()):
                    if undo is None or not isinstance(err, StanzaError):
                        write.add_done_callback(_observe)
                    else:
                        self._withdrawing.spawn(_withdraw(write, undo))
            raise

    async def _dispatch(self, stanza: Stanza, origin: Session | None) -> Element | Handled | None:
        kind = stanza.kind
        target = self.target(stanza.to, origin)
        fire = self._hooks.fire
        if origin is not None:
            pre = "service" if target.startswith("service/") else target
            result = await fire(f"pre-{kind}/{pre}", stanza, origin)
            if result is not None:
                return result  # type: ignore[no-any-return]
        if kind == "iq" and stanza.type in ("get", "set"):
            payload = stanza.payload
            assert payload is not None
            result = await fire(f"iq/{target}/{ANY_PAYLOAD}", stanza, origin)
            if result is None:
                result = await fire(f"iq/{target}/{payload.tag}", stanza, origin)
            if result is None:
                result = await fire(f"iq/{target}", stanza, origin)
            if result is None:
                if target == "remote":
                    raise StanzaError("remote-server-not-found", "this server does not talk to other servers ([s2s] enabled is off)")
                raise StanzaError("service-unavailable")
            return result  # type: ignore[no-any-return]
        result = await fire(f"{kind}/{target}", stanza, origin)
        if result is None and target == "remote" and stanza.type != "error":
            raise StanzaError("remote-server-not-found", "this server does not talk to other servers ([s2s] enabled is off)")
        return result  # type: ignore[no-any-return]


def _refusal(stanza: Stanza, err: StanzaError) -> Element | None:
    """A handler or a deferred write refused ``stanza``: the sender gets the error, unless the
    stanza is a response (RFC 6120 §8.2.3, §8.3.1), which is dropped."""
    if stanza.is_response:
        log.info("dropped %s %s %r to %s: %s", stanza.kind, stanza.type, stanza.id, stanza.to, err.condition)
        return None
    return stanza.error(err)


def _failure(stanza: Stanza, err: Exception) -> Element | None:
    """A handler or a deferred write failed: logged, and the sender told no details."""
    if isinstance(err, AccountGone):
        # RFC 6121 §8.5.2.1.1: the account it was written for was deleted as it went.
        failure = StanzaError("service-unavailable", "the account is deleted")
    elif isinstance(err, TooLong):
        # Not a passing failure: the same names would be refused again.
        failure = StanzaError("not-acceptable", f"names too long to store (at most {NAME_BYTES} bytes together)")
    elif isinstance(err, StorageError):
        # Not stored, so not accepted: a temporary error (RFC 6120 §8.3.2 'wait'), nothing dropped silently.
        log.warning("storage failed for %s to %s: %s", stanza.kind, stanza.to, err)
        failure = StanzaError("internal-server-error", STORAGE_DOWN, type="wait")
    else:
        log.error("handler failed for %s to %s", stanza.kind, stanza.to, exc_info=err)
        failure = StanzaError("internal-server-error")
    return _refusal(stanza, failure)


async def _withdraw(write: asyncio.Future[Any], undo: Finish) -> None:
    """Take back a deferred write of a refused stanza once it is done (see :meth:`Router.defer`)."""
    try:
        await write
    except Exception:
        return  # not written: nothing to take back
    try:
        await undo()
    except Exception:
        log.exception("could not take back a write for a refused stanza")


def _observe(write: asyncio.Future[Any]) -> None:
    """Take the outcome of a deferred write whose stanza failed already, so that asyncio does not
    report its failure as never retrieved: the sender was told of the first failure."""
    if not write.cancelled():
        write.exception()
