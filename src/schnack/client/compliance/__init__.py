"""A compliance run: what XMPP apps need from a server, checked over real connections.

The checks are those of Conversations' compliance tester, made to act where it only looks: each
logs in with the operator's two accounts (STARTTLS or direct TLS, the certificate verified
unless told otherwise) and exercises the feature, then reports it passed, failed (why, with the
XML sent and received) or skipped (why). They work against any XMPP server.

Checks by group: stream.py (caps, roster versioning, stream management, CSI, direct TLS, SASL2,
FAST), messaging.py (carbons, blocking, offline messages, the archive), pep.py (publish-options,
avatar and bookmarks conversion) and services.py (group chat and its archive, file upload with
CORS, push, TURN credentials). The checks leave the accounts as they found them, except for a
FAST token the server keeps for the check's own device and the messages they sent each other.

``schnack admin check`` (cli/check.py) runs :func:`run` and prints the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Account, Check, Context, Result, Settings, Skip, check
from .messaging import check_blocking, check_carbons, check_mam, check_offline
from .pep import check_avatar_conversion, check_bookmarks_conversion, check_pep
from .services import check_external_services, check_muc, check_muc_mam, check_push, check_upload
from .session import CheckFailed
from .stream import (
    check_caps,
    check_csi,
    check_direct_tls,
    check_fast,
    check_roster_versioning,
    check_sasl2,
    check_stream_management,
)

# In the order of Conversations' table, then the login checks it does not have.
CHECKS: tuple[Check, ...] = (
    check_caps, check_pep, check_roster_versioning, check_carbons, check_blocking, check_muc,
    check_stream_management, check_mam, check_muc_mam, check_csi, check_push, check_upload,
    check_direct_tls, check_avatar_conversion, check_bookmarks_conversion, check_offline,
    check_external_services, check_sasl2, check_fast,
)  # fmt: skip


async def run(settings: Settings, checks: Sequence[Check] = CHECKS) -> list[tuple[Check, Result]]:
    """Log both accounts in, then run ``checks`` one after the other.

    A login that fails (unreachable server, untrusted certificate, wrong password) raises the
    client's error before any check runs; after that, every check ends with a result.
    """
    ctx = Context(settings)
    try:
        await ctx.session(0)
        await ctx.session(1)
        return [(each, await each(ctx)) for each in checks]
    finally:
        await ctx.close()


__all__ = ["CHECKS", "Account", "Check", "CheckFailed", "Context", "Result", "Settings", "Skip", "check", "run"]
