"""Checked keys an API process may trust for a short time, so an enqueue costs one Redis round trip.

Only keys without a rate limit are kept: a limited key's check is also its rate decision, which
lives in Redis so every process shares it. An entry records what the key check read (the secret's
hash and the scopes) and when that read was sent; it is trusted for `ttl` seconds from then and
refreshed by the next check after that. So a key revoked, or whose scopes or limit change, in Redis
(`conveyor keys revoke`, from any process or machine) stops working in every API process within
`ttl` seconds (`CONVEYOR_API_KEY_CACHE_S`, default 1); event streams and long-polls open before
that check their key again through it (api/auth.current_scopes). The cache holds at most `max_keys` keys:
past that, further keys are checked on every request. While one request checks a key, others with
the same key wait for that check instead of sending their own (`follow`), so a busy key costs about
one check per `ttl`, not one per request in flight when its entry expires.
"""

from __future__ import annotations

import asyncio
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
        self._checks: dict[tuple[str, str], asyncio.Future[frozenset[Scope] | None]] = {}

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

    async def follow(self, key_id: str, secret_hash: str) -> frozenset[Scope] | None:
        """The scopes found by a check of this key and secret already in flight, if it found the key
        unlimited (so cacheable); None otherwise (check it yourself)."""
        pending = self._checks.get((key_id, secret_hash))
        if pending is None:
            return None
        return await asyncio.shield(pending)

    def checking(self, key_id: str, secret_hash: str) -> asyncio.Future[frozenset[Scope] | None] | None:
        """A future to resolve when this request's check ends, for others to follow; None if caching
        is off or another check of the key is in flight."""
        if not self.enabled or (key_id, secret_hash) in self._checks:
            return None
        if len(self._checks) >= self.max_keys:
            return None
        future: asyncio.Future[frozenset[Scope] | None] = asyncio.get_running_loop().create_future()
        self._checks[(key_id, secret_hash)] = future
        return future

    def checked(self, key_id: str, secret_hash: str, scopes: frozenset[Scope] | None) -> None:
        """End this request's check: followers get `scopes` (None: check yourselves)."""
        future = self._checks.pop((key_id, secret_hash), None)
        if future is not None and not future.done():
            future.set_result(scopes)

    def forget(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for key_id in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key_id]

    def __len__(self) -> int:
        return len(self._entries)
