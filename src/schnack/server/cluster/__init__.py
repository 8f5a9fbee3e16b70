"""Cluster mode: the bus between nodes (see bus.py), its backends and the server's use of it."""

from __future__ import annotations

from ..config import Cluster
from .bus import ClusterBus, NodeInfo
from .local import LocalBus
from .redis import ClusterUnavailable, RedisBus

__all__ = ["ClusterBus", "ClusterUnavailable", "LocalBus", "NodeInfo", "RedisBus", "open_bus"]


def open_bus(config: Cluster) -> ClusterBus:
    """The Redis bus when ``redis_url`` is set, else the in-process one (a single node)."""
    if config.redis_url is None:
        return LocalBus(config.node_name, heartbeat_interval=config.heartbeat_interval, node_ttl=config.node_ttl,
                        address=config.public_address)
    return RedisBus(config.redis_url, config.node_name, prefix=config.key_prefix,
                    heartbeat_interval=config.heartbeat_interval, node_ttl=config.node_ttl,
                    address=config.public_address)
