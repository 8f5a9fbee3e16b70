"""Messages waiting for their sender's OMEMO keys (XEP-0384): kept to be decrypted again.

A live chat message (messages.py) or group message (groups.py) that could not be decrypted for a
reason that may pass (its sender's keys not fetched yet, no session yet, OMEMO not set up, a lost
link) is kept here, in the order they came, with the bare JID of the sender whose keys it needs,
up to a bound beyond which the oldest is given up. When that sender's keys were fetched, or
another message of theirs was decrypted, the feature takes its messages out for another try, in
the order they came; one that is being tried is not taken out again until that try is over.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, KeysView
from typing import Generic, TypeVar

from ...xmpp.jid import JID

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Waiting(Generic[K, T]):
    """Messages ``T``, by key ``K``, waiting to be decrypted again."""

    def __init__(self) -> None:
        self._kept: dict[K, tuple[JID, T]] = {}
        self._trying: set[K] = set()

    def keep(self, key: K, sender: JID, item: T, limit: int) -> list[T]:
        """Keep ``item`` until ``sender``'s (bare) keys come; those given up to keep no more than
        ``limit``, oldest first."""
        self._kept[key] = (sender, item)
        given_up = []
        while len(self._kept) > limit:
            given_up.append(self._kept.pop(next(iter(self._kept)))[1])
        return given_up

    def due(self, sender: JID) -> list[tuple[K, T]]:
        """The messages of ``sender`` (bare) to try again, in the order they came: those not under
        a try already, which are under one from now until :meth:`tried`."""
        found = [(key, item) for key, (whose, item) in self._kept.items()
                 if whose == sender and key not in self._trying]
        self._trying.update(key for key, _ in found)
        return found

    def tried(self, key: K) -> None:
        """The try at ``key`` is over: it may be taken out again if it still waits."""
        self._trying.discard(key)

    def drop(self, key: K) -> bool:
        """``key`` waits no longer (decrypted, or never to be); whether it was waiting."""
        return self._kept.pop(key, None) is not None

    def first(self) -> T | None:
        """The oldest message still waiting."""
        return next((item for _, item in self._kept.values()), None)

    def keys(self) -> KeysView[K]:
        return self._kept.keys()

    def clear(self) -> None:
        self._kept.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._kept

    def __iter__(self) -> Iterator[K]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)
