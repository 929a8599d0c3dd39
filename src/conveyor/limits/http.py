"""Upstream backpressure from HTTP: turn "429 Too Many Requests" (and 503 with Retry-After) into
`RateLimited`, so the job goes back without using an attempt and claiming pauses meanwhile.

Works with any response object that has `status_code` and `headers` (httpx, requests, ...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from conveyor.errors import RateLimited

DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 3600.0
# The shortest wait a 'slow down' answer gets: a peer answering `Retry-After: 0` (or a date in the
# past) would otherwise have the job re-sent at once, over and over, without using an attempt.
MIN_RETRY_AFTER_S = 1.0
_MAX_HEADER_CHARS = 100
# delta-seconds (RFC 9110: ASCII digits; a decimal fraction, as some servers send, is taken too).
_DELTA = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class ResponseLike(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After value asks for, within [0, MAX_RETRY_AFTER_S]: delta-seconds or an
    HTTP-date (a date past: 0). None when absent or neither form: a negative number, NaN, inf, an
    exponent, digits of another script or text are no wait (float() would take several of them)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    if _DELTA.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if not math.isfinite(seconds):
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The one rule for a 'slow down' answer's wait: `retry-after-ms` (some AI providers send it),
    else `Retry-After` (`parse_retry_after`), within [MIN_RETRY_AFTER_S, MAX_RETRY_AFTER_S]; None when
    neither holds a usable value (the caller's default applies)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    raw_ms = parse_retry_after(ms) if ms is not None and _DELTA.fullmatch(ms.strip()) else None
    seconds = raw_ms / 1000 if raw_ms is not None else parse_retry_after(lowered.get("retry-after"), now=now)
    if seconds is None:
        return None
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, seconds))


def raise_for_rate_limit(
    response: ResponseLike,
    *,
    default_retry_after: float = DEFAULT_RETRY_AFTER_S,
    max_retry_after: float = MAX_RETRY_AFTER_S,
) -> None:
    """Raise RateLimited for a 429 (its wait by `retry_after`, else `default_retry_after`) or a 503
    that carries a usable Retry-After; do nothing otherwise. The wait is capped at `max_retry_after`."""
    status = response.status_code
    if status not in (429, 503):
        return
    seconds = retry_after(response.headers)
    if seconds is None:
        if status == 503:
            return
        seconds = default_retry_after
    seconds = min(seconds, max_retry_after)
    raise RateLimited(retry_after=seconds, reason=f"upstream returned {status}; retry after {seconds:g}s")
