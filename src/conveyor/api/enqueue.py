"""Turning HTTP enqueue bodies into validated job specs (every check runs before anything is written)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.api.errors import ApiError
from conveyor.api.schemas import MAX_BULK
from conveyor.app import Conveyor
from conveyor.errors import InvalidJobError, PayloadValidationError
from conveyor.options import JobOptions, JobSpec

_KEYS = frozenset({"name", "data", "options"})


def _check_backoff(app: Conveyor, value: Any) -> None:
    """Over HTTP a backoff is data only: seconds, "exponential", a fixed/exponential object, or a
    policy the application registered by name. Nothing names a function for workers to import."""
    if value is None or isinstance(value, int | float) or value == "exponential":
        return
    if isinstance(value, Mapping) and value.get("type") in ("fixed", "exponential"):
        return
    if isinstance(value, Mapping) and value.get("type") == "named":
        if value.get("name") in app.backoffs:
            return
        raise ApiError(422, "options.backoff names a policy this application does not register")
    raise ApiError(
        422, 'options.backoff must be seconds, "exponential" or {"type": "fixed"|"exponential"|"named"}'
    )


def build_spec(app: Conveyor, queue: str, body: Any, idempotency_key: str | None = None) -> JobSpec:
    """One body → a spec: 422 for bad structure, data or options, 404 for an undeclared task."""
    if not isinstance(body, Mapping):
        raise ApiError(422, "a job must be a JSON object with name, data and options")
    unknown = set(body) - _KEYS
    if unknown:
        raise ApiError(422, f"unknown fields {sorted(unknown)}; a job has name, data and options")
    name = body.get("name")
    if not isinstance(name, str):
        raise ApiError(422, "'name' must be a string naming a task")
    task = app.get_task(queue, name)
    if task is None:
        raise ApiError(404, f"queue {queue!r} has no task named {name[:200]!r}")
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ApiError(422, "'options' must be a JSON object")
    if idempotency_key is not None:
        given = options.get("idempotency_key")
        if given is not None and given != idempotency_key:
            raise ApiError(422, "the Idempotency-Key header and options.idempotency_key differ")
        options = {**options, "idempotency_key": idempotency_key}
    _check_backoff(app, options.get("backoff"))
    data = task.validate(body.get("data"))
    opts = JobOptions.from_mapping(options)
    return JobSpec(name, data, opts.merged_over(task.defaults))


def build_bulk(app: Conveyor, queue: str, body: Any, idempotency_key: str | None) -> list[JobSpec]:
    """All specs or none: every job is checked and all failures are reported together."""
    if not isinstance(body, Mapping) or set(body) != {"jobs"} or not isinstance(body["jobs"], list):
        raise ApiError(422, 'the body must be {"jobs": [...]}')
    jobs = body["jobs"]
    if not 1 <= len(jobs) <= MAX_BULK:
        raise ApiError(422, f"a bulk call takes 1 to {MAX_BULK} jobs, got {len(jobs)}")
    specs: list[JobSpec] = []
    failures: list[dict[str, Any]] = []
    status = 422
    for i, item in enumerate(jobs):
        key = None if idempotency_key is None else f"{idempotency_key}:{i}"
        try:
            specs.append(build_spec(app, queue, item, key))
        except ApiError as exc:
            status = 404 if exc.status == 404 else status
            failures.append({"index": i, "code": exc.code, "message": exc.message})
        except PayloadValidationError as exc:
            failures.append(
                {"index": i, "code": "validation_error", "message": "data is invalid", "errors": exc.errors}
            )
        except InvalidJobError as exc:
            failures.append({"index": i, "code": "invalid_job", "message": str(exc)})
    if failures:
        unknown = sum(1 for f in failures if f["code"] == "not_found")
        parts = [f"{unknown} naming an unknown task"] if unknown else []
        if len(failures) > unknown:
            parts.append(f"{len(failures) - unknown} invalid")
        what = ", ".join(parts)
        raise ApiError(
            status,
            f"{len(failures)} of {len(jobs)} jobs rejected ({what}); nothing was enqueued",
            details=failures,
        )
    return specs
