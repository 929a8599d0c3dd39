"""Which queues a service runs and with what concurrency: declaration < env override, `--queues` subset."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.settings import DYNAMIC_PREFIXES

CONCURRENCY_PREFIX = DYNAMIC_PREFIXES[0]
MAX_CONCURRENCY = 10_000


@dataclass(frozen=True, slots=True)
class QueuePlan:
    name: str
    concurrency: int


def concurrency_env_name(queue: str) -> str:
    """`CONVEYOR_CONCURRENCY_<QUEUE>`: the name upper-cased, anything not a letter or digit as `_`."""
    return CONCURRENCY_PREFIX + re.sub(r"[^A-Z0-9]", "_", queue.upper())


def _overrides(declared: list[str], environ: Mapping[str, str]) -> dict[str, int]:
    by_env: dict[str, list[str]] = {}
    for name in declared:
        by_env.setdefault(concurrency_env_name(name), []).append(name)
    result: dict[str, int] = {}
    for key, raw in environ.items():
        if not key.startswith(CONCURRENCY_PREFIX):
            continue
        names = by_env.get(key)
        if not names:
            raise ConfigurationError(f"{key} names no queue of this app (queues: {', '.join(declared)})")
        if len(names) > 1:
            raise ConfigurationError(f"{key} is ambiguous: it matches queues {names}")
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_CONCURRENCY:
            raise ConfigurationError(f"{key} must be an integer in [1, {MAX_CONCURRENCY}], got {raw!r}")
        result[names[0]] = value
    return result


def plan_queues(app: Conveyor, queues: str | None, environ: Mapping[str, str]) -> list[QueuePlan]:
    """The queues to run. `queues` is the comma-separated subset (None or empty = all declared)."""
    declared = list(app.queue_configs)
    if not declared:
        raise ConfigurationError("the app declares no queues: declare tasks with @app.task(queue=...)")
    selected = declared
    if queues and queues.strip():
        selected = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = [q for q in selected if q not in app.queue_configs]
        if unknown:
            raise ConfigurationError(f"unknown queue(s) {unknown}: the app declares {declared}")
        selected = list(dict.fromkeys(selected))
    overrides = _overrides(declared, environ)
    return [QueuePlan(q, overrides.get(q, app.queue_configs[q].concurrency)) for q in selected]
