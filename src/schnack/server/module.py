"""The uniform API through which every feature plugs into the server.

A module declares its name, the modules it depends on, its disco features and its typed options,
and registers handlers in :meth:`Module.setup` through :meth:`route`, :meth:`iq`, :meth:`hook` and
:meth:`nonza`. Handlers return a reply element, :data:`~schnack.server.hooks.HANDLED`, or None to
pass, and raise :class:`~schnack.xmpp.errors.StanzaError` to bounce the stanza.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from xml.etree.ElementTree import Element

from ..xmpp.errors import StanzaError
from ..xmpp.payloads.disco import Identity
from ..xmpp.stanza import Stanza
from .config import ConfigError
from .hooks import Handled, Handler

if TYPE_CHECKING:
    from .app import Server
    from .sessions import Session


@dataclass(frozen=True)
class NoOptions:
    """For modules without options."""


OptionsT = TypeVar("OptionsT")

ModuleT = TypeVar("ModuleT", bound="Module[Any]")

IqHandler = Callable[[Stanza, "Session | None"], Awaitable[Element | Handled | None]]


class Module(Generic[OptionsT]):
    """Base class of server modules; subclasses set the class attributes and override setup()."""

    name: ClassVar[str]
    depends: ClassVar[tuple[str, ...]] = ()
    # Features this module adds to the disco#info of the server's domains and of user accounts.
    features: ClassVar[tuple[str, ...]] = ()
    account_features: ClassVar[tuple[str, ...]] = ()
    # Identities this module adds to the disco#info of user accounts (e.g. pubsub/pep, XEP-0163 §6.1).
    account_identities: ClassVar[tuple[Identity, ...]] = ()
    Options: ClassVar[type[Any]] = NoOptions

    def __init__(self, server: Server, options: OptionsT) -> None:
        self.server = server
        self.options = options

    def setup(self) -> None:
        """Register handlers; called once, after every enabled module was constructed."""

    def required(self, cls: type[ModuleT]) -> ModuleT:
        """The module ``cls``, which this one names in ``depends`` (so the server made sure it is enabled)."""
        module = self.server.modules.get(cls.name)
        if not isinstance(module, cls):
            raise ConfigError(f"modules.{self.name}", f"needs module {cls.name!r}, which is not enabled")
        return module

    def optional(self, cls: type[ModuleT]) -> ModuleT | None:
        """The module ``cls`` if it is enabled, for what works better with it but also without."""
        module = self.server.modules.get(cls.name)
        return module if isinstance(module, cls) else None

    async def start(self) -> None:
        """Start background work; storage is open."""

    async def stop(self) -> None:
        """Stop background work; sessions are already closed."""

    def service(self, domain: str) -> None:
        """Serve every address at ``domain`` (e.g. ``groups.example.org``): route keys ``*/service/{domain}``.

        Call from setup(). The domain must be none of the server's own and not claimed twice.
        """
        if domain in self.server.hosts:
            raise ConfigError(f"modules.{self.name}", f"{domain} is one of the server's domains")
        owner = self.server.services.get(domain)
        if owner is not None:
            raise ConfigError(f"modules.{self.name}", f"{domain} is already served by module {owner}")
        self.server.services[domain] = self.name

    def route(self, key: str, handler: Handler, priority: int = 0) -> None:
        """Handle stanzas on a route key such as ``message/bare`` (see :mod:`.router`)."""
        self.server.hooks.add(key, handler, priority)

    def hook(self, event: str, handler: Handler, priority: int = 0) -> None:
        """Subscribe to a server event such as ``session-bound``."""
        self.server.hooks.add(event, handler, priority)

    def nonza(self, tag: str, handler: Handler, priority: int = 0) -> None:
        """Handle a top-level non-stanza element (e.g. XEP-0198 ``<r/>``) of a client stream.

        The handler gets (stream, element) and returns HANDLED or None.
        """
        self.server.hooks.add(f"c2s/nonza/{tag}", handler, priority)

    def iq(
        self,
        target: str,
        tag: str,
        *,
        get: IqHandler | None = None,
        set: IqHandler | None = None,
        priority: int = 0,
    ) -> None:
        """Handle IQ get and/or set with payload ``tag`` (Clark notation) on ``target``."""

        async def dispatch(stanza: Stanza, origin: Session | None) -> Element | Handled | None:
            handler = get if stanza.type == "get" else set
            if handler is None:
                raise StanzaError("feature-not-implemented", f"{stanza.type} is not supported here")
            return await handler(stanza, origin)

        self.server.hooks.add(f"iq/{target}/{tag}", dispatch, priority)
