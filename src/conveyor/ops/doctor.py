"""`conveyor doctor`: checks the server Conveyor runs on and says what is wrong and how to fix it.

Each check gives ok, warn (works, but worth fixing) or fail (jobs can be lost or stuck); any fail
makes the exit status 1. Managed servers that forbid CONFIG get a warning, not a failure.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import redis as syncredis
import typer
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from conveyor.ops.common import JsonOpt, PrefixOpt, RedisOpt, Target, print_json, run
from conveyor.redis.clock import clock_offset_ms
from conveyor.redis.connection import eviction_policy_warning, listpack_hint, parse_sentinel_url, server_setting
from conveyor.redis.keys import WorkerRegistryKeys
from conveyor.views import list_workers

MIN_VERSION = (6, 2)
PINGS = 20
LATENCY_WARN_MS = 20.0
LATENCY_FAIL_MS = 250.0
SKEW_WARN_MS = 1_000.0
SKEW_FAIL_MS = 60_000.0
NTP_FIX = "keep the machines' clocks in sync with NTP (chrony or systemd-timesyncd)"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str | None = None


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


async def _info(t: Target, section: str) -> dict[str, Any]:
    """INFO of one section; a Cluster client answers per node, and the first node's reply is used."""
    reply: Any = await t.client.info(section)
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        reply = next(iter(reply.values()))
    return reply if isinstance(reply, dict) else {}


async def check_version(t: Target) -> Check:
    info = await _info(t, "server")
    product = "Valkey" if info.get("valkey_version") else "Redis"
    version = str(info.get("valkey_version") or info.get("redis_version") or "?")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    detail = f"{product} {version} ({info.get('redis_mode', 'standalone')})"
    if info.get("valkey_version") is None and parts < MIN_VERSION:
        minimum = ".".join(map(str, MIN_VERSION))
        return Check("version", "fail", detail, f"upgrade to Redis {minimum}+ or Valkey 7.2+")
    return _ok("version", detail)


async def check_persistence(t: Target) -> Check:
    aof, save, fsync = [await server_setting(t.client, n) for n in ("appendonly", "save", "appendfsync")]
    if aof is None and save is None:
        return Check("persistence", "warn", "cannot read CONFIG (a managed server?)",
                     "make sure the service keeps an append-only file (AOF)")
    if aof == "yes":
        if fsync == "no":
            return Check("persistence", "warn", "AOF on, appendfsync no: the OS decides when data reaches disk",
                         "CONFIG SET appendfsync everysec (and in the server's config file)")
        return _ok("persistence", f"AOF on (appendfsync {fsync})" + (f", RDB save {save!r}" if save else ""))
    if save:
        return Check("persistence", "warn", f"RDB snapshots only (save {save!r}): a crash loses the jobs "
                     "enqueued since the last snapshot",
                     "CONFIG SET appendonly yes (and appendonly yes in the server's config file)")
    return Check("persistence", "fail", "no AOF and no RDB: a restart loses every job",
                 "CONFIG SET appendonly yes (and appendonly yes in the server's config file)")


async def check_eviction(t: Target) -> Check:
    warning = await eviction_policy_warning(t.client)
    if warning is not None:
        return Check("maxmemory-policy", "fail", warning.split(":")[0],
                     "CONFIG SET maxmemory-policy noeviction (and in the server's config file)")
    policy = await server_setting(t.client, "maxmemory-policy")
    if policy is None:
        return Check("maxmemory-policy", "warn", "cannot read CONFIG", "make sure the policy is noeviction")
    return _ok("maxmemory-policy", policy)


async def check_listpack(t: Target) -> Check:
    hint = await listpack_hint(t.client)
    value = await server_setting(t.client, "hash-max-listpack-value")
    if hint is not None:
        return Check("hash-max-listpack-value", "warn", f"{value}: job hashes with larger payloads take "
                     "about 200 more bytes each", "CONFIG SET hash-max-listpack-value 1024")
    return _ok("hash-max-listpack-value", value or "unknown (CONFIG not readable)")


async def check_latency(t: Target) -> Check:
    samples = []
    for _ in range(PINGS):
        started = time.perf_counter()
        await t.client.ping()
        samples.append((time.perf_counter() - started) * 1000)
    median, worst = statistics.median(samples), max(samples)
    detail = f"median {median:.2f} ms, max {worst:.2f} ms over {PINGS} PINGs"
    if median > LATENCY_FAIL_MS:
        return Check("latency", "fail", detail, "run workers close to the server (same region/network)")
    if median > LATENCY_WARN_MS:
        return Check("latency", "warn", detail, "every job takes several round trips: put workers nearer")
    return _ok("latency", detail)


async def check_topology(t: Target) -> Check:
    if isinstance(t.client, RedisCluster):
        return await _cluster(t)
    if urlsplit(t.url).scheme.lower().endswith("+sentinel"):
        return _sentinel(t.url)
    info = await _info(t, "replication")
    role = info.get("role")
    if role in ("slave", "replica"):
        return Check("topology", "fail", "this server is a read-only replica",
                     "point REDIS_URL at the primary (or use redis+sentinel:// to follow failovers)")
    replicas = int(info.get("connected_slaves", 0))
    return _ok("topology", f"standalone primary with {replicas} replica(s)")


async def _cluster(t: Target) -> Check:
    assert isinstance(t.client, RedisCluster)
    raw: Any = await t.client.cluster_info()
    info = next(iter(raw.values())) if raw and all(isinstance(v, dict) for v in raw.values()) else raw
    nodes = t.client.get_nodes()
    primaries = [n for n in nodes if n.server_type == "primary"]
    detail = (f"Cluster {info.get('cluster_state')}: {len(primaries)} primaries, "
              f"{len(nodes) - len(primaries)} replicas, {info.get('cluster_slots_assigned')} slots assigned")
    if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_assigned", 0)) != 16384:
        return Check("topology", "fail", detail, "assign every slot and fix failed nodes (CLUSTER INFO)")
    if len(nodes) == len(primaries):
        return Check("topology", "warn", detail, "add a replica per primary: a lost node loses its queues")
    return _ok("topology", detail)


def _sentinel(url: str) -> Check:
    target = parse_sentinel_url(url)
    reachable, master = 0, None
    for host, port in target.sentinels:
        try:
            with syncredis.Redis(host=host, port=port, password=target.sentinel_password, socket_timeout=3,
                                 decode_responses=True, ssl=target.ssl) as s:
                master = s.execute_command("SENTINEL", "MASTER", target.service)
                reachable += 1
        except RedisError:
            continue
    fields = dict(zip(master[::2], master[1::2], strict=False)) if isinstance(master, list) else master or {}
    detail = (f"Sentinel: {reachable}/{len(target.sentinels)} sentinels answer; primary of {target.service!r} "
              f"at {fields.get('ip')}:{fields.get('port')}, {fields.get('num-slaves', '?')} replica(s), "
              f"quorum {fields.get('quorum', '?')}")
    if reachable == 0 or "o_down" in str(fields.get("flags", "")):
        return Check("topology", "fail", detail, "start the sentinels and check the primary")
    if len(target.sentinels) < 3 or int(fields.get("num-slaves", 0)) == 0:
        return Check("topology", "warn", detail, "run 3+ sentinels and a replica so a failover can happen")
    return _ok("topology", detail)


async def check_clocks(t: Target) -> Check:
    # The node the workers measure their offsets against (the registry's), so the spread compares like with like.
    here = await clock_offset_ms(t.client, WorkerRegistryKeys(t.prefix).index)
    offsets = {"this machine": here}
    for w in await list_workers(t.client, t.prefix):
        if isinstance(w.get("clock_offset_ms"), int | float):
            offsets[str(w.get("id"))] = float(w["clock_offset_ms"])
    worst_name, worst = max(offsets.items(), key=lambda kv: abs(kv[1]))
    spread = max(offsets.values()) - min(offsets.values())
    detail = (f"{len(offsets) - 1} live worker(s); largest offset from the server's clock: {worst_name} "
              f"{worst:+.0f} ms; spread {spread:.0f} ms")
    if abs(worst) > SKEW_FAIL_MS or spread > SKEW_FAIL_MS:
        return Check("clock skew", "fail", detail, NTP_FIX)
    if abs(worst) > SKEW_WARN_MS or spread > SKEW_WARN_MS:
        return Check("clock skew", "warn", detail + " (jobs use the server's clock; logs and schedules "
                     "shown in local time may disagree)", NTP_FIX)
    return _ok("clock skew", detail)


CHECKS = (check_version, check_persistence, check_eviction, check_listpack, check_latency, check_topology,
          check_clocks)


async def run_checks(t: Target) -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            results.append(await check(t))
        except (RedisError, OSError) as exc:
            results.append(Check(check.__name__.removeprefix("check_"), "fail", f"Redis error: {exc}"))
    return results


MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def doctor(as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Check the server: version, persistence, maxmemory-policy, hash-max-listpack-value, latency,
    Cluster/Sentinel topology and clock skew between workers. Exits 1 when something must be fixed."""
    checks = run(redis_url, prefix, run_checks)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        print_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        for c in checks:
            typer.echo(f"{MARKS[c.status]}  {c.name}: {c.detail}")
            if c.fix:
                typer.echo(f"      fix: {c.fix}")
        warned = sum(c.status == "warn" for c in checks)
        typer.echo(f"\n{len(failed)} problem(s), {warned} warning(s)")
    if failed:
        raise typer.Exit(1)
