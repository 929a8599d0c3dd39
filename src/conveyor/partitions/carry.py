"""What a re-partition carries into the new layout: a job's log when a retry moves the job there
(`carry_log`), and the queue's settings, carried into a new layout's partitions when a re-partition
makes that layout current: the paused flag, the events mode, retention, the queue-wide limits and
group defaults, and each group's limits and weight. Without it the new partitions started with none
of them (a paused queue ran its new jobs at once, limits and retention did not hold) until someone
set them again.

Ordering: the copy runs before the new layout is recorded as current (PartitionedQueue._register),
from the layout that is still current. A crash midway leaves the old layout current, so the next
declaration copies again, over whatever was half copied; once the new layout is current nothing
copies into it any more, so settings made afterwards (through any handle) are never overwritten.
Shared limits are re-shared over the new count: retention counts and bytes from the sum of the old
shares, queue-wide rate, cost and concurrency from the whole limit `set_limits` recorded beside
each share (`whole`; a share set before it was recorded counts as 1/N of the limit)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from conveyor import codec
from conveyor.errors import ConfigurationError
from conveyor.limits import admin as limits_admin
from conveyor.limits.model import GroupLimits, RateLimit
from conveyor.queue import Queue, Retention
from conveyor.redis.faults import redis_call

logger = logging.getLogger(__name__)
SHARED_RETENTION = ("completed_max_count", "failed_max_count", "completed_max_bytes")
WHOLE_RETENTION = ("completed_max_age_ms", "failed_max_age_ms")
WHOLE_LIMITS_FIELD = "whole"  # in each partition's limits hash: the queue-wide limits before sharing


def share_out(limit: int | None, n: int) -> list[int | None]:
    """`limit` shared out over `n` partitions: shares differ by at most one and add up to it."""
    if limit is None:
        return [None] * n
    return [max(1, limit // n + (1 if i < limit % n else 0)) for i in range(n)]


def share_of(limits: GroupLimits, n: int) -> GroupLimits:
    """One partition's share of queue-wide limits over `n` partitions (1/n, rounded up)."""
    def split(limit: RateLimit | None) -> RateLimit | None:
        return None if limit is None else replace(limit, limit=max(1, math.ceil(limit.limit / n)))

    conc = None if limits.concurrency is None else max(1, math.ceil(limits.concurrency / n))
    return GroupLimits(concurrency=conc, rate=split(limits.rate), cost=split(limits.cost))


async def carry_settings(source: Sequence[Queue], target: Sequence[Queue], route: Any) -> None:
    """Copy the settings of the layout `source` (its partitions in order; the plain queue is a layout
    of one) onto the layout `target`; `route(group)` is a group's index in `target`. Idempotent."""
    first = source[0]
    paused = await Queue.is_paused(first)
    mode = await Queue.events_mode(first)
    for part in target:
        if await Queue.is_paused(part) != paused:
            await (Queue.pause(part) if paused else Queue.resume(part))
        if await Queue.events_mode(part) != mode:
            await Queue.set_events_mode(part, mode)
    await _carry_retention(source, target)
    await _carry_limits(source, target)
    await _carry_groups(source, target, route)


def _limits(raw: Any) -> GroupLimits | None:
    """Stored limits (JSON written by set_limits); None when absent or not readable (edited by
    hand): that setting is not carried, and a warning says so, rather than failing the declaration."""
    try:
        return GroupLimits.from_json(codec.loads(raw)) if raw else None
    except (ValueError, TypeError, KeyError, AttributeError, ConfigurationError):
        logger.warning("stored limits are not readable; not carried into the new partition layout")
        return None


def _number(raw: Any) -> int | None:
    """A stored retention value: -1 or nothing is no limit."""
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return None if value < 0 else value


async def _carry_retention(source: Sequence[Queue], target: Sequence[Queue]) -> None:
    rows = [await redis_call(p.client.hmget(p.keys.meta, [*SHARED_RETENTION, *WHOLE_RETENTION])) for p in source]
    if all(raw is None for row in rows for raw in row):
        return  # never set: the new partitions keep the defaults too
    whole: dict[str, int | None] = {}
    for i, name in enumerate(SHARED_RETENTION):
        values = [_number(row[i]) for row in rows]
        whole[name] = None if any(v is None for v in values) else sum(v for v in values if v is not None)
    ages = [_number(rows[0][len(SHARED_RETENTION) + i]) for i in range(len(WHOLE_RETENTION))]
    counts = share_out(whole["completed_max_count"], len(target))
    failed = share_out(whole["failed_max_count"], len(target))
    sizes = share_out(whole["completed_max_bytes"], len(target))
    for i, part in enumerate(target):
        await Queue.set_retention(part, Retention(
            completed_max_count=counts[i], failed_max_count=failed[i], completed_max_bytes=sizes[i],
            completed_max_age_s=None if ages[0] is None else ages[0] / 1000,
            failed_max_age_s=None if ages[1] is None else ages[1] / 1000))


async def _carry_limits(source: Sequence[Queue], target: Sequence[Queue]) -> None:
    first = source[0]
    stored = await redis_call(first.client.hmget(first.keys.limits, ["cfg", WHOLE_LIMITS_FIELD]))
    if stored[0] is None:
        return  # no limits were ever set
    try:
        cfg = codec.loads(stored[0])
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        logger.warning("stored limits are not readable; not carried into the new partition layout")
        return
    whole = _limits(stored[1])
    if whole is None:  # a plain queue's limits are whole; an older partition's share is 1/N of them
        whole = _scaled(_limits(stored[0]) or GroupLimits(), len(source))
    defaults = cfg.get("group_defaults")
    await set_partition_limits(target, whole, _limits(codec.dumps(defaults)) if defaults else None, len(target))


def _scaled(share: GroupLimits, n: int) -> GroupLimits:
    def grow(limit: RateLimit | None) -> RateLimit | None:
        return None if limit is None else replace(limit, limit=limit.limit * n)

    return GroupLimits(None if share.concurrency is None else share.concurrency * n, grow(share.rate), grow(share.cost))


async def set_partition_limits(
    parts: Sequence[Queue], whole: GroupLimits, group_defaults: GroupLimits | None, n: int
) -> None:
    """Each of `parts` gets its share of `whole` over `n` partitions, the whole recorded beside it."""
    share = share_of(whole, n)
    for part in parts:
        await limits_admin.set_limits(part, rate=share.rate, cost=share.cost, concurrency=share.concurrency,
                                      group_defaults=group_defaults, whole=whole.to_json())


async def _carry_groups(source: Sequence[Queue], target: Sequence[Queue], route: Any) -> None:
    """Each group's overrides and weight, from the group's partition of `source` (where it was set)
    to its partition of `target`."""
    for part in source:
        groups = await limits_admin.known_groups(part)
        if not groups:
            continue
        async with part.client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.hmget(part.keys.group(group), ["cfg", "w"])
            rows = await redis_call(pipe.execute())
        for group, (cfg, weight) in zip(groups, rows, strict=True):
            home = target[route(group)]
            overrides = _limits(cfg)
            if overrides is not None:
                await Queue.set_group_limits(home, group, concurrency=overrides.concurrency,
                                             rate=overrides.rate, cost=overrides.cost)
            try:
                if weight is not None:
                    await Queue.set_group_weight(home, group, float(weight))
            except (ValueError, ConfigurationError):
                logger.warning("a group's stored weight is not readable; not carried into the new layout")


LOG_CHUNK = 1000  # lines per RPUSH when a log is copied (a job's log keeps at most 1,000)


async def carry_log(source: Queue, target: Queue, job_id: str) -> None:
    """Copy the log lines of `job_id` from partition `source` to partition `target`, before the job is
    added there (so the new run's lines follow the old ones, as after a plain queue's retry): whatever
    log `target` holds under that id is replaced (no job of that id is there; the lines are from an
    earlier move that stopped before the add), and the copy has no expiry (the failed record's
    `failed_ttl` ends with the retry)."""
    lines = await redis_call(source.client.lrange(source.keys.log(job_id), 0, -1))
    key = target.keys.log(job_id)
    async with target.client.pipeline(transaction=False) as pipe:
        pipe.delete(key)
        for start in range(0, len(lines), LOG_CHUNK):
            pipe.rpush(key, *lines[start:start + LOG_CHUNK])
        await redis_call(pipe.execute())
