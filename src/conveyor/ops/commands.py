"""`conveyor enqueue|retry|cancel|promote|remove|purge|pause|resume`: the operator's write actions.

Each is one call of the engine's Queue (one Lua script per change); --json prints the HTTP API's
response fields for the same action.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer

from conveyor import resend
from conveyor.bulk import delete_state, retry_failed
from conveyor.errors import InvalidJobError, InvalidOptionError
from conveyor.job import JobState
from conveyor.ops.common import IdArg, JsonOpt, PrefixOpt, QueueArg, RedisOpt, Target, fail, print_json, run
from conveyor.views import list_workers, queue_names


def _say(as_json: bool, document: dict[str, Any], text: str) -> None:
    if as_json:
        print_json(document)
    else:
        typer.echo(text)


# The engine's names for the options `enqueue` takes (as its messages spell them), and their flags.
_OPTION_FLAGS = {
    "job id": "--job-id", "job_id": "--job-id", "idempotency key": "--idempotency-key",
    "idempotency_key": "--idempotency-key", "priority": "--priority", "delay": "--delay", "run_at": "--run-at",
    "attempts": "--attempts", "backoff": "--backoff", "timeout": "--timeout", "group": "--group", "cost": "--cost",
}
_OPTION_NAMES = re.compile("|".join(rf"\b{re.escape(name)}\b" for name in _OPTION_FLAGS))


def _bad_job(exc: InvalidJobError) -> str:
    """The engine's refusal of a job as a bad-argument line that names the flag it is about (the
    first option its message names; --data for the payload's own errors)."""
    found = _OPTION_NAMES.search(str(exc)) if isinstance(exc, InvalidOptionError) else None
    flag = _OPTION_FLAGS[found.group(0)] if found else "--data" if not isinstance(exc, InvalidOptionError) else None
    return f"{flag}: {exc}" if flag else str(exc)


def enqueue(
    queue: QueueArg,
    name: Annotated[str, typer.Argument(help="Job name (a task declared on the queue).")],
    data: Annotated[str, typer.Option("--data", "-d", help="The job's data as JSON.")] = "null",
    job_id: Annotated[str | None, typer.Option("--job-id", help="Your own id (not all digits).")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Repeat-safe key.")] = None,
    priority: Annotated[int | None, typer.Option(help="In [-1000, 1000]; higher runs first.")] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it becomes ready.")] = None,
    run_at: Annotated[str | None, typer.Option("--run-at", help="ISO 8601 time with offset.")] = None,
    attempts: Annotated[int | None, typer.Option(help="Total tries.")] = None,
    backoff: Annotated[float | None, typer.Option(help="Seconds between attempts (fixed).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds a run may take.")] = None,
    group: Annotated[str | None, typer.Option(help="Fairness group.")] = None,
    cost: Annotated[int | None, typer.Option(help="Cost units (limits).")] = None,
    as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None,
) -> None:
    """Enqueue a job by name with JSON data and options (validated before anything is written)."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        fail(f"--data is not valid JSON: {exc}", 2)
    when = None
    if run_at is not None:
        try:
            when = datetime.fromisoformat(run_at)
        except ValueError:
            fail(f"--run-at must be an ISO 8601 time with offset, got {run_at!r}", 2)

    async def go(t: Target) -> dict[str, Any]:
        try:
            job = await (await t.opened(queue)).add(
                name, payload, job_id=job_id, idempotency_key=idempotency_key, priority=priority, delay=delay,
                run_at=when, attempts=attempts, backoff=backoff, timeout=timeout, group=group, cost=cost,
            )
        except InvalidJobError as exc:  # checked before anything is written: a bad argument
            fail(_bad_job(exc), 2)
        state = await job.state()
        return {"id": job.id, "queue": queue, "state": state.value, "created": job.created}

    doc = run(redis_url, prefix, go)
    verb = "enqueued" if doc["created"] else "already there:"
    _say(as_json, doc, f"{verb} job {doc['id']} on {queue} ({doc['state']})")


def retry(
    queue: QueueArg,
    job_id: Annotated[str | None, typer.Argument(help="Job id (or --all-failed).", show_default=False)] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Retry every failed job of the queue.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000_000, help="Most jobs --all-failed retries.")] = 100_000,
    as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None,
) -> None:
    """Send a failed or cancelled job back to waiting with fresh attempts, or every failed one."""
    if (job_id is None) == (not all_failed):
        fail("give either a job id or --all-failed", 2)

    async def go(t: Target) -> dict[str, Any]:
        q = await t.existing_queue(queue)
        if job_id is not None:
            outcome = await resend.retry_job(q, job_id)
            return {"id": job_id, "queue": queue, "state": outcome.state.value, "already": outcome.already}
        retried, remaining = await retry_failed(q, limit)
        return {"queue": queue, "retried": retried, "remaining": remaining}

    doc = run(redis_url, prefix, go)
    if job_id is not None:
        state = doc["state"]
        again = f"was already {state} (retried before)" if doc.pop("already") else f"is {state} again"
        _say(as_json, doc, f"job {job_id} of {queue} {again}")
    else:
        _say(as_json, doc, f"retried {doc['retried']} failed jobs of {queue}; {doc['remaining']} still failed")


def cancel(queue: QueueArg, job_id: IdArg, as_json: JsonOpt = False, redis_url: RedisOpt = None,
           prefix: PrefixOpt = None) -> None:
    """Cancel a waiting or delayed job now; an active one is asked to stop (its handler decides)."""
    state, already = run(redis_url, prefix, lambda t: _existing(t, queue, lambda q: resend.cancel_job(q, job_id)))
    text = (f"cancellation of active job {job_id} requested" if state is JobState.ACTIVE
            else f"job {job_id} of {queue} was already cancelled" if already
            else f"job {job_id} of {queue} cancelled")
    _say(as_json, {"id": job_id, "queue": queue, "state": JobState(state).value}, text)


def promote(queue: QueueArg, job_id: IdArg, as_json: JsonOpt = False, redis_url: RedisOpt = None,
            prefix: PrefixOpt = None) -> None:
    """Make a delayed job ready now."""
    run(redis_url, prefix, lambda t: _existing(t, queue, lambda q: q.promote(job_id)))
    _say(as_json, {"id": job_id, "queue": queue, "state": JobState.WAITING.value},
         f"job {job_id} of {queue} is waiting (promoted)")


def remove(queue: QueueArg, job_id: IdArg, as_json: JsonOpt = False, redis_url: RedisOpt = None,
           prefix: PrefixOpt = None) -> None:
    """Delete a job that is not active (cancel an active job first)."""
    run(redis_url, prefix, lambda t: _existing(t, queue, lambda q: q.remove(job_id)))
    _say(as_json, {"id": job_id, "queue": queue, "removed": True}, f"job {job_id} of {queue} removed")


async def _existing(t: Target, queue: str, action: Any) -> Any:
    return await action(await t.existing_queue(queue))


def purge(
    queue: QueueArg,
    state: Annotated[str, typer.Argument(help="waiting, delayed, completed, failed or cancelled.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None,
) -> None:
    """Delete every job of one state in a queue, in bounded batches (asks first unless --yes)."""
    # Not active ones (cancel them first) nor parents waiting for their children (the flow holds them).
    allowed = [s.value for s in JobState if s not in (JobState.ACTIVE, JobState.WAITING_CHILDREN)]
    if state not in allowed:
        fail(f"cannot purge {state!r} jobs: use one of {', '.join(allowed)} (cancel active jobs first)", 2)

    async def count(t: Target) -> int:
        return (await (await t.existing_queue(queue)).counts())[JobState(state)]

    if not yes:
        n = run(redis_url, prefix, count)
        if n == 0:
            _say(as_json, {"queue": queue, "state": state, "purged": 0}, f"no {state} jobs in {queue}")
            return
        try:
            confirmed = typer.confirm(f"Delete {n} {state} job(s) of queue {queue}?", default=False, err=True)
        except typer.Abort:  # no answer (stdin closed)
            confirmed = False
        if not confirmed:
            fail("not confirmed; nothing deleted (pass --yes to skip the question)")
    purged = run(redis_url, prefix, lambda t: _existing(t, queue, lambda q: delete_state(q, state)))
    _say(as_json, {"queue": queue, "state": state, "purged": purged}, f"deleted {purged} {state} job(s) of {queue}")


async def _all_queues(t: Target) -> list[str]:
    workers = await list_workers(t.client, t.prefix)
    return await queue_names(t.client, t.prefix, also={str(q) for w in workers for q in (w.get("queues") or [])})


def _set_paused(queue: str | None, every: bool, paused: bool, as_json: bool, redis_url: str | None,
                prefix: str | None) -> None:
    if (queue is None) == (not every):
        fail("give either a queue name or --all", 2)

    async def go(t: Target) -> list[str]:
        names = await _all_queues(t) if every else [(await t.existing_queue(str(queue))).name]
        queues = [await t.opened(n) for n in names]
        await asyncio.gather(*((q.pause() if paused else q.resume()) for q in queues))
        return names

    names = run(redis_url, prefix, go)
    word = "paused" if paused else "resumed"
    if every:
        _say(as_json, {"queues": [{"name": n, "paused": paused} for n in names]},
             f"{word} {len(names)} queue(s): {', '.join(names) or '-'}")
    else:
        _say(as_json, {"name": names[0], "paused": paused}, f"{word} {names[0]}")


_QueueOpt = Annotated[str | None, typer.Argument(help="Queue name (or --all).", show_default=False)]
_AllOpt = Annotated[bool, typer.Option("--all", help="Every queue in Redis.")]


def pause(queue: _QueueOpt = None, every: _AllOpt = False, as_json: JsonOpt = False, redis_url: RedisOpt = None,
          prefix: PrefixOpt = None) -> None:
    """Stop handing out jobs of a queue (or of every queue), in every worker process; running jobs finish."""
    _set_paused(queue, every, True, as_json, redis_url, prefix)


def resume(queue: _QueueOpt = None, every: _AllOpt = False, as_json: JsonOpt = False, redis_url: RedisOpt = None,
           prefix: PrefixOpt = None) -> None:
    """Hand out jobs of a paused queue (or of every queue) again."""
    _set_paused(queue, every, False, as_json, redis_url, prefix)
