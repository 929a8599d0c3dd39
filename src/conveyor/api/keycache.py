"""Checked keys an API process may trust for a short time, so an enqueue costs one Redis round trip.

Only keys without a rate limit are kept: a limited key's check is also its rate decision, which
lives in Redis so every process shares it. An entry records what the key check read (the secret's
hash and the scopes) and when that read was sent; it is trusted for `ttl` seconds from then and
refreshed by the next check after that. So a key revoked, or whose scopes or limit change, in Redis
(`conveyor keys revoke`, from any process or machine) stops working in every API process within
`ttl` seconds (`CONVEYOR_API_KEY_CACHE_S`, default 1). The cache holds at most `max_keys` keys:
past that, further keys are checked on every request.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from conveyor.api.keys import Scope

MAX_KEYS = 10_000
MAX_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class CachedKey:
    secret_hash: str
    scopes: frozenset[Scope]
    expires_at: float  # time.monotonic() seconds


class KeyCache:
    """key id → the last check of that key, while it is fresh."""

    def __init__(self, ttl_s: float, max_keys: int = MAX_KEYS) -> None:
        self.ttl_s = min(max(0.0, ttl_s), MAX_TTL_S)
        self.max_keys = max_keys
        self._entries: dict[str, CachedKey] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def scopes(self, key_id: str, secret_hash: str) -> frozenset[Scope] | None:
        """The scopes of a fresh entry whose secret matches, else None (check the key in Redis)."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            del self._entries[key_id]
            return None
        if not hmac.compare_digest(entry.secret_hash, secret_hash):
            return None
        return entry.scopes

    def remember(self, key_id: str, secret_hash: str, scopes: frozenset[Scope], checked_at: float) -> None:
        """Record a successful check of an unlimited key whose read was sent at `checked_at`."""
        if not self.enabled:
            return
        if key_id not in self._entries and len(self._entries) >= self.max_keys:
            self._drop_expired()
            if len(self._entries) >= self.max_keys:
                return
        self._entries[key_id] = CachedKey(secret_hash, scopes, checked_at + self.ttl_s)

    def forget(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for key_id in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key_id]

    def __len__(self) -> int:
        return len(self._entries)
