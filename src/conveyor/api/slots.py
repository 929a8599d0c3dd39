"""Per-key caps on what a client may hold open in one API process: event streams and long-polls.

A held stream or wait costs no Redis connection (the event hub serves it from memory) but it does
cost memory and a file descriptor; the cap keeps one key from taking them all. Past the cap the
request gets 429 with `Retry-After`, before anything is read from Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conveyor.api.errors import ApiError

RETRY_AFTER_S = 5


class Slots:
    """Counts what each key holds of one kind (streams, or waits)."""

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self._held: dict[str | None, int] = {}

    def held(self, key_id: str | None) -> int:
        return self._held.get(key_id, 0)

    def check(self, key_id: str | None) -> None:
        """The 429 `take` would raise, without holding anything (a HEAD answers as its GET would)."""
        count = self._held.get(key_id, 0)
        if self.limit > 0 and count >= self.limit:
            raise ApiError(
                429,
                f"this key already holds {count} open {self.kind} (the limit per API process)",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    def take(self, key_id: str | None) -> None:
        """Hold one slot for `key_id` (None: the API runs without keys), or 429 past the cap."""
        self.check(key_id)
        self._held[key_id] = self._held.get(key_id, 0) + 1

    def give_back(self, key_id: str | None) -> None:
        count = self._held.get(key_id, 0) - 1
        if count > 0:
            self._held[key_id] = count
        else:
            self._held.pop(key_id, None)

    @contextmanager
    def holding(self, key_id: str | None) -> Iterator[None]:
        self.take(key_id)
        try:
            yield
        finally:
            self.give_back(key_id)
