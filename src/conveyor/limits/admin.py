"""Reading and changing a queue's limits. Writes go through one script (set-limits-7.lua) so a
change reaches every worker at its next claim; reads come from one consistent snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor import codec
from conveyor.errors import ConfigurationError, InvalidOptionError
from conveyor.limits.model import GroupLimits, RateLimit, check_weight, limiter_fields
from conveyor.options import JobOptions
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.faults import redis_call

if TYPE_CHECKING:
    from conveyor.queue import Queue

MAX_GROUPS_LISTED = 100


def check_group(group: str) -> str:
    try:
        JobOptions(group=group)
    except InvalidOptionError as exc:
        raise ConfigurationError(str(exc)) from None
    return group


def _changed(current: dict[str, str | None], new: dict[str, str], prefix: str) -> bool:
    return any(current.get(f) != new.get(f) for f in (prefix + "_t", prefix + "_cap"))


async def _write(queue: Queue, group: str, target: str, values: dict[str, str], managed: list[str]) -> None:
    """Set `values`, delete the other `managed` fields; a limiter whose parameters change starts rested."""
    raw = await redis_call(queue.client.hmget(target, [*managed]))
    current = dict(zip(managed, raw, strict=True))
    delete = [f for f in managed if f not in values]
    for prefix, tat in (("rate", "rtat"), ("cost", "ctat")):
        if _changed(current, values, prefix):
            delete.append(tat)
    await queue.scripts.set_limits(group, delete, sorted(values.items()))


async def set_limits(
    queue: Queue,
    *,
    rate: RateLimit | None = None,
    concurrency: int | None = None,
    cost: RateLimit | None = None,
    group_defaults: GroupLimits | None = None,
    whole: dict[str, Any] | None = None,
) -> None:
    """Replace the queue's limits (what is not given is removed). `whole`: a partition's share is
    set, and these are the queue-wide limits it was shared from (kept for a re-partition)."""
    own = GroupLimits(concurrency=concurrency, rate=rate, cost=cost)
    if group_defaults is not None and not isinstance(group_defaults, GroupLimits):
        raise ConfigurationError(f"group_defaults must be GroupLimits, got {group_defaults!r}")
    values = own.fields("")
    config: dict[str, Any] = own.to_json()
    if group_defaults is not None:
        values.update(group_defaults.fields("g_"))
        config["group_defaults"] = group_defaults.to_json()
    values["cfg"] = codec.dumps(config).decode()
    if whole is not None:
        values["whole"] = codec.dumps(whole).decode()
    managed = [*limiter_fields(""), *limiter_fields("g_"), "cfg", "whole"]
    await _write(queue, "", queue.keys.limits, values, managed)


async def clear_limits(queue: Queue) -> None:
    await set_limits(queue)


async def set_group_limits(
    queue: Queue,
    group: str,
    *,
    concurrency: int | None = None,
    rate: RateLimit | None = None,
    cost: RateLimit | None = None,
) -> None:
    """Replace one group's overrides of the queue's group defaults (None = use the default)."""
    check_group(group)
    own = GroupLimits(concurrency=concurrency, rate=rate, cost=cost)
    values = own.fields("")
    if values:
        values["cfg"] = codec.dumps(own.to_json()).decode()
    await _write(queue, group, queue.keys.group(group), values, [*limiter_fields(""), "cfg"])


async def clear_group_limits(queue: Queue, group: str) -> None:
    await set_group_limits(queue, group)


async def set_group_weight(queue: Queue, group: str, weight: float) -> None:
    """A group of weight w gets w turns per round of the rotation (default 1)."""
    check_group(group)
    w = check_weight(weight)
    if w == 1.0:
        await queue.scripts.set_limits(group, ["w"], [])
    else:
        await queue.scripts.set_limits(group, [], [("w", repr(w))])


# --------------------------------------------------------------------------- state


def _num(raw: Any) -> float | None:
    return None if raw is None else float(raw)


def _limiter_state(
    fields: dict[str, Any], prefix: str, tat_field: str, now: int, cfg: Any
) -> dict[str, Any] | None:
    t, cap = _num(fields.get(prefix + "_t")), _num(fields.get(prefix + "_cap"))
    if t is None or cap is None:
        return None
    tat = _num(fields.get(tat_field)) or 0.0
    level = max(0.0, tat - now) / t
    tokens = cap - level
    out: dict[str, Any] = dict(cfg) if isinstance(cfg, dict) else {}
    out["tokens"] = round(tokens, 3)
    out["reopens_in_ms"] = 0 if tokens >= 1 else max(0, round(tat - (cap - 1) * t - now))
    return out


def _group_entry(entry: dict[str, Any], defaults: dict[str, Any], now: int) -> dict[str, Any]:
    f = entry.get("fields") or {}
    merged = {**defaults, **{k: v for k, v in f.items() if k in limiter_fields("")}}
    cfg = codec.loads(f.get("cfg")) or {}
    blk = _num(f.get("blk"))
    out: dict[str, Any] = {
        "group": entry["group"],
        "state": entry["state"],
        "waiting": int(entry["waiting"]),
        "active": int(f.get("ga", 0)),
        "weight": float(f.get("w", 1)),
        "blocked_until_ms": int(blk) if blk and blk > now else None,
        "overrides": cfg or None,
        "concurrency": int(merged["conc"]) if merged.get("conc") else None,
        "rate": _limiter_state({**merged, **f}, "rate", "rtat", now, None) if merged.get("rate_t") else None,
        "cost": _limiter_state({**merged, **f}, "cost", "ctat", now, None) if merged.get("cost_t") else None,
    }
    if entry["state"] == "parked" and entry.get("score") is not None:
        out["reopens_in_ms"] = max(0, int(entry["score"]) - now)
    return out


async def limits_state(queue: Queue, max_groups: int = MAX_GROUPS_LISTED) -> dict[str, Any]:
    """Limits, their live state and the group backlog, as plain JSON-ready data (for stats, the
    HTTP API and metrics). Group lists hold at most `max_groups` entries per kind."""
    snap = codec.loads(await queue.scripts.limits_state(max_groups))
    now = int(snap["now"])
    q = snap.get("queue") or {}
    cfg = codec.loads(q.get("cfg")) or {}
    blk = _num(q.get("blk"))
    defaults = {k.removeprefix("g_"): v for k, v in q.items() if k in limiter_fields("g_")}
    groups = snap.get("groups") or []
    if isinstance(groups, dict):  # cjson encodes an empty list as {}
        groups = []
    conc = int(q["conc"]) if q.get("conc") else None
    counts = snap["counts"]
    return {
        "now_ms": now,
        "paused": bool(snap["paused"]),
        "limits_path": bool(snap["lim"]),
        "blocked_until_ms": int(blk) if blk and blk > now else None,
        "concurrency": None if conc is None else {"limit": conc, "active": int(snap["active"])},
        "active": int(snap["active"]),
        "rate": _limiter_state(q, "rate", "rtat", now, cfg.get("rate")),
        "cost": _limiter_state(q, "cost", "ctat", now, cfg.get("cost")),
        "group_defaults": cfg.get("group_defaults"),
        "waiting": {"ungrouped": int(snap["ready"]), "grouped": int(snap["gwait"])},
        "groups": {
            "ready": int(counts["ready"]),
            "parked": int(counts["parked"]),
            "capped": int(counts["capped"]),
            "known": int(counts["known"]),
            "list": [_group_entry(g, defaults, now) for g in groups],
        },
    }


async def group_state(queue: Queue, group: str) -> dict[str, Any]:
    """One group's limits and their live state (the fields of a `limits_state` group entry), also for
    a group that has no waiting jobs and so is in no list. Not one snapshot: three reads, then the queue's clock."""
    check_group(group)
    k = queue.keys
    async with queue.client.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.group(group))
        pipe.zcard(k.group_ready(group))
        pipe.hgetall(k.limits)
        fields, waiting, q = await redis_call(pipe.execute())
    # The clock of the queue's node, which its limiter scripts read (not the node a plain TIME picks).
    now = await redis_call(redis_now_ms(queue.client, k.limits))
    defaults = {key.removeprefix("g_"): v for key, v in q.items() if key in limiter_fields("g_")}
    return _group_entry({"group": group, "state": "idle", "waiting": waiting, "fields": fields}, defaults, now)


# --------------------------------------------------------------------------- housekeeping


async def known_groups(queue: Queue) -> list[str]:
    return sorted(await redis_call(queue.client.smembers(queue.keys.groups)))


async def grouped_waiting(queue: Queue) -> int:
    return int(await redis_call(queue.client.hget(queue.keys.meta, "gwait")) or 0)


async def waiting_ids(queue: Queue, cursor: int, limit: int) -> list[str]:
    """Waiting job ids: ungrouped ones in claim order, then each group's (groups by name)."""
    k = queue.keys
    ids: list[str] = list(await redis_call(queue.client.zrange(k.ready, cursor, cursor + limit - 1)))
    if len(ids) == limit or await grouped_waiting(queue) <= 0:
        return ids
    offset = max(0, cursor - int(await redis_call(queue.client.zcard(k.ready))))
    for group in await known_groups(queue):
        key = k.group_ready(group)
        size = int(await redis_call(queue.client.zcard(key)))
        if offset >= size:
            offset -= size
            continue
        ids += await redis_call(queue.client.zrange(key, offset, offset + limit - len(ids) - 1))
        offset = 0
        if len(ids) >= limit:
            break
    return ids


async def drain_groups(queue: Queue, delete_all: Any) -> int:
    """Delete every grouped waiting job (`delete_all(key, event)` is the queue's batch deleter)."""
    total = 0
    for group in await known_groups(queue):
        total += int(await delete_all(queue.keys.group_ready(group), "drained"))
    return total
