"""Outgoing HTTP for the handlers: 'slow down' answers (status + headers in, `RateLimited` out), one
mapping of transfer failures to Retry/Unrecoverable, and which headers job data may set.

How long a 'slow down' answer asks to wait is `conveyor.limits.http.retry_after` (one rule for
every path: `Retry-After` as delta-seconds or HTTP-date, `retry-after-ms`, bounded to [1 s, 1 h]);
this adapter adds the handlers' default for a 429 that names no usable wait.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from conveyor.errors import NameResolutionError, RateLimited, Retry, Unrecoverable, UnsafeURLError
from conveyor.limits.http import retry_after

DEFAULT_RETRY_AFTER_S = 5.0


def slow_down_wait(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds a 'slow down' answer asks for — a 429 (DEFAULT_RETRY_AFTER_S when it names no usable
    wait), or a 503 carrying a usable Retry-After — or None for any other answer."""
    wait = retry_after(headers)
    if status == 429:
        return DEFAULT_RETRY_AFTER_S if wait is None else wait
    if status == 503:
        return wait
    return None


def raise_for_rate_limit(status: int, headers: Mapping[str, str], what: str = "upstream") -> None:
    """Raise `RateLimited` for a 429 (or a 503 carrying Retry-After); otherwise do nothing."""
    wait = slow_down_wait(status, headers)
    if wait is not None:
        raise RateLimited(retry_after=wait, reason=f"{what} answered {status}; retry after {wait:.1f}s")


@contextmanager
def transfer_errors_as_signals(timeout_s: float, *, timed_out: str, failed: str) -> Iterator[None]:
    """One mapping for outgoing HTTP: a refused (unsafe) URL or a name that does not exist is fatal;
    a timeout, a temporary DNS failure or a network error is retried with `timed_out` / `failed` as
    the reason."""
    try:
        yield
    except UnsafeURLError as exc:
        raise Unrecoverable(str(exc)) from None
    except NameResolutionError as exc:
        raise Retry(reason=f"{failed}: {exc}"[:300]) from None
    except (TimeoutError, httpx.TimeoutException):
        raise Retry(reason=f"{timed_out} {timeout_s}s") from None
    except httpx.HTTPError as exc:
        raise Retry(reason=f"{failed}: {type(exc).__name__}: {exc}"[:300]) from None


# Headers job data may never set on an outgoing request: hop-by-hop and framing headers (they decide
# how the message is delimited and routed, so a forged one can smuggle a second request), proxy
# controls, and `Host` (the SSRF guard pins the connection to the checked address under that name).
HOP_BY_HOP_AND_FRAMING = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "host",
        "expect",
        "http2-settings",
    }
)
FORBIDDEN_HEADER_PREFIXES = ("proxy-",)
MAX_HEADER_VALUE_CHARS = 4096
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
# RFC 9110 field-value as httpx can send it (ASCII): visible characters, spaces and tabs between them.
# Anything else (a non-ASCII character, a control character, a space at either end) either failed
# the send on every attempt or went out as sent.
_VALUE = re.compile(r"^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$")


def check_job_header(
    name: str, value: str, *, owned: frozenset[str] = frozenset(), owned_prefixes: tuple[str, ...] = ()
) -> None:
    """Raise ValueError unless job data may set header `name` to `value` on an outgoing request.

    `owned` and `owned_prefixes` name (lower case) the headers the sender sets itself."""
    lowered = name.lower()
    if not _TOKEN.match(name):
        raise ValueError(f"header name {name[:100]!r} is not a valid HTTP token")
    if lowered in HOP_BY_HOP_AND_FRAMING or lowered.startswith(FORBIDDEN_HEADER_PREFIXES):
        raise ValueError(f"header {name!r} is a hop-by-hop or framing header and cannot come from job data")
    if lowered in owned or lowered.startswith(owned_prefixes):
        raise ValueError(f"header {name!r} is set by Conveyor")
    if not _VALUE.match(value) or len(value) > MAX_HEADER_VALUE_CHARS:
        raise ValueError(
            f"header {name!r} must be printable ASCII with spaces or tabs only between characters (no line "
            f"break or other control character), at most {MAX_HEADER_VALUE_CHARS} characters"
        )
