"""The key cache's own bounds: entries expire at their time, a wrong secret never matches, and the
number of cached keys is capped (further keys are simply checked in Redis every time)."""

from __future__ import annotations

from conveyor.api.keycache import MAX_TTL_S, KeyCache
from conveyor.api.keys import Scope

READ = frozenset({Scope.READ})


def test_an_entry_answers_only_for_its_secret_and_until_it_expires() -> None:
    cache = KeyCache(ttl_s=30)
    now = cache.now()
    cache.remember("k1", "hash-a", READ, now)
    assert cache.scopes("k1", "hash-a") == READ
    assert cache.scopes("k1", "hash-b") is None
    cache.remember("k2", "hash-c", READ, now - 31)  # its check was sent longer ago than the ttl
    assert cache.scopes("k2", "hash-c") is None and len(cache) == 1
    cache.forget("k1")
    assert cache.scopes("k1", "hash-a") is None


def test_the_cache_is_bounded_and_can_be_turned_off() -> None:
    cache = KeyCache(ttl_s=30, max_keys=3)
    now = cache.now()
    for i in range(10):
        cache.remember(f"k{i}", "h", READ, now)
    assert len(cache) == 3 and cache.scopes("k9", "h") is None and cache.scopes("k0", "h") == READ
    off = KeyCache(ttl_s=0)
    off.remember("k", "h", READ, now)
    assert not off.enabled and off.scopes("k", "h") is None
    assert KeyCache(ttl_s=10**9).ttl_s == MAX_TTL_S


async def test_requests_follow_a_check_in_flight_instead_of_sending_their_own() -> None:
    import asyncio

    cache = KeyCache(ttl_s=30)
    assert await cache.follow("k", "h") is None  # nothing in flight: check it yourself
    leading = cache.checking("k", "h")
    assert leading is not None and cache.checking("k", "h") is None  # one check per key and secret
    followers = [asyncio.create_task(cache.follow("k", "h")) for _ in range(3)]
    other_secret = asyncio.create_task(cache.follow("k", "other"))
    await asyncio.sleep(0)  # the followers are waiting
    cache.checked("k", "h", READ)
    assert await asyncio.gather(*followers) == [READ] * 3 and await other_secret is None
    again = cache.checking("k", "h")
    assert again is not None
    follower = asyncio.create_task(cache.follow("k", "h"))
    await asyncio.sleep(0)
    cache.checked("k", "h", None)  # a limited, unknown or failed check: each request checks for itself
    assert await follower is None
