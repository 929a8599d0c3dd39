"""Upstream backpressure from HTTP: turn "429 Too Many Requests" (and 503 with Retry-After) into
`RateLimited`, so the job goes back without using an attempt and claiming pauses meanwhile.

Works with any response object that has `status_code` and `headers` (httpx, requests, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from conveyor.errors import RateLimited

DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 3600.0
_MAX_HEADER_CHARS = 100


class ResponseLike(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def raise_for_rate_limit(
    response: ResponseLike,
    *,
    default_retry_after: float = DEFAULT_RETRY_AFTER_S,
    max_retry_after: float = MAX_RETRY_AFTER_S,
) -> None:
    """Raise RateLimited for a 429 (Retry-After, else `default_retry_after`) or a 503 that carries
    Retry-After; do nothing otherwise. The wait is capped at `max_retry_after` seconds."""
    status = response.status_code
    if status not in (429, 503):
        return
    seconds = parse_retry_after(response.headers.get("retry-after"))
    if seconds is None:
        if status == 503:
            return
        seconds = default_retry_after
    seconds = min(seconds, max_retry_after)
    raise RateLimited(retry_after=seconds, reason=f"upstream returned {status}; retry after {seconds:g}s")
