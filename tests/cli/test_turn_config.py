"""``schnack admin turn-config``: a coturn configuration matching [modules.extdisco], or a one-line error."""

from __future__ import annotations

from pathlib import Path

from .test_main import run, write_config

EXTDISCO = (
    '[modules]\nenable = ["extdisco"]\n[modules.extdisco]\n'
    'turn_host = "turn.example.test"\nturn_port = 3479\nturns_port = 5349\nsecret = "0123456789abcdef-secret"\n'
)


def test_prints_a_matching_coturn_config(tmp_path: Path) -> None:
    done = run("admin", "turn-config", "-c", str(write_config(tmp_path, EXTDISCO)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for line in ("listening-port=3479", "tls-listening-port=5349", "realm=example.test", "use-auth-secret",
                 "static-auth-secret=0123456789abcdef-secret", "denied-peer-ip=192.168.0.0-192.168.255.255"):
        assert line in lines
    assert "listening-ip=127.0.0.1" not in lines
    local = run("admin", "turn-config", "--loopback", "-c", str(write_config(tmp_path, EXTDISCO)))
    assert "listening-ip=127.0.0.1" in local.stdout.splitlines()


def test_needs_the_module_and_a_relay(tmp_path: Path) -> None:
    done = run("admin", "turn-config", "-c", str(write_config(tmp_path)))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("schnack: module extdisco is not enabled") and done.stderr.count("\n") == 1
    stun_only = '[modules]\nenable = ["extdisco"]\n[modules.extdisco]\nstun_host = "stun.example.test"\n'
    done = run("admin", "turn-config", "-c", str(write_config(tmp_path, stun_only)))
    assert done.returncode == 2 and "turn_host is not set" in done.stderr
    bad = '[modules]\nenable = ["extdisco"]\n[modules.extdisco]\nturn_host = "t"\nsecret = "short"\n'
    done = run("admin", "turn-config", "-c", str(write_config(tmp_path, bad)))
    assert done.returncode == 2 and "modules.extdisco.secret" in done.stderr
