"""`conveyor status|queues|jobs|job`: read-only views; with --json the HTTP API's field names
(`conveyor.views`), so a script can switch between the two."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Annotated, Any

import orjson
import typer

from conveyor.errors import ConnectionFailedError, InvalidOptionError
from conveyor.job import JobState
from conveyor.listing import LISTING_MAX_BYTES
from conveyor.ops.common import (
    IdArg,
    JsonOpt,
    PrefixOpt,
    QueueArg,
    RedisOpt,
    Target,
    age,
    fail,
    print_json,
    redis_failure,
    run,
    short,
    table,
)
from conveyor.queue import MAX_LIST_CURSOR
from conveyor.redis.connection import redact
from conveyor.redis.faults import is_fault
from conveyor.views import due_times, job_view, jobs_view, list_workers, oldest_waiting_age_ms, queue_names, queue_view

STATES = [s.value for s in JobState]


async def status_document(t: Target) -> dict[str, Any]:
    """{"workers": [...as GET /api/workers], "queues": [...as GET /api/queues]} for every queue in Redis."""
    workers = await list_workers(t.client, t.prefix)
    served = {str(q) for w in workers for q in (w.get("queues") or [])}
    names = await queue_names(t.client, t.prefix, also=served)
    opened = [await t.opened(n) for n in names]
    queues = await asyncio.gather(*(queue_view(q) for q in opened))
    return {"workers": workers, "queues": list(queues)}


def _worker_rows(workers: list[dict[str, Any]]) -> list[list[Any]]:
    now_ms = time.time() * 1000
    rows = []
    for w in workers:
        concurrency = w.get("concurrency")
        slots = sum(concurrency.values()) if isinstance(concurrency, dict) else concurrency
        counts = w.get("counts") or {}
        active = sum(int(c.get("active", 0)) for c in counts.values() if isinstance(c, dict))
        started = w.get("started_ms")
        rows.append([w.get("id"), w.get("host"), ",".join(w.get("queues") or []), slots, active,
                     age(now_ms - started) if isinstance(started, int | float) else None])
    return rows


def limits_summary(limits: dict[str, Any]) -> str:
    """The limits state in a few words: fleet-wide active/cap, rate tokens left, blocked-until."""
    parts = []
    conc = limits.get("concurrency")
    if isinstance(conc, dict):
        parts.append(f"active {conc.get('active')}/{conc.get('limit')}")
    for kind in ("rate", "cost"):
        state = limits.get(kind)
        if isinstance(state, dict):
            parts.append(f"{kind} {state.get('tokens', '?')} left")
    blocked = limits.get("blocked_until_ms")
    if blocked:
        parts.append(f"blocked {age(blocked - limits.get('now_ms', blocked))}")
    return ", ".join(parts) or "-"


def _queue_rows(queues: list[dict[str, Any]], extra: str | None = None) -> list[list[Any]]:
    rows = []
    for q in queues:
        row = [q["name"], "yes" if q["paused"] else "no", *(q["counts"].get(s, 0) for s in STATES)]
        row.append(age(q.get(extra)) if extra else limits_summary(q.get("limits") or {}))
        rows.append(row)
    return rows


def render_status(doc: dict[str, Any]) -> str:
    workers = doc["workers"]
    head = f"Workers ({len(workers)} live)"
    worker_table = table(["ID", "HOST", "QUEUES", "SLOTS", "ACTIVE", "UPTIME"], _worker_rows(workers))
    queue_table = table(["QUEUE", "PAUSED", *(s.upper() for s in STATES), "LIMITS"], _queue_rows(doc["queues"]))
    return f"{head}\n{worker_table if workers else '  none'}\n\nQueues ({len(doc['queues'])})\n{queue_table}"


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, max=3600, help="Seconds between refreshes.")] = 2.0,
    as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None,
) -> None:
    """The whole system at a glance: live workers, every queue's counts, paused flags and limits."""

    async def once(t: Target) -> None:
        doc = await status_document(t)
        if as_json:
            print_json(doc)
        else:
            if watch and sys.stdout.isatty():
                typer.echo("\x1b[H\x1b[2J", nl=False)  # clear the screen between refreshes
            typer.echo(render_status(doc))
            if watch:
                typer.echo(f"\n(every {interval:g}s; Ctrl-C to stop)")
        sys.stdout.flush()

    async def unreachable(t: Target, exc: Exception) -> None:
        """--watch rides out a Redis fault: it says so where the status was and tries again."""
        line = redis_failure(exc, t.url) or f"Redis at {redact(t.url)} failed: {exc}"
        if as_json:  # stdout stays a stream of status documents
            typer.echo(f"error: {line} (trying again every {interval:g}s)", err=True)
        else:
            if sys.stdout.isatty():
                typer.echo("\x1b[H\x1b[2J", nl=False)
            typer.echo(f"{line}\n\n(trying again every {interval:g}s; Ctrl-C to stop)")
        sys.stdout.flush()

    async def loop(t: Target) -> None:
        while True:
            try:
                await once(t)
            except Exception as exc:
                if not watch or not _is_outage(exc):
                    raise
                await unreachable(t, exc)
            if not watch:
                return
            await asyncio.sleep(interval)

    try:
        run(redis_url, prefix, loop)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _is_outage(exc: BaseException) -> bool:
    """A failure that means Redis (or the way to it) is not usable now; a later refresh may work."""
    return isinstance(exc, ConnectionFailedError | OSError) or is_fault(exc)


def queues(as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Every queue in Redis (declared by an app or not): counts by state and the oldest waiting job's age."""

    async def go(t: Target) -> list[dict[str, Any]]:
        workers = await list_workers(t.client, t.prefix)
        served = {str(q) for w in workers for q in (w.get("queues") or [])}
        names = await queue_names(t.client, t.prefix, also=served)

        async def one(name: str) -> dict[str, Any]:
            q = await t.opened(name)
            view, oldest = await asyncio.gather(queue_view(q), oldest_waiting_age_ms(q))
            return {**view, "oldest_waiting_age_ms": oldest}

        return list(await asyncio.gather(*(one(n) for n in names)))

    found = run(redis_url, prefix, go)
    if as_json:
        print_json({"queues": found})
    elif not found:
        typer.echo("no queues in Redis yet")
    else:
        headers = ["QUEUE", "PAUSED", *(s.upper() for s in STATES), "OLDEST WAITING"]
        typer.echo(table(headers, _queue_rows(found, "oldest_waiting_age_ms")))


def jobs(
    queue: QueueArg,
    state: Annotated[str, typer.Option("--state", "-s", help=f"One of {', '.join(STATES)}.")] = "waiting",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Most jobs listed.")] = 20,
    cursor: Annotated[
        int, typer.Option("--cursor", min=0, max=MAX_LIST_CURSOR, help="From a previous page's next_cursor.")
    ] = 0,
    as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None,
) -> None:
    """Jobs of one state: waiting in claim order, delayed by due time, active by lease deadline,
    finished ones newest first (as GET /api/queues/QUEUE/jobs). A page reads what it shows within
    the API's byte bound: the table no payloads, --json payloads up to LISTING_MAX_BYTES of records,
    ending early with next_cursor set."""
    if state not in STATES:
        fail(f"unknown state {state!r}: use one of {', '.join(STATES)}", 2)

    async def go(t: Target) -> dict[str, Any]:
        q = await t.existing_queue(queue)
        try:
            page = await q.list_jobs(state, cursor=cursor, limit=limit, with_data=as_json,
                                     max_bytes=LISTING_MAX_BYTES)
        except InvalidOptionError as exc:  # a partitioned queue's cursor cap (docs/scaling.md)
            fail(f"--cursor: {exc}", 2)
        return {"jobs": await jobs_view(q, page.jobs, show_data=as_json), "next_cursor": page.next_cursor}

    doc = run(redis_url, prefix, go)
    if as_json:
        print_json(doc)
        if doc["next_cursor"] is not None and len(doc["jobs"]) < limit:  # cut by the byte bound
            typer.echo(f"more: --cursor {doc['next_cursor']} (a page reads at most "
                       f"{LISTING_MAX_BYTES // (1024 * 1024)} MiB of records)", err=True)
        return
    if not doc["jobs"]:
        typer.echo(f"no {state} jobs in {queue}")
        return
    now_ms = time.time() * 1000
    rows = [[j["id"], j["name"], j["state"], f"{j['attempts_made']}/{j['max_attempts']}",
             age(now_ms - j["created_ms"]) if j["created_ms"] else None,
             short(f"{j['error'].get('type')}: {j['error'].get('message')}", 50) if j["error"] else None]
            for j in doc["jobs"]]
    typer.echo(table(["ID", "NAME", "STATE", "ATTEMPTS", "AGE", "ERROR"], rows))
    if doc["next_cursor"] is not None:
        typer.echo(f"(more: --cursor {doc['next_cursor']})")


def _json(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def render_job(doc: dict[str, Any]) -> str:
    fields = ["id", "queue", "name", "state", "priority", "attempts_made", "max_attempts", "stalls", "worker",
              "created_ms", "started_ms", "finished_ms", "progress", "cancel_requested", "idempotency_key"]
    lines = [f"{f:<17} {'-' if doc.get(f) is None else _json(doc[f])}" for f in fields]
    lines.append(f"{'options':<17} {short(_json(doc['options']), 200)}")
    lines.append(f"{'data':<17} {short(_json(doc['data']), 200)}")
    if doc["state"] == JobState.COMPLETED:
        lines.append(f"{'result':<17} {short(_json(doc['result']), 200)}")
    error = doc.get("error")
    if error:
        lines.append(f"{'error':<17} {error.get('type')}: {error.get('message')} (attempt {error.get('attempt')})")
        if error.get("stack"):
            lines += ["", str(error["stack"]).rstrip()]
    logs = doc.get("logs") or []
    lines += ["", f"logs ({len(logs)})", *(f"  {line}" for line in logs)]
    return "\n".join(lines)


def job(
    queue: QueueArg, job_id: IdArg, as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None
) -> None:
    """One job: its record (as GET /api/jobs/QUEUE/ID), last error with traceback, and its log lines."""

    async def go(t: Target) -> dict[str, Any]:
        q = await t.existing_queue(queue)
        record = await q.get_job(job_id)
        if record is None:
            fail(f"job {job_id!r} not found in queue {queue!r}")
        due = await due_times(q, [record])
        return {**job_view(record, due_ms=due.get(job_id)), "logs": await q.get_logs(job_id)}

    doc = run(redis_url, prefix, go)
    if as_json:
        print_json(doc)
    else:
        typer.echo(render_job(doc))
