"""Client construction from a URL: standalone (redis://, rediss://, unix://) or Cluster.

Cluster is selected with `redis+cluster://host:port` (or `rediss+cluster://`), or `?cluster=true`.
Every client decodes replies to str; the one JSON codec handles payloads.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from conveyor.errors import ConfigurationError

RedisClient = aioredis.Redis | RedisCluster

_STANDALONE = {"redis", "rediss", "unix"}
_CLUSTER = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def _split_cluster_flag(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = parse_qsl(parts.query, keep_blank_values=True)
    flag = any(k == "cluster" and v.lower() in {"1", "true", "yes"} for k, v in query)
    query = [(k, v) for k, v in query if k != "cluster"]
    if scheme in _CLUSTER:
        return urlunsplit(parts._replace(scheme=_CLUSTER[scheme], query=urlencode(query))), True
    if scheme not in _STANDALONE:
        raise ConfigurationError(
            f"unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss://, unix:// "
            "or redis+cluster://"
        )
    return urlunsplit(parts._replace(query=urlencode(query))), flag


def connect(url: str, *, socket_timeout: float | None = 10.0, **extra: Any) -> RedisClient:
    """A client for `url`; `socket_timeout=None` for connections that block (BLPOP, XREAD BLOCK)."""
    clean, cluster = _split_cluster_flag(url)
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 5.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 30,
    }
    options.update(extra)
    if cluster:
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(clean, **options)
    # A blocking pool: a burst of concurrent calls waits for a free connection instead of failing
    # with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        clean, max_connections=options.pop("max_connections", 500), timeout=options.pop("pool_timeout", 30),
        **options,
    )
    return aioredis.Redis.from_pool(pool)


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def eviction_policy_warning(client: RedisClient) -> str | None:
    """A warning text unless the server's maxmemory-policy is `noeviction` (evicted job keys are lost
    jobs). None when the policy is right or cannot be read (managed services often forbid CONFIG)."""
    try:
        reply: Any = await client.config_get("maxmemory-policy")
    except Exception:
        return None
    if isinstance(reply, dict) and reply and "maxmemory-policy" not in reply:
        reply = next(iter(reply.values()))  # Cluster: one reply per node
    policy = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if policy is None or policy == "noeviction":
        return None
    return (
        f"Redis maxmemory-policy is {policy!r}: Redis may evict job keys under memory pressure and "
        "jobs would be lost. Set maxmemory-policy to noeviction."
    )
