"""Fleet-wide limits: rate and cost limiters, concurrency caps, fair groups and upstream backpressure.

All state lives in Redis and is enforced inside the claim script (redis/lua/includes/limits.lua),
so limits hold across every worker process; see docs/limits.md.
"""

from conveyor.limits.admin import (
    clear_group_limits,
    clear_limits,
    limits_state,
    set_group_limits,
    set_group_weight,
    set_limits,
)
from conveyor.limits.model import GroupLimits, RateLimit
from conveyor.limits.named import Adaptive, Estimate, Limiter, LimiterUse, Usage
from conveyor.limits.shared import SharedLimiter, limiter_names

__all__ = [
    "Adaptive",
    "Estimate",
    "GroupLimits",
    "Limiter",
    "LimiterUse",
    "RateLimit",
    "SharedLimiter",
    "Usage",
    "clear_group_limits",
    "clear_limits",
    "limiter_names",
    "limits_state",
    "set_group_limits",
    "set_group_weight",
    "set_limits",
]
