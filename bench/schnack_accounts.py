"""Create benchmark accounts in a schnack server's storage, before the server starts.

``python -m bench.schnack_accounts CONFIG`` reads ``{"password", "users", "iterations"}`` as JSON
on standard input. It goes through schnack's storage API, as ``schnack admin user add`` does, but
derives the SCRAM keys once for all accounts instead of once per process and account.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from schnack.server.config import load
from schnack.server.storage import open_storage
from schnack.xmpp.sasl import derive_credentials


async def create_accounts(config_path: Path, usernames: list[str], password: str, iterations: int) -> None:
    config = load(config_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    credentials = derive_credentials(password, iterations)
    storage = await open_storage(config.storage_url)
    try:
        for name in usernames:
            await storage.accounts.create(config.domains[0], name, credentials)
    finally:
        await storage.close()


def main() -> None:
    request = json.load(sys.stdin)
    asyncio.run(create_accounts(Path(sys.argv[1]), request["users"], request["password"], request["iterations"]))


if __name__ == "__main__":
    main()
