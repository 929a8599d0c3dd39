"""Reading 'slow down' answers: Retry-After (seconds or HTTP date) turned into `RateLimited`.

The limits room provides the fleet-wide version (`conveyor.limits.http`); this small helper keeps the
handlers independent of it and raises the same signal, which the worker turns into backpressure.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from conveyor.errors import RateLimited

DEFAULT_RETRY_AFTER_S = 5.0
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(headers: Mapping[str, str], default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds to wait from `retry-after-ms`, `Retry-After: <seconds>` or `Retry-After: <HTTP date>`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return _clamp(float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = (lowered.get("retry-after") or "").strip()
    if not raw:
        return default
    try:
        return _clamp(float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return default
    return _clamp(when.timestamp() - time.time())


def _clamp(seconds: float) -> float:
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def raise_for_rate_limit(status: int, headers: Mapping[str, str], what: str = "upstream") -> None:
    """Raise `RateLimited` for a 429 (or a 503 carrying Retry-After); otherwise do nothing."""
    has_hint = any(k.lower() in {"retry-after", "retry-after-ms"} for k in headers)
    if status == 429 or (status == 503 and has_hint):
        wait = parse_retry_after(headers)
        raise RateLimited(retry_after=wait, reason=f"{what} answered {status}; retry after {wait:.1f}s")
