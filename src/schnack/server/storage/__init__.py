"""Storage behind a narrow interface (see base.py); open one with :func:`open_storage`."""

from __future__ import annotations

from typing import cast

from .base import (
    Account,
    AccountGone,
    AlreadyExists,
    ArchivedItem,
    ArchiveFull,
    ArchivePage,
    DuplicateItem,
    ItemNotFound,
    RosterItem,
    Storage,
    StorageError,
    TooLong,
    new_item_id,
)  # fmt: skip

__all__ = [
    "Account", "AccountGone", "AlreadyExists", "ArchiveFull", "ArchivePage", "ArchivedItem", "DuplicateItem",
    "ItemNotFound", "RosterItem", "Storage", "StorageError", "TooLong", "new_item_id", "open_storage",
]  # fmt: skip


async def open_storage(url: str) -> Storage:
    """Open and migrate the store at ``url``: ``sqlite:///path``, ``sqlite:///:memory:``, or
    ``postgresql://user@host/db`` (query parameters in :mod:`.postgres`)."""
    # The backend classes satisfy the Protocols structurally; mypy cannot match their
    # concrete method types against the Protocol attributes, hence the casts.
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStorage

        return cast(Storage, await SqliteStorage.open(url.removeprefix("sqlite://") or ":memory:"))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return cast(Storage, await PostgresStorage.open(url))
    raise StorageError(f"unsupported storage URL {url!r}: use sqlite:///path or postgresql://user@host/db")
