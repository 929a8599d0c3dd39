"""Script return codes: one table, one exception per code."""

from __future__ import annotations

from enum import IntEnum


class ScriptCode(IntEnum):
    OK = 0
    NOT_FOUND = -1
    LEASE_LOST = -2
    WRONG_STATE = -3
    CONFLICT = -4
    QUEUE_ACTIVE = -5
    INVALID_INPUT = -6  # a script refused its arguments before writing anything
