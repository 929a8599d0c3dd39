"""The worker's settings and a leased job's stored options, held to the rules the scripts enforce.

A setting the worker cannot work with is refused when the worker is built (ConfigurationError), not
found later as a pump that crashes on every trip; a stored option a record should never carry (one
edited by hand, or written by another client) is read here as the default or refused before its run.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConfigurationError
from conveyor.options import ATTEMPTS_MAX, MAX_DURATION_S, MIN_DURATION_S, clip

MAX_CONCURRENCY = 10_000  # jobs one worker runs at once; the heartbeat renews them all in one call
MAX_BATCH = 1000  # jobs leased per trip
MAX_LEASE_MS = int(MAX_DURATION_S * 1000) // 2  # 50 years: a trip record (kept 2 leases) fits in 100


def seconds_ms(seconds: Any, default: int) -> int:
    """Seconds from job options as integer ms; anything unreadable (negative included) gives
    `default`. Enqueue refuses values below 0 or over 100 years; a record written before that rule
    (or edited by hand) is held to it here, so that finish-10.lua (which refuses an outcome with an
    out-of-range value, and the worker then records the job as failed) never sees one."""
    kind = type(seconds)
    if (kind is int or kind is float) and seconds >= 0:
        try:
            return min(int(seconds * 1000), _MAX_MS)
        except (OverflowError, ValueError):
            return default
    return default


_MAX_MS = int(MAX_DURATION_S * 1000)


def unreadable_options(options: Any) -> str | None:
    """Why a leased job cannot run as stored, or None. Enqueue validates every option; a record
    edited by hand (or written by another client) is held to the same rules here, before its run:
    an `attempts` or `timeout` the runner cannot use would otherwise break the run's bookkeeping (a
    job handed back at once and run again for ever, a sync thread outliving its failed job). (An
    attempt count that is not a count reads as 0 in the claim: the job runs as attempt 1.)"""
    if not isinstance(options, dict):
        return "the job's stored options cannot be read"
    attempts = options.get("attempts", 1)
    if type(attempts) is not int or not 1 <= attempts <= ATTEMPTS_MAX:
        return f"the job's stored option attempts is not an integer in [1, {ATTEMPTS_MAX}]: {clip(attempts)}"
    timeout = options.get("timeout")
    if timeout and (type(timeout) not in (int, float) or not MIN_DURATION_S <= timeout <= MAX_DURATION_S):
        return f"the job's stored option timeout is not a number of seconds in range: {clip(timeout)}"
    return None


def check_settings(
    concurrency: int, lease_ms: int, max_stalls: int, max_lapses: int, no_handler_timeout_s: float,
    heartbeat_ms: int | None = None, stalled_interval_ms: int | None = None, idle_block_s: float = 5.0,
) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigurationError(f"concurrency must be an integer in [1, {MAX_CONCURRENCY}], got {concurrency!r}")
    # finish-10.lua refuses a whole trip whose lease, or trip record (2 leases), is not a whole number
    # of ms within 100 years: every trip of the worker would be refused and its pump crash for ever.
    if isinstance(lease_ms, bool) or not isinstance(lease_ms, int | float) or not (
            100 <= lease_ms <= MAX_LEASE_MS and lease_ms % 1 == 0):
        raise ConfigurationError(f"lease_ms must be a whole number of ms in [100, {MAX_LEASE_MS}], got {lease_ms!r}")
    # A loop that sleeps 0 between its calls spins: the heartbeat and the sweep would call Redis
    # (or burn the event loop) without pause.
    for name, value in (("heartbeat_ms", heartbeat_ms), ("stalled_interval_ms", stalled_interval_ms)):
        if value is not None and not value >= 1:
            raise ConfigurationError(f"{name} must be >= 1 (None for the default), got {value!r}")
    # An idle worker's wait for a wake-up (and its safety-net probe) must not end at once.
    if not idle_block_s > 0:  # (NaN too)
        raise ConfigurationError(f"idle_block_s must be a number of seconds > 0, got {idle_block_s!r}")
    if max_stalls < 0 or max_lapses < 0:
        raise ConfigurationError("max_stalls and max_lapses must be >= 0")
    if not no_handler_timeout_s > 0:
        raise ConfigurationError("no_handler_timeout_s must be > 0")


def heartbeat_warning(heartbeat_s: float, lease_ms: int) -> str | None:
    """Why a heartbeat interval will lose leases, or None. A beat that comes no sooner than the
    lease ends lets every lease lapse between beats: the sweep hands running jobs to other workers.
    Allowed (tests and experiments use it on purpose), but said once at start."""
    if heartbeat_s * 1000 < lease_ms:
        return None
    return (f"heartbeat_ms ({heartbeat_s * 1000:g}) is not below lease_ms ({lease_ms}): leases will lapse "
            "between beats and running jobs may run twice; use a heartbeat well below the lease "
            "(the default is lease_ms / 3, at most 1000)")
