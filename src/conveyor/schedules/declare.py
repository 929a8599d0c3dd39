"""`@app.cron(...)` and `@app.every(...)`: declare a task and a schedule for it in one decorator."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.schedules.model import MissedPolicy, Schedule, job_options_mapping

if TYPE_CHECKING:
    from conveyor.app import Conveyor, Task

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def interval_seconds(seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> float:
    return float(seconds + 60 * minutes + 3600 * hours + 86400 * days)


def declare(
    app: Conveyor,
    *,
    cron: str | None = None,
    interval_s: float | None = None,
    tz: str = "UTC",
    id: str | None = None,  # the schedule's id, as in the HTTP API
    data: Any = None,
    start: datetime | None = None,
    end: datetime | None = None,
    missed: MissedPolicy | str = MissedPolicy.ONCE,
    catch_up_cap: int = 100,
    paused: bool = False,
    queue: str = "default",
    name: str | None = None,
    concurrency: int | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., Any]], Task[Any]]:
    """The decorator: `app.task(queue=..., name=..., **defaults)` plus a schedule of that task.
    Job options come from the queue and task defaults; `data` is checked against the payload type."""

    def register(fn: Callable[..., Any]) -> Task[Any]:
        task: Task[Any] = app.task(queue=queue, name=name, concurrency=concurrency, **defaults)(fn)
        schedule_id = id or _UNSAFE.sub("-", task.name).strip("-._")[:100] or "schedule"
        if schedule_id in app.schedules:
            raise ConfigurationError(f"schedule {schedule_id!r} is declared twice; pass id=...")
        config = app.queue_configs.get(queue)
        options = task.defaults.merged_over(config.defaults if config else None)
        try:
            schedule = Schedule(
                id=schedule_id, task=task.name, queue=queue, data=task.validate(data),
                options=job_options_mapping(options), cron=cron, tz=tz, interval_s=interval_s,
                start=start, end=end, paused=paused, missed=MissedPolicy(missed), catch_up_cap=catch_up_cap,
                source="code",
            )
        except (ConveyorError, ValueError) as exc:
            raise ConfigurationError(f"schedule for task {task.name!r}: {exc}") from None
        app.schedules[schedule_id] = schedule
        return task

    return register
