"""One-time pre keys kept for a while after a message used them (XEP-0384 §4.6, X3DH §4.2).

Two senders, or two devices of one, that fetch our bundle at about the same time may take the
same pre key for their first message. python-omemo deletes a pre key as soon as one message used
it, and the other sender's first message then cannot be decrypted (``KeyExchangeFailed``): the
user would never see it. python-omemo's history synchronisation mode would only hide the pre key,
but the x3dh state leaves hidden pre keys out of what it stores, and python-omemo reads the state
from the store for every operation, so hidden keys are gone at once all the same.

So our backends keep a used pre key in the x3dh state, where key agreements find it, and take it
out of the published bundle at once; python-omemo then sees one fewer and publishes the bundle
again with a new one in its place. The used keys and when they were used are kept in the OMEMO
storage (``/schnack/<namespace>/used_pre_keys``); each is deleted for good
:data:`USED_PRE_KEYS_KEPT_FOR` after its first use, at the next key exchange or login: X3DH §4.2
wants it deleted, for forward secrecy, and a sender that took it has sent its message by then.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import oldmemo
import oldmemo.oldmemo
import twomemo
import twomemo.twomemo
import x3dh
from omemo.backend import Backend
from omemo.session import Session
from omemo.storage import Storage

from .protocol import OLDMEMO

# As long as python-omemo keeps a rotated signed pre key (its rotation period, a week): a first
# message held that long on the sender's side is as readable as one that used the signed pre key.
USED_PRE_KEYS_KEPT_FOR = 7 * 24 * 60 * 60.0


class KeepingUsedPreKeys(Backend):
    """What our backends do differently from python-omemo's: used pre keys are kept a while.
    Mixed in before :class:`oldmemo.Oldmemo` or :class:`twomemo.Twomemo`, which come after it in
    the method resolution order: its ``super()`` calls go to them (hence the type: ignores)."""

    _state_class: Any

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)  # type: ignore[arg-type]
        self._kept_in = storage

    @property
    def _used_key(self) -> str:
        return f"/schnack/{self.namespace}/used_pre_keys"

    async def _used(self) -> dict[bytes, float]:
        """The used pre keys still in the state, with when they were first used (Unix time)."""
        stored = (await self._kept_in.load_dict(self._used_key, float)).maybe({})
        return {base64.b64decode(key): when for key, when in stored.items()}

    async def _store_used(self, used: dict[bytes, float]) -> None:
        await self._kept_in.store(self._used_key, {base64.b64encode(key).decode("ascii"): when
                                                   for key, when in used.items()})

    async def _in_state(self) -> frozenset[bytes]:
        """The pre keys in the x3dh state, used or not (the names in a bundle are only labels)."""
        bundle: Any = await super().get_bundle("", 0)  # type: ignore[safe-super]
        return frozenset(bundle.bundle.pre_keys)

    async def delete_pre_key(self, session: Session) -> bool:
        """A message used the pre key of ``session``: kept, but out of the bundle (True if it was
        in it, so that python-omemo publishes the bundle again, refilled)."""
        used_key = session.key_exchange.header.pre_key  # type: ignore[attr-defined]
        used = await self._used()
        fresh = used_key not in used and used_key in await self._in_state()
        if fresh:
            used[used_key] = time.time()
        await self._delete_expired(used)
        return fresh

    async def delete_expired_pre_keys(self) -> None:
        """Delete the used pre keys kept :data:`USED_PRE_KEYS_KEPT_FOR` already."""
        await self._delete_expired(await self._used())

    async def _delete_expired(self, used: dict[bytes, float]) -> None:
        now = time.time()
        expired = {key for key, when in used.items() if now - when >= USED_PRE_KEYS_KEPT_FOR}
        if expired:
            # python-omemo offers no way to delete a pre key without a session that used it, so the
            # stored x3dh state is edited as python-omemo's backends read and write it.
            place = f"/{self.namespace}/x3dh"
            serialized = (await self._kept_in.load(place)).from_just()
            state, _ = self._state_class.from_json(serialized, x3dh.IdentityKeyFormat.ED_25519,
                                                   x3dh.HashFunction.SHA_256, self._state_class.INFO)
            for key in expired:
                state.delete_pre_key(key)
            await self._kept_in.store(place, state.json)
        await self._store_used({key: when for key, when in used.items() if key not in expired})

    async def get_num_visible_pre_keys(self) -> int:
        """The pre keys in the bundle: those in the state, less the used ones."""
        return len(await self._in_state() - set(await self._used()))

    async def get_bundle(self, bare_jid: str, device_id: int) -> Any:
        """The bundle to publish (the version's own type, hence Any): without the used pre keys."""
        full: Any = await super().get_bundle(bare_jid, device_id)  # type: ignore[safe-super]
        used = set(await self._used())
        offered = full.bundle._replace(pre_keys=frozenset(full.bundle.pre_keys) - used)
        ids = {key: id for key, id in full.pre_key_ids.items() if key not in used}
        return type(full)(bare_jid, device_id, offered, full.signed_pre_key_id, ids)


class Oldmemo(KeepingUsedPreKeys, oldmemo.Oldmemo):
    _state_class = oldmemo.oldmemo.StateImpl


class Twomemo(KeepingUsedPreKeys, twomemo.Twomemo):
    _state_class = twomemo.twomemo.StateImpl


def backend(namespace: str, storage: Storage) -> KeepingUsedPreKeys:
    """Our backend for an OMEMO version."""
    return Oldmemo(storage) if namespace == OLDMEMO else Twomemo(storage)
