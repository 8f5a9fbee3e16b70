"""The [cluster] section: defaults, bounds, and no cluster on SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schnack.server.cluster import LocalBus, RedisBus, open_bus
from schnack.server.config import ConfigError, build

PG = "postgresql://postgres@127.0.0.1/test"


def test_defaults_to_a_single_node(tmp_path: Path) -> None:
    config = build({}, tmp_path)
    assert config.cluster.redis_url is None
    assert config.cluster.node_name.endswith(f"-{os.getpid()}")
    assert isinstance(open_bus(config.cluster), LocalBus)


def test_redis_url_with_postgresql_makes_a_redis_node(tmp_path: Path) -> None:
    config = build({"storage": {"url": PG}, "cluster": {"redis_url": "redis://127.0.0.1:6379/3",
                                                       "node_name": "node-1"}}, tmp_path)
    assert config.cluster.node_name == "node-1"
    assert isinstance(open_bus(config.cluster), RedisBus)


@pytest.mark.parametrize(("data", "error"), [
    ({"cluster": {"redis_url": "redis://127.0.0.1"}},
     "cluster.redis_url: cluster mode needs PostgreSQL storage (storage.url); SQLite serves one node only"),
    ({"storage": {"url": PG}, "cluster": {"redis_url": "http://x"}},
     "cluster.redis_url: must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://, "
     "got 'http://x'"),
    ({"cluster": {"heartbeat_interval": 0}}, "cluster.heartbeat_interval: must be at least 0.1, got 0.0"),
    ({"cluster": {"node_ttl": 10_000}}, "cluster.node_ttl: must be at most 600, got 10000.0"),
    ({"cluster": {"heartbeat_interval": 3, "node_ttl": 5}},
     "cluster.node_ttl: must be at least twice heartbeat_interval (3.0), got 5.0"),
    ({"cluster": {"node_name": "a b"}},
     "cluster.node_name: must be 1-64 letters, digits, '.', '_' or '-', got 'a b'"),
    ({"cluster": {"nodes": 3}}, "cluster.nodes: unknown key"),
    ({"cluster": "redis"}, "cluster: must be a table"),
])
def test_bad_cluster_settings_name_the_key(tmp_path: Path, data: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(data, tmp_path)
    assert str(info.value).startswith(error)
