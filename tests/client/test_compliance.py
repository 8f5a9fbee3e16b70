"""The compliance run (client/compliance/) against our server, and against Prosody to show that
a missing feature is reported as a failure with its reason.

The server runs the default modules plus TURN credentials (extdisco) for a real coturn, listens
for STARTTLS, direct TLS and HTTPS (upload), and refuses plaintext chat messages (the default e2e
policy): every check passes, with the server's own certificate as the only trusted one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bench.servers import ProsodyDriver
from schnack.client.compliance import CHECKS, Account, Result, Settings, run
from schnack.client.compliance.services import check_external_services
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..conftest import require_service
from .deployment import PASSWORD, deployment, settings_for


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Server]:
    async with deployment(tmp_path) as server:
        yield server


def table(results: Sequence[tuple[object, Result]]) -> str:
    return "\n".join(f"{check} {result}" for check, result in results)


async def test_every_check_passes_against_schnack(deployed: Server) -> None:
    results = await run(settings_for(deployed))
    assert [check for check, _ in results] == list(CHECKS)
    failing = [(check, result) for check, result in results if result.status != "passed"]
    assert not failing, table(failing)
    by_name = {check.spec: result for check, result in results}
    assert "publish: _xmpps-client._tcp.localhost. 3600 IN SRV 0 5 " in by_name["XEP-0368 §3"].reason
    turn = by_name["XEP-0215 §3"].reason
    assert turn.startswith(f"turn:127.0.0.1:{deployed.config.modules['extdisco']['turn_port']} (udp) allocated 127.0.0.1:")


async def test_a_relay_that_refuses_the_credentials_fails_the_turn_check(tmp_path: Path) -> None:
    async with deployment(tmp_path, relay_secret="not-the-secret-the-server-signs-with") as server:
        [(_, result)] = await run(settings_for(server), [check_external_services])
    assert result.status == "failed"
    assert "the relay refused the credentials (401" in result.reason
    assert "its secret differs from the server's" in result.reason


class ProsodyWithoutArchive(ProsodyDriver):
    """Prosody as bench/servers.py runs it, without mod_mam."""

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        command = super().prepare(usernames, password)
        self.config.write_text(self.config.read_text().replace('"mam"; ', ""))
        return command


async def test_failures_are_reported_against_prosody_without_an_archive() -> None:
    require_service(ProsodyDriver.available(), "Prosody is not installed (Debian package prosody)")
    driver = ProsodyWithoutArchive()
    target = driver.start(["alice", "bob"], PASSWORD)
    try:
        settings = Settings(Account(JID.parse(f"alice@{target.domain}"), PASSWORD),
                            Account(JID.parse(f"bob@{target.domain}"), PASSWORD), server=(target.host, target.port),
                            verify=driver.dir / "certs" / f"{target.domain}.crt", timeout=5.0)
        results = {check.spec: result for check, result in await run(settings)}
    finally:
        driver.stop()
    # What this Prosody has works with the checks as it does with schnack...
    for spec in ("XEP-0115 §6.3", "XEP-0163 §4, XEP-0060 §7.1.5", "RFC 6121 §2.6", "XEP-0280 §4-§6",
                 "XEP-0191 §3", "XEP-0198 §3-§5", "XEP-0352 §4", "XEP-0160 §3"):
        assert results[spec].status == "passed", (spec, results[spec])
    # ...and what it lacks fails with the reason, or is skipped when a check builds on it.
    assert results["XEP-0313 §4"] == Result("failed", "the account does not announce urn:xmpp:mam:2 (§6.1)")
    assert results["XEP-0388 §2"].status == "failed"
    assert "no <authentication xmlns='urn:xmpp:sasl:2'/>" in results["XEP-0388 §2"].reason
    assert results["XEP-0484 §3"].status == "skipped"
    assert results["XEP-0045 §6.1"].status == "failed"
    assert results["XEP-0313 §6.1, XEP-0045 §10.1"] == Result("skipped", "there is no group chat service")
    turn = results["XEP-0215 §3"]
    assert turn.status == "failed" and turn.sent is not None and "<services xmlns" in turn.sent
    assert turn.received is not None and "service-unavailable" in turn.received
