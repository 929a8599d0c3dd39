"""Reading 'slow down' answers for the handlers: status + headers in, `RateLimited` out.

The Retry-After parsing itself is `conveyor.limits.http.parse_retry_after` (one implementation);
this adapter adds the `retry-after-ms` header some AI providers send and the handlers' defaults.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from conveyor.errors import RateLimited, Retry, Unrecoverable, UnsafeURLError
from conveyor.limits.http import MAX_RETRY_AFTER_S
from conveyor.limits.http import parse_retry_after as parse_retry_after_header

DEFAULT_RETRY_AFTER_S = 5.0


def parse_retry_after(headers: Mapping[str, str], default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds to wait from `retry-after-ms`, `Retry-After: <seconds>` or `Retry-After: <HTTP date>`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = parse_retry_after_header(lowered.get("retry-after-ms"))
    if raw_ms is not None:
        return min(MAX_RETRY_AFTER_S, raw_ms / 1000)
    seconds = parse_retry_after_header(lowered.get("retry-after"))
    return default if seconds is None else min(MAX_RETRY_AFTER_S, seconds)


def raise_for_rate_limit(status: int, headers: Mapping[str, str], what: str = "upstream") -> None:
    """Raise `RateLimited` for a 429 (or a 503 carrying Retry-After); otherwise do nothing."""
    has_hint = any(k.lower() in {"retry-after", "retry-after-ms"} for k in headers)
    if status == 429 or (status == 503 and has_hint):
        wait = parse_retry_after(headers)
        raise RateLimited(retry_after=wait, reason=f"{what} answered {status}; retry after {wait:.1f}s")


@contextmanager
def transfer_errors_as_signals(timeout_s: float, *, timed_out: str, failed: str) -> Iterator[None]:
    """One mapping for outgoing HTTP: a refused (unsafe) URL is fatal; a timeout or network error
    is retried with `timed_out` / `failed` as the reason."""
    try:
        yield
    except UnsafeURLError as exc:
        raise Unrecoverable(str(exc)) from None
    except (TimeoutError, httpx.TimeoutException):
        raise Retry(reason=f"{timed_out} {timeout_s}s") from None
    except httpx.HTTPError as exc:
        raise Retry(reason=f"{failed}: {type(exc).__name__}: {exc}"[:300]) from None
