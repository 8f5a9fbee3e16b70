"""What the storage backends share: the ids of archived items."""

from __future__ import annotations

import base64
import os
import re
import sys
import threading
import time

from schnack.server.storage.base import new_item_id

URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SORTED = "".join(sorted(URLSAFE))


def test_item_ids_are_short_url_safe_and_unique() -> None:
    ids = [new_item_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", item_id) for item_id in ids)


def test_item_ids_sort_by_the_time_they_were_made() -> None:
    """So that the id index grows at its end, as the archive does. Over more than 64 ms the
    character for the millisecond takes every value (plain base64url would not sort so)."""
    made = []
    for _ in range(40):
        made.append(new_item_id())
        time.sleep(0.002)
    assert made == sorted(made)


def test_an_id_is_the_millisecond_and_random_bits_in_base64url_sorted() -> None:
    """Base64url of the millisecond (6 bytes, big-endian) and 6 random bytes, each character
    replaced by the one at its value in base64url's alphabet sorted."""
    before = time.time_ns() // 1_000_000
    item_id = new_item_id()
    after = time.time_ns() // 1_000_000
    unsorted = item_id.translate(str.maketrans(SORTED, URLSAFE))
    stamp = int.from_bytes(base64.urlsafe_b64decode(unsorted)[:6], "big")
    assert before <= stamp <= after
    assert base64.urlsafe_b64encode(base64.urlsafe_b64decode(unsorted)).decode() == unsorted


def test_a_forked_child_does_not_repeat_its_parents_random_bits() -> None:
    """Ids take their random bits from a block read ahead; a child must not take the parent's."""
    new_item_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_item_id()[8:].encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 16).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 8
    assert child != new_item_id()[8:]


def test_threads_making_ids_at_once_never_share_random_bits() -> None:
    made: list[str] = []

    def make() -> None:
        made.extend(new_item_id()[8:] for _ in range(5000))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=make) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(set(made)) == len(made) == 20_000
