"""`conveyor schedules list|pause|resume|run-now|remove` and `conveyor scheduler APP`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from conveyor import codec
from conveyor.errors import ConveyorError
from conveyor.ops.common import redis_failure, run
from conveyor.redis.connection import redact
from conveyor.redis.faults import until_usable
from conveyor.schedules.scheduler import DEFAULT_GRACE_S, DEFAULT_MAINTENANCE_INTERVAL_S
from conveyor.schedules.store import BrokenSchedule, ScheduleInfo, ScheduleStore
from conveyor.settings import Settings

T = TypeVar("T")

schedules_app = typer.Typer(help="List and control schedules.", no_args_is_help=True)

RedisOpt = Annotated[str | None, typer.Option("--redis-url", help="Redis URL (default: $REDIS_URL).")]
PrefixOpt = Annotated[
    str | None, typer.Option("--prefix", help="Key prefix (default: $CONVEYOR_PREFIX or cv).")
]
IdArg = Annotated[str, typer.Argument(help="Schedule id.")]


def _with_store(redis_url: str | None, prefix: str | None, fn: Callable[[ScheduleStore], Awaitable[T]]) -> T:
    return run(redis_url, prefix, lambda target: fn(ScheduleStore(target.client, target.prefix)), _failure)


def _failure(exc: Exception, url: str) -> tuple[str, int]:
    """A Conveyor error (a bad setting, no such schedule) or a Redis one: one line, exit status 1."""
    if isinstance(exc, ConveyorError):
        return str(exc), 1
    return redis_failure(exc, url) or str(exc), 1  # met outside the store's guarded calls


def _timing(info: ScheduleInfo) -> str:
    s = info.schedule
    return f"cron {s.cron!r} {s.tz}" if s.cron else f"every {s.interval_s:g}s"


def _row(info: ScheduleInfo) -> dict[str, Any]:
    s = info.schedule
    return {
        "id": s.id, "kind": s.kind.value, "queue": s.queue, "task": s.task, "timing": _timing(info),
        "missed": s.missed.value, "paused": s.paused, "source": s.source,
        "next_run": info.next_run.isoformat() if info.next_run else None,
        "last_tick": info.last_run.tick.isoformat() if info.last_run and info.last_run.tick else None,
        "broken": None,
    }


def _broken_row(b: BrokenSchedule) -> dict[str, Any]:
    """A definition that cannot be read: listed with why (schedulers skip it) instead of failing the list."""
    row: dict[str, Any] = dict.fromkeys(("kind", "queue", "task", "timing", "missed", "paused", "source",
                                         "next_run", "last_tick"))
    return {"id": b.id, **row, "broken": b.error}


@schedules_app.command("list")
def list_command(
    redis_url: RedisOpt = None, prefix: PrefixOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show every schedule with its next and last run (and the broken ones, with why)."""
    infos, broken = _with_store(redis_url, prefix, lambda st: st.listing())
    rows = sorted([*map(_row, infos), *map(_broken_row, broken)], key=lambda r: str(r["id"]))
    if as_json:
        for row in rows:
            typer.echo(codec.dumps(row).decode())
        return
    if not rows:
        typer.echo("no schedules")
        return
    cols = ["id", "queue", "task", "timing", "missed", "paused", "next_run", "last_tick"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        if r["broken"]:
            typer.echo(f"{str(r['id']).ljust(widths['id'])}  broken: {r['broken']}")
            continue
        typer.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


@schedules_app.command("pause")
def pause_command(schedule_id: IdArg, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Stop a schedule firing (ticks while paused are not run later)."""
    _with_store(redis_url, prefix, lambda st: st.pause(schedule_id))
    typer.echo(f"paused {schedule_id}")


@schedules_app.command("resume")
def resume_command(schedule_id: IdArg, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Fire a paused schedule again, from its next tick."""
    info = _with_store(redis_url, prefix, lambda st: st.resume(schedule_id))
    typer.echo(f"resumed {schedule_id}; next run {info.next_run.isoformat() if info.next_run else 'none'}")


@schedules_app.command("run-now")
def run_now_command(schedule_id: IdArg, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Enqueue one job of a schedule now, besides its regular ticks."""
    job_id = _with_store(redis_url, prefix, lambda st: st.run_now(schedule_id))
    typer.echo(f"enqueued job {job_id}" if job_id else f"{schedule_id} runs at the next scheduler pass")


@schedules_app.command("remove")
def remove_command(schedule_id: IdArg, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Delete a schedule (a schedule declared in code comes back when a scheduler starts)."""
    _with_store(redis_url, prefix, lambda st: st.delete(schedule_id))
    typer.echo(f"removed {schedule_id}")


def load_app(path: str) -> Any:
    """`module:attribute` (attribute defaults to `app`), importable from the current directory."""
    module_name, _, attr = path.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise typer.BadParameter(f"{module_name!r} has no attribute {attr or 'app'!r}") from None


def scheduler_command(
    app_path: Annotated[str, typer.Argument(metavar="APP", help="The Conveyor app, as module:attribute.")],
    redis_url: RedisOpt = None,
    prefix: PrefixOpt = None,
    grace_s: Annotated[float, typer.Option("--grace", help="Seconds after which a tick counts as missed.")]
    = DEFAULT_GRACE_S,
    maintenance_s: Annotated[
        float, typer.Option("--maintenance-interval", help="Seconds between maintenance runs.")
    ] = DEFAULT_MAINTENANCE_INTERVAL_S,
    no_maintenance: Annotated[bool, typer.Option(
        "--no-maintenance", help="Do not run built-in maintenance (deletes its stored schedule).")] = False,
) -> None:
    """Run the scheduler for an app's schedules (any number of these may run at once)."""
    from conveyor.app import Conveyor

    try:  # the app's module may build its Conveyor (and read the settings) as it is imported
        app = load_app(app_path)
        settings = Settings.from_env(redis_url=redis_url, prefix=prefix)
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not isinstance(app, Conveyor):
        raise typer.BadParameter(f"{app_path!r} is not a Conveyor app")
    if settings.redis_url:
        app.use_redis(settings.redis_url)
    if prefix:
        app.prefix = prefix

    async def go() -> None:
        scheduler = app.scheduler(
            grace_s=grace_s, maintenance_interval_s=None if no_maintenance else maintenance_s,
            alerts_interval_s=settings.alerts_interval_s,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        def retrying(exc: BaseException, delay: float) -> None:
            typer.echo(f"redis not usable at start ({type(exc).__name__}: {exc}); retrying in {delay:g} s", err=True)

        try:
            # Like the worker service: a scheduler started while Redis is down waits for it.
            if await until_usable(scheduler.start, stop, retrying):
                typer.echo(f"scheduler running on {redact(app.redis_url)} ({len(app.schedules)} declared)", err=True)
                await stop.wait()
        finally:
            await scheduler.close()
            await app.close()

    try:
        asyncio.run(go())
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
