"""The built-in modules, by configuration name. Each file holds one feature (its XEP in the docstring)."""

from __future__ import annotations

import importlib
from typing import Any

from ..config import ConfigError
from ..module import Module

# name -> "file:Class" under this package; this table is the one place a module is listed.
BUILTIN: dict[str, str] = {
    "roster": "roster:Roster",
    "presence": "presence:Presence",
    "message": "message:Message",
    "offline": "offline:Offline",
    "carbons": "carbons:Carbons",
    "iq": "iq:Iq",
    "disco": "disco:Disco",
    "version": "version:Version",
    "time": "entity_time:EntityTimeModule",
    "ping": "ping:Ping",
    "last": "last:LastActivity",
    "vcard": "vcard:VCard",
    "private": "private:PrivateStorage",
    "register": "register:Register",
    "e2e": "e2e:EndToEndPolicy",
    "pep": "pep:Pep",
    "sm": "sm:StreamManagement",
    "csi": "csi:ClientStateIndication",
    "mam": "mam:Mam",
    "blocking": "blocking:Blocking",
    "bookmarks": "bookmarks:Bookmarks",
    "muc": "muc:Muc",
    "avatar_conversion": "avatar_conversion:AvatarConversion",
    "vcard4": "vcard4:VCard4",
    "fast": "fast:FastTokens",
    "push": "push:Push",
    "upload": "upload:Upload",
    "extdisco": "extdisco:ExternalServices",
    "webclient": "webclient:WebClient",
    "phone": "phone:Phone",
}


def load(name: str) -> type[Module[Any]]:
    """The class of module ``name``."""
    try:
        path = BUILTIN[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN))
        raise ConfigError(f"modules.{name}", f"no such module (known: {known})") from None
    file, _, cls = path.partition(":")
    module_class: type[Module[Any]] = getattr(importlib.import_module(f"{__name__}.{file}"), cls)
    return module_class
