"""The SMS gateways, each against the real thing it talks to: the log, a webhook on a real
local HTTP port, and a program that writes what it was given to a file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from schnack.server.sms import CommandGateway, HttpGateway, LogGateway, SmsError

from .sms_receiver import webhook

NUMBER = "+4915123456789"
TEXT = "123456 is your code for example.org. Do not share it."
# Writes its arguments, one a line, to the file named first; exits with the status named second.
SCRIPT = "import sys\nopen(sys.argv[1], 'w').write('\\n'.join(sys.argv[3:]))\nsys.exit(int(sys.argv[2]))\n"


async def test_the_log_gateway_writes_number_and_text_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="schnack.server.sms"):
        await LogGateway().send(NUMBER, TEXT)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert NUMBER in record.getMessage() and TEXT in record.getMessage()
    assert "anyone with the log reads the codes" in record.getMessage()


async def test_the_http_gateway_posts_json_with_the_bearer_token() -> None:
    async with webhook() as hook:
        await HttpGateway(hook.url, "s3cret", 5.0).send(NUMBER, TEXT)
        await HttpGateway(hook.url, "", 5.0).send(NUMBER, "again")
    first, second = hook.received
    assert first.json == {"to": NUMBER, "text": TEXT}
    assert first.authorization == "Bearer s3cret"
    assert second.json == {"to": NUMBER, "text": "again"} and second.authorization is None


async def test_the_http_gateway_fails_on_an_answer_other_than_2xx() -> None:
    async with webhook() as hook:
        hook.status = 502
        with pytest.raises(SmsError, match=r"answered 502 Bad Gateway: provider refused"):
            await HttpGateway(hook.url, "", 5.0).send(NUMBER, TEXT)


async def test_the_http_gateway_fails_when_the_answer_takes_too_long() -> None:
    async with webhook() as hook:
        hook.delay = 3.0
        with pytest.raises(SmsError, match=r"did not answer within 0.3 s"):
            await HttpGateway(hook.url, "", 0.3).send(NUMBER, TEXT)


async def test_the_http_gateway_fails_when_nothing_listens() -> None:
    async with webhook() as hook:
        url = hook.url
    with pytest.raises(SmsError, match="could not be reached"):
        await HttpGateway(url, "", 5.0).send(NUMBER, TEXT)


async def test_the_command_gateway_runs_the_program_with_number_and_text(tmp_path: Path) -> None:
    out = tmp_path / "sent"
    script = tmp_path / "send.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script), str(out), "0", "--to={number}", "{text}", "{literal}"]
    await CommandGateway(command, 10.0).send(NUMBER, TEXT)
    # No shell: the text arrives as one argument, spaces and dots and all.
    assert out.read_text().splitlines() == [f"--to={NUMBER}", TEXT, "{literal}"]


async def test_the_command_gateway_fails_on_a_non_zero_exit() -> None:
    command = [sys.executable, "-c", "import sys; print('modem not found'); sys.exit(3)"]
    with pytest.raises(SmsError, match=r"exited with status 3: modem not found"):
        await CommandGateway(command, 10.0).send(NUMBER, TEXT)


async def test_the_command_gateway_kills_a_program_that_takes_too_long(tmp_path: Path) -> None:
    started = tmp_path / "pid"
    command = [sys.executable, "-c", f"import os, time; open({str(started)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
    with pytest.raises(SmsError, match=r"did not finish within 0.5 s"):
        await CommandGateway(command, 0.5).send(NUMBER, TEXT)
    pid = int(started.read_text())
    # Killed and reaped: no such process any more.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_the_command_gateway_fails_for_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(SmsError, match="could not be run"):
        await CommandGateway([str(tmp_path / "no-such-program"), "{number}"], 5.0).send(NUMBER, TEXT)
