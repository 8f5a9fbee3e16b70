"""The configuration: zero-configuration defaults, and one error naming the key for each mistake."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from schnack.server.app import Server
from schnack.server.config import (
    DEFAULT_MODULES,
    Cluster,
    Config,
    ConfigError,
    Limits,
    Listen,
    S2s,
    Storage,
    Tls,
    _Top,
    build,
    load,
    parse_address,
)
from schnack.server.modules import BUILTIN
from schnack.server.modules import load as load_module
from schnack.server.tls import make_self_signed


def write(tmp_path: Path, text: str, name: str = "schnack.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(data: dict[str, Any], base_dir: Path = Path("/srv/schnack")) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(data, base_dir)
    return info.value


def test_zero_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load(None)
    assert config.domains == ["localhost"]
    assert config.listen.c2s == ["0.0.0.0:5222"]
    assert config.listen.c2s_tls == ["0.0.0.0:5223"]
    assert config.listen.http == ["0.0.0.0:5280"]
    assert config.listen.https == ["0.0.0.0:5281"]
    assert config.data_dir == tmp_path / "data"
    assert config.storage_url == f"sqlite:///{tmp_path / 'data' / 'schnack.db'}"
    assert list(config.modules) == list(DEFAULT_MODULES)
    assert all(options == {} for options in config.modules.values())
    assert config.tls.cert is None and config.tls.key is None and config.tls.require_c2s
    assert config.log_level == "info"
    assert config.source is None


def test_defaults_are_not_shared_between_configurations() -> None:
    """List defaults are copied per configuration, so one cannot change another's."""
    first, second = build({}, Path("/a")), build({}, Path("/b"))
    first.listen.c2s.append("127.0.0.1:1")
    assert second.listen.c2s == ["0.0.0.0:5222"]
    assert build({}, Path("/c")).listen.c2s == ["0.0.0.0:5222"]


def test_a_full_file_is_read(tmp_path: Path) -> None:
    make_self_signed(["example.org"], tmp_path / "pki" / "cert.pem", tmp_path / "pki" / "key.pem")
    path = write(tmp_path, """
        domains = ["Example.ORG", "chat.example.org"]
        data_dir = "state"
        log_level = "debug"
        [listen]
        c2s = ["[::]:5222", "127.0.0.1:15222"]
        https = []
        [limits]
        idle_timeout = 30
        max_resources = 3
        [tls]
        cert = "pki/cert.pem"
        key = "pki/key.pem"
        require_c2s = false
        [storage]
        url = "postgresql://schnack@db/schnack"
        [modules]
        enable = ["register"]
        disable = ["vcard"]
        [modules.register]
        min_password_length = 12
    """)
    config = load(path)
    assert config.domains == ["example.org", "chat.example.org"]
    assert config.data_dir == tmp_path / "state"
    assert config.log_level == "debug"
    assert config.listen.c2s == ["[::]:5222", "127.0.0.1:15222"]
    assert config.listen.https == []
    assert config.listen.c2s_tls == ["0.0.0.0:5223"]
    assert config.limits.idle_timeout == 30.0 and isinstance(config.limits.idle_timeout, float)
    assert config.limits.max_resources == 3
    assert config.limits.auth_timeout == 30.0
    assert config.tls.cert == tmp_path / "pki" / "cert.pem"
    assert config.tls.key == tmp_path / "pki" / "key.pem"
    assert config.tls.require_c2s is False
    assert config.storage_url == "postgresql://schnack@db/schnack"
    assert "vcard" not in config.modules
    assert config.modules["register"] == {"min_password_length": 12}
    assert config.source == path


def test_relative_paths_are_resolved_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc" / "schnack"
    make_self_signed(["example.org"], etc / "tls" / "server.crt", etc / "tls" / "server.key")
    path = write(etc, 'data_dir = "../../var/lib"\n[tls]\ncert = "tls/server.crt"\nkey = "tls/server.key"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Loaded through a relative path, from a different working directory.
    config = load(Path("..") / "etc" / "schnack" / path.name)
    assert config.data_dir.is_absolute()
    assert config.data_dir.resolve() == tmp_path / "var" / "lib"
    assert config.tls.cert == etc / "tls" / "server.crt"
    assert config.tls.key == etc / "tls" / "server.key"
    assert config.storage_url == f"sqlite:///{config.data_dir / 'schnack.db'}"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    config = build({"data_dir": str(tmp_path / "abs")}, Path("/somewhere/else"))
    assert config.data_dir == tmp_path / "abs"


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"limits": {"idle_timeout": 0}}, "limits.idle_timeout", "must be at least 10, got 0"),
        ({"limits": {"max_resources": 10_001}}, "limits.max_resources", "must be at most 10000, got 10001"),
        ({"limits": {"max_stanza_size": 9_999}}, "limits.max_stanza_size", "must be at least 10000"),
        ({"limits": {"max_resources": 2.5}}, "limits.max_resources", "must be a whole number"),
        ({"limits": {"max_resources": True}}, "limits.max_resources", "must be a whole number"),
        ({"limits": {"idle_timeout": "600"}}, "limits.idle_timeout", "must be a float, got str"),
        ({"limits": {"idle_timeout": True}}, "limits.idle_timeout", "must be a float, got bool"),
        ({"limits": {"idle_timeout": float("nan")}}, "limits.idle_timeout", "must be a finite number"),
        ({"limits": {"keepalive_interval": float("inf")}}, "limits.keepalive_interval", "must be a finite number"),
        ({"limits": {"bogus": 1}}, "limits.bogus", "unknown key"),
        ({"limits": 5}, "limits", "must be a table"),
        ({"tls": {"require_c2s": "yes"}}, "tls.require_c2s", "must be true or false"),
        ({"tls": {"cert": 5, "key": 6}}, "tls.cert", "must be a path string"),
        ({"tls": {"chain": "x.pem"}}, "tls.chain", "unknown key"),
        ({"storage": {"url": "mysql://x"}}, "storage.url", "must start with sqlite:// or postgresql://"),
        ({"storage": {"path": "/x"}}, "storage.path", "unknown key"),
        ({"log_level": "verbose"}, "log_level", "must be one of 'debug', 'info', 'warning', 'error'"),
        ({"data_dir": ["a"]}, "data_dir", "must be a path string"),
        ({"colour": "blue"}, "colour", "unknown key (known: data_dir, domains, log_level, and the sections [cluster], "
                                       "[components], [limits], [listen], [modules], [s2s], [storage], [tls])"),
        ({"lisen": {"c2s": ["0.0.0.0:5222"]}}, "lisen", "unknown section (known: data_dir, domains, log_level, and the "
                                                       "sections [cluster], [components], [limits], [listen], [modules]"),
        ({"listen": {"bosh": ["0.0.0.0:5280"]}}, "listen.bosh", "unknown key"),
        ({"listen": {"s2s": ["0.0.0.0:99999"]}}, "listen.s2s[0]", "must be host:port"),
        ({"s2s": {"hosts": {"example.org": "nowhere"}}}, "s2s.hosts.example.org", "must be host:port"),
        ({"s2s": {"hosts": {"a@example.org": "127.0.0.1:5269"}}}, "s2s.hosts.a@example.org", "is not a bare domain"),
        ({"s2s": {"hosts": "example.org"}}, "s2s.hosts", "must be a table"),
        ({"s2s": {"ca_file": "missing.pem"}}, "s2s.ca_file", "no such file"),
        ({"s2s": {"connect_timeout": 0}}, "s2s.connect_timeout", "must be at least 1"),
        ({"s2s": {"dns_servers": ["dns.example.org"]}}, "s2s.dns_servers[0]", "must be an IP address"),
        ({"s2s": {"dns_servers": ["dns.example.org:53"]}}, "s2s.dns_servers[0]", "must be an IP address"),
        ({"listen": {"c2s": "0.0.0.0:5222"}}, "listen.c2s", "must be a list, got str"),
        ({"listen": {"c2s": [5222]}}, "listen.c2s[0]", "must be a str, got int"),
    ],
)
def test_each_bad_value_names_its_key(data: dict[str, Any], key: str, message: str) -> None:
    err = error_of(data)
    assert err.key == key
    assert str(err).startswith(f"{key}: ")
    assert message in str(err)


def test_bounds_are_inclusive() -> None:
    config = build({"limits": {"idle_timeout": 10, "max_resources": 10_000, "max_stanza_size": 10_000}}, Path("/x"))
    assert config.limits.idle_timeout == 10.0
    assert config.limits.max_resources == 10_000


@pytest.mark.parametrize(
    "address",
    ["nowhere", "localhost:", ":", "localhost:http", "localhost:-1", "localhost:65536", "[::1]",
     "not a host:5222", "bad_host!:5222", "[::1:5222", "0.0.0.0:5222 ", "localhost:\uff15\uff12\uff12\uff12"],
)
def test_bad_listen_addresses(address: str) -> None:
    err = error_of({"listen": {"c2s": ["127.0.0.1:5222", address]}})
    assert err.key == "listen.c2s[1]"
    assert repr(address) in str(err)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:5222", ("127.0.0.1", 5222)),
        ("[::]:5222", ("::", 5222)),
        ("[::1]:0", ("::1", 0)),
        (":5222", ("0.0.0.0", 5222)),
        ("localhost:65535", ("localhost", 65535)),
        ("xmpp.example.org:5223", ("xmpp.example.org", 5223)),
    ],
)
def test_good_listen_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_address("listen.c2s[0]", address) == expected
    assert build({"listen": {"https": [address]}}, Path("/x")).listen.https == [address]


@pytest.mark.parametrize(
    ("domains", "key", "message"),
    [
        ([], "domains", "must name at least one domain"),
        ("localhost", "domains", "must be a list"),
        (["localhost", "alice@localhost"], "domains[1]", "is not a bare domain"),
        (["localhost/desk"], "domains[0]", "is not a bare domain"),
        (["exa mple.org"], "domains[0]", "is not a valid domain"),
        ([""], "domains[0]", "is not a valid domain"),
        (["example.org", 7], "domains[1]", "must be a str"),
    ],
)
def test_bad_domains(domains: Any, key: str, message: str) -> None:
    err = error_of({"domains": domains})
    assert err.key == key
    assert message in str(err)


def test_domains_are_normalized() -> None:
    assert build({"domains": ["EXAMPLE.org", "Chat.Example.Org"]}, Path("/x")).domains == [
        "example.org", "chat.example.org",
    ]


def test_s2s_section(tmp_path: Path) -> None:
    assert build({}, tmp_path).s2s.enabled is False
    write(tmp_path, "-----BEGIN CERTIFICATE-----\n", "certs/ca.pem")
    s2s = build({"s2s": {"enabled": True, "hosts": {"Example.NET": "192.0.2.7:5269"}, "ca_file": "certs/ca.pem"}},
                tmp_path).s2s
    assert (s2s.enabled, s2s.hosts, s2s.ca_file) == (True, {"example.net": "192.0.2.7:5269"}, tmp_path / "certs/ca.pem")
    assert build({"s2s": {"dns_servers": ["192.0.2.53", "[2001:db8::53]:5353"]}}, tmp_path).s2s.dns_servers == [
        "192.0.2.53", "[2001:db8::53]:5353"]


@pytest.mark.parametrize(
    ("tls", "key"),
    [
        ({"cert": "server.crt"}, "tls.key"),
        ({"key": "server.key"}, "tls.cert"),
    ],
)
def test_tls_needs_both_cert_and_key(tmp_path: Path, tls: dict[str, str], key: str) -> None:
    (tmp_path / "server.crt").write_text("cert")
    (tmp_path / "server.key").write_text("key")
    err = error_of({"tls": tls}, tmp_path)
    assert err.key == key
    assert "set both cert and key, or neither" in str(err)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text("cert")
    err = error_of({"tls": {"cert": "server.crt", "key": "missing.key"}}, tmp_path)
    assert err.key == "tls.key"
    assert str(tmp_path / "missing.key") in str(err)


def test_modules_enable_and_disable() -> None:
    config = build({"modules": {"enable": ["register", "ping"], "disable": ["version", "offline"]}}, Path("/x"))
    expected = [m for m in DEFAULT_MODULES if m not in ("version", "offline")] + ["register"]
    assert list(config.modules) == expected


@pytest.mark.parametrize(
    ("modules", "key", "message"),
    [
        ({"enable": "register"}, "modules.enable", "must be a list"),
        ({"disable": [1]}, "modules.disable[0]", "must be a str"),
        ({"disable": ["ping", "vcrad"]}, "modules.disable[1]", "no such module 'vcrad'"),
        ({"register": {"min_password_length": 4}}, "modules.register", "not enabled"),
        ({"disable": ["vcard"], "vcard": {"max_size": 2048}}, "modules.vcard", "not enabled"),
        ({"ping": 5}, "modules.ping", "must be a table of that module's options"),
        ([], "modules", "must be a table"),
    ],
)
def test_bad_modules_section(modules: Any, key: str, message: str) -> None:
    err = error_of({"modules": modules})
    assert err.key == key
    assert message in str(err)


def config_with_modules(modules: dict[str, Any]) -> Config:
    return build({"modules": modules}, Path("/x"))


@pytest.mark.parametrize(
    ("modules", "key", "message"),
    [
        ({"enable": ["teleport"]}, "modules.teleport", "no such module"),
        ({"e2e": {"policy": "sometimes"}}, "modules.e2e.policy", "must be one of"),
        ({"offline": {"max_messages": 0}}, "modules.offline.max_messages", "must be at least 1, got 0"),
        ({"vcard": {"max_size": "big"}}, "modules.vcard.max_size", "must be a whole number"),
        ({"version": {"show_kernel": True}}, "modules.version.show_kernel", "unknown key (known: show_os)"),
    ],
)
def test_module_options_are_checked_when_the_server_is_built(
    modules: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Server(config_with_modules(modules))
    assert info.value.key == key
    assert message in str(info.value)


def test_module_options_reach_the_module() -> None:
    server = Server(config_with_modules({"enable": ["register"], "register": {"min_password_length": 12}}))
    assert server.modules["register"].options.min_password_length == 12
    assert server.modules["register"].options.allow_registration is True


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'domains = ["localhost"]\n[limits\nidle_timeout = 30\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert info.value.key == ""
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 2" in message


def test_duplicate_toml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nidle_timeout = 30\nidle_timeout = 40\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: no such file"


EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "schnack.example.toml"


def _example_sections() -> dict[str, set[str]]:
    """The keys docs/schnack.example.toml shows, set or commented out, per section."""
    sections: dict[str, set[str]] = {"": set()}
    current = ""
    for line in EXAMPLE.read_text().splitlines():
        if header := re.match(r"#?\s*\[([\w.]+)\]", line):
            current = header.group(1)
            sections.setdefault(current, set())
        elif key := re.match(r"#?\s*(\w+)\s*=", line):
            sections[current].add(key.group(1))
    return sections


def test_the_example_names_the_modules_enabled_by_default() -> None:
    text = EXAMPLE.read_text()
    listed = re.search(r"# Enabled by default:((?:.*\n#   .*)*)", text)
    assert listed is not None
    assert listed.group(1).replace("#", " ").split() == list(DEFAULT_MODULES)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_the_example_shows_every_option_of_each_module(name: str) -> None:
    options = load_module(name).Options
    fields = {f.name for f in dataclasses.fields(options)} if dataclasses.is_dataclass(options) else set()
    assert fields <= _example_sections().get(f"modules.{name}", set())


@pytest.mark.parametrize(
    ("section", "options"),
    [("", _Top), ("storage", Storage), ("cluster", Cluster), ("tls", Tls), ("listen", Listen), ("limits", Limits), ("s2s", S2s)],
)
def test_the_example_shows_every_server_option(section: str, options: type) -> None:
    assert {f.name for f in dataclasses.fields(options)} <= _example_sections()[section]
