"""Client construction from a URL: standalone (redis://, rediss://, unix://), Cluster or Sentinel.

Cluster is selected with `redis+cluster://host:port` (or `rediss+cluster://`), or `?cluster=true`.
Sentinel with `redis+sentinel://[user:pass@]host:port[,host2:port2]/service_name[/db]` (or
`rediss+sentinel://` for TLS; `?sentinel_password=` when the sentinels require their own password).
Every client decodes replies to str; the one JSON codec handles payloads.

No client retries a command by itself: a command whose reply was lost may have run, and resending a
script that is not idempotent (an enqueue without an idempotency key) would run it twice. Faults
surface as errors that redis/faults.py classifies; the callers that resend (the worker's trips)
are idempotent. MOVED/ASK redirections, where the command did not run, are still followed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis as syncredis
import redis.asyncio as aioredis
import redis.cluster as synccluster
import redis.sentinel as syncsentinel
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from conveyor.errors import ConfigurationError
from conveyor.redis.packing import pack_in_c

RedisClient = aioredis.Redis | RedisCluster
SyncRedisClient = syncredis.Redis | synccluster.RedisCluster

DEFAULT_MAX_CONNECTIONS = 500
DEFAULT_POOL_TIMEOUT_S = 30.0
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
            f"unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel://"
        )
    database = parts.path.removeprefix("/")
    if scheme != "unix" and database and not (database.isascii() and database.isdigit()):
        # redis-py ignores a path that is not a number and uses database 0: a typo (`/1x`) would
        # send every job to another database than meant.
        raise ConfigurationError(f"invalid Redis URL {redact(url)}: the database must be a number, got {database!r}")
    return urlunsplit(parts._replace(query=urlencode(query))), flag


def no_retry() -> Retry:
    """The retry policy of every client: none (see the module docstring)."""
    return Retry(NoBackoff(), 0)


def no_retry_sync() -> SyncRetry:
    """The same for the synchronous clients."""
    return SyncRetry(NoBackoff(), 0)


async def drop_idle_connections(client: RedisClient) -> None:
    """Close the pooled connections nobody uses now; later calls open fresh ones. After a fault (a
    server restart, a failover) every idle connection is dead, and with client-side retries off the
    first command on each would fail — in a handler using the app's client, a failed attempt. A
    Cluster client's connections are per node and left to it."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return
    try:
        await pool.disconnect(inuse_connections=False)
    except Exception:  # closing a dead connection can fail; nothing is lost
        return


def connect(url: str, *, socket_timeout: float | None = 10.0, **extra: Any) -> RedisClient:
    """A client for `url`; `socket_timeout=None` for connections that block (BLPOP, XREAD BLOCK).

    Standalone and Sentinel clients hold at most `max_connections` (default 500) connections; a
    call finding all in use waits up to `pool_timeout` seconds for one. A Cluster client bounds
    connections per node only when `max_connections` is given (over it a call fails at once)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 5.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 30,
        "retry": no_retry(),
    }
    options.update(extra)
    with _url_errors(url):
        if urlsplit(url).scheme.lower() in _SENTINEL:
            return _connect_sentinel(url, options)
        clean, cluster = _split_cluster_flag(url)
        if cluster:
            options.pop("health_check_interval", None)
            options.pop("pool_timeout", None)
            cluster_client = RedisCluster.from_url(clean, **options)
            pack_in_c(cluster_client)
            return cluster_client
        # A blocking pool: a burst of concurrent calls waits for a free connection instead of failing
        # with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            clean, max_connections=options.pop("max_connections", DEFAULT_MAX_CONNECTIONS),
            timeout=options.pop("pool_timeout", DEFAULT_POOL_TIMEOUT_S), **options,
        )
    pack_in_c(pool_client := aioredis.Redis.from_pool(pool))
    return pool_client


def check_url(url: str) -> None:
    """Raise ConfigurationError for a URL no client can be made from (nothing connects): a process
    that would only meet Redis on its first request (the API) says so at start instead."""
    connect(url)  # builds the client only: every kind (a Cluster's too) connects on its first command


@contextmanager
def _url_errors(url: str) -> Iterator[None]:
    """A URL the parsers refuse (a port out of range or not a number, a bad IPv6 host, a query
    option that is not a number) is a ConfigurationError naming it, not a bare ValueError."""
    try:
        yield
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact(url)}: {exc}") from None


def connect_sync(url: str, *, socket_timeout: float | None = 10.0) -> SyncRedisClient:
    """The synchronous twin of `connect` (same URL forms), for enqueueing without an event loop."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 5.0,
        "socket_timeout": socket_timeout,
        "retry": no_retry_sync(),
    }
    with _url_errors(url):
        if urlsplit(url).scheme.lower() in _SENTINEL:
            target = parse_sentinel_url(url)
            tls = {"ssl": True} if target.ssl else {}
            sentinel = syncsentinel.Sentinel(  # type: ignore[no-untyped-call]
                target.sentinels,
                sentinel_kwargs={"socket_connect_timeout": 5.0, "socket_timeout": 5.0,
                                 "password": target.sentinel_password, **tls},
                **options, **tls, db=target.db, username=target.username, password=target.password,
            )
            client: syncredis.Redis = sentinel.master_for(target.service)  # type: ignore[no-untyped-call]
            return client
        clean, cluster = _split_cluster_flag(url)
        if cluster:
            return synccluster.RedisCluster.from_url(clean, **options)
        pool = syncredis.BlockingConnectionPool.from_url(clean, max_connections=50, timeout=30, **options)
    return syncredis.Redis(connection_pool=pool)


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparseable (a bad IPv6 host): hide everything between '//' and '@'
        return re.sub(r"//[^/@]*@", "//***@", url)
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------- Sentinel

_SENTINEL = {"redis+sentinel": False, "rediss+sentinel": True}
SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed `redis+sentinel://` URL: where the sentinels are and which service's primary to use."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def _host_port(item: str, url: str) -> tuple[str, int]:
    host, port = item, str(SENTINEL_PORT)
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif ":" in item:
        host, port = item.rsplit(":", 1)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"bad sentinel address {item!r} in {redact(url)}")
    return host, int(port)


def parse_sentinel_url(url: str) -> SentinelTarget:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = [_host_port(h.strip(), url) for h in hosts.split(",") if h.strip()]
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not sentinels or not segments or len(segments) > 2:
        raise ConfigurationError(
            "Sentinel URL must look like redis+sentinel://host:port[,host:port]/service_name[/db], "
            f"got {redact(url)}"
        )
    if len(segments) == 2 and not segments[1].isdigit():
        raise ConfigurationError(f"Sentinel URL database must be a number, got {segments[1]!r}")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ConfigurationError(f"unknown Sentinel URL options {sorted(unknown)}")
    return SentinelTarget(
        sentinels=sentinels, service=segments[0], db=int(segments[1]) if len(segments) == 2 else 0,
        username=unquote(username) or None, password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password"), ssl=_SENTINEL[parts.scheme.lower()],
    )


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel pool (it follows the current primary) with a bound: a call finding every
    connection in use waits for one, as on a standalone server, instead of opening another."""


def _connect_sentinel(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """A client for the service's current primary; it follows failovers through the sentinels."""
    target = parse_sentinel_url(url)
    max_connections = options.pop("max_connections", DEFAULT_MAX_CONNECTIONS)
    pool_timeout = options.pop("pool_timeout", DEFAULT_POOL_TIMEOUT_S)
    tls = {"ssl": True} if target.ssl else {}
    sentinel_kwargs = {
        "socket_connect_timeout": options.get("socket_connect_timeout"),
        "socket_timeout": 5.0,
        "password": target.sentinel_password,
        **tls,
    }
    connection = {**options, **tls, "db": target.db, "username": target.username, "password": target.password}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        target.sentinels, sentinel_kwargs=sentinel_kwargs, **connection)
    client: aioredis.Redis = sentinel.master_for(
        target.service, connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=max_connections, timeout=pool_timeout,
    )
    pack_in_c(client)
    return client


async def server_setting(client: RedisClient, name: str) -> str | None:
    """One CONFIG GET value (from any node of a Cluster); None when it cannot be read (managed
    services often forbid CONFIG)."""
    try:
        reply: Any = await client.config_get(name)
    except Exception:
        return None
    if isinstance(reply, dict) and reply and name not in reply:
        reply = next(iter(reply.values()))  # Cluster: one reply per node
    value = reply.get(name) if isinstance(reply, dict) else None
    return None if value is None else str(value)


async def eviction_policy_warning(client: RedisClient) -> str | None:
    """A warning text unless the server's maxmemory-policy is `noeviction` (evicted job keys are lost
    jobs). None when the policy is right or cannot be read."""
    policy = await server_setting(client, "maxmemory-policy")
    if policy is None or policy == "noeviction":
        return None
    return (
        f"Redis maxmemory-policy is {policy!r}: Redis may evict job keys under memory pressure and "
        "jobs would be lost. Set maxmemory-policy to noeviction."
    )


async def listpack_hint(client: RedisClient, wanted: int = 1024) -> str | None:
    """A hint when `hash-max-listpack-value` is below `wanted`: job hashes holding a payload over
    the limit use the large hashtable encoding (about 200 more bytes per job). None when fine or
    unreadable."""
    raw = await server_setting(client, "hash-max-listpack-value")
    if raw is None or not raw.isdigit() or int(raw) >= wanted:
        return None
    value = int(raw)
    return (
        f"Redis hash-max-listpack-value is {value}: job payloads over {value} bytes make each waiting job "
        f"use about 200 bytes more memory; `CONFIG SET hash-max-listpack-value {wanted}` keeps them compact."
    )
