"""schnack's build. Everything but the C extensions is declared in pyproject.toml.

With ``SCHNACK_MYPYC=1`` the modules every message passes through are compiled to C extensions
with mypyc: a message then costs about a quarter less of the server's CPU (docs/benchmarks.md,
"Compiling the hot path with mypyc"). Without it schnack is pure Python. It is meant for a real
install, not an editable one: there an extension lands beside its source, is imported instead
of it, and hides every later edit. ``make compiled`` builds the compiled package into
``build/compiled``, apart from the sources.
"""

import os

from setuptools import setup

# The message path: parsing, routing, delivery, the archive, and what every delivered message is
# checked against. Measured with py-spy under load (docs/benchmarks.md).
COMPILED = [
    "src/schnack/xmpp/jid.py",
    "src/schnack/xmpp/parser.py",
    "src/schnack/xmpp/payloads/sid.py",
    "src/schnack/xmpp/stanza.py",
    "src/schnack/xmpp/xml.py",
    "src/schnack/server/c2s.py",
    "src/schnack/server/cluster/carbons.py",
    "src/schnack/server/gather.py",
    "src/schnack/server/hooks.py",
    "src/schnack/server/link.py",
    "src/schnack/server/modules/blocking.py",
    "src/schnack/server/modules/carbons.py",
    "src/schnack/server/modules/e2e.py",
    "src/schnack/server/modules/mam.py",
    "src/schnack/server/modules/message.py",
    "src/schnack/server/modules/offline.py",
    "src/schnack/server/modules/sm.py",
    "src/schnack/server/net.py",
    "src/schnack/server/router.py",
    "src/schnack/server/sessions.py",
    "src/schnack/server/storage/base.py",
    "src/schnack/server/tls.py",
]


def extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("SCHNACK_MYPYC") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "SCHNACK_MYPYC=1 compiles with mypyc, which comes with mypy: install schnack, mypy and "
            "setuptools>=77 first, then build with pip install --no-build-isolation --no-deps ."
        ) from None
    return mypycify(COMPILED, opt_level="3", group_name="schnack_native")


setup(ext_modules=extensions())
