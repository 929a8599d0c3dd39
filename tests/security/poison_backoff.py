"""A module only a poisoned job names: importing it is what the worker must never do."""

IMPORTED = True


def delay(attempt: int, error: BaseException | None) -> float:
    return 0.0
