"""Phone sign-up (docs/phone.md) on a cluster: two servers in one process on Redis, sharing
PostgreSQL; one of them reaches Redis through a proxy that the test cuts."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ...client.proxy import Proxy
from ...integration.test_phone import NUMBER, ask_code, last_code, phone_modules, set_password
from ..sms_receiver import webhook
from .test_node_upload import cut_off, one_cut_off


async def test_a_node_cut_off_from_the_cluster_makes_no_account_with_a_right_code(
        tmp_path: Path, redis_proxy: Proxy) -> None:
    """The right code reaches node a while it cannot tell whether the cluster still takes it for
    alive (it cannot reach Redis): the account's change is claimed in its name, and the others may
    take that claim over any time, so a makes no account but answers 503 with Retry-After, and the
    code stays for the app's retry, which node b takes."""
    async with (webhook() as hook, one_cut_off(tmp_path, redis_proxy, phone_modules(hook.url)) as (a, b),
                aiohttp.ClientSession() as http):
        assert (await ask_code(http, a)).status == 200
        await cut_off(redis_proxy, a, b)
        status, text = await set_password(http, a, last_code(hook))
        assert status == 503, text
        assert await a.storage.accounts.get("localhost", NUMBER) is None
        assert await set_password(http, b, last_code(hook)) == (201, "the account was created\n")
