"""One Retry-After rule for every 'slow down' answer (conveyor.limits.http.retry_after): the
handlers, the AI providers' holds and `raise_for_rate_limit` read a header the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from conveyor import Conveyor, RateLimited
from conveyor.handlers.ai import GenerateRequest
from conveyor.handlers.http import DEFAULT_RETRY_AFTER_S, raise_for_rate_limit, slow_down_wait
from conveyor.limits import http as limits_http
from conveyor.limits.http import MAX_RETRY_AFTER_S, MIN_RETRY_AFTER_S, parse_retry_after, retry_after
from tests.handlers.servers import ChatServer
from tests.handlers.test_ai import gen_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# Values that are neither delta-seconds nor an HTTP-date: float() took several of them (a negative
# number, an exponent, digits of other scripts, underscores, inf), so each path waited a different
# time for them.
NOT_A_WAIT = ["-3", "-0.5", "nan", "inf", "-inf", "1e3", "1_0", "\u0663", "+5", "0x10", "soon", "", "x" * 500]


def test_the_value_forms() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=30), usegmt=True), now=NOW) == 30.0
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=30), usegmt=True), now=NOW) == 0.0
    assert parse_retry_after("99999999999999999999") == MAX_RETRY_AFTER_S
    assert parse_retry_after(format_datetime(NOW + timedelta(days=30), usegmt=True), now=NOW) == MAX_RETRY_AFTER_S
    for bad in [None, *NOT_A_WAIT]:
        assert parse_retry_after(bad) is None, bad


def test_a_response_s_wait_is_bounded_and_ignores_what_is_no_wait() -> None:
    assert retry_after({"Retry-After": "12"}) == 12
    assert retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after({"retry-after-ms": "-1500", "Retry-After": "9"}) == 9  # an unusable ms header is ignored
    assert retry_after({"Retry-After": "0"}) == MIN_RETRY_AFTER_S
    assert retry_after({"Retry-After": "999999"}) == MAX_RETRY_AFTER_S
    for bad in NOT_A_WAIT:
        assert retry_after({"Retry-After": bad}) is None, bad


@pytest.mark.parametrize("value", ["-3", "nan", "1_0", "1e3"])
def test_every_path_reads_a_bad_value_alike(value: str) -> None:
    """A 429 whose Retry-After is no wait gets each path's default; a 503 with one is no backpressure.
    Before, `-3` made `raise_for_rate_limit` put the job back at once (0 s, looping it against its
    peer) while the handlers waited 1 s, `1_0` waited 10 s, and a 503 with `nan` was backpressure for
    the handlers but an ordinary error for `raise_for_rate_limit`."""
    with pytest.raises(RateLimited) as info:
        limits_http.raise_for_rate_limit(httpx.Response(429, headers={"Retry-After": value}))
    assert info.value.retry_after == limits_http.DEFAULT_RETRY_AFTER_S
    assert slow_down_wait(429, {"Retry-After": value}) == DEFAULT_RETRY_AFTER_S
    limits_http.raise_for_rate_limit(httpx.Response(503, headers={"Retry-After": value}))
    raise_for_rate_limit(503, {"Retry-After": value})
    assert slow_down_wait(503, {"Retry-After": value}) is None


def test_a_zero_wait_is_raised_to_the_floor_on_every_path() -> None:
    """Before, `raise_for_rate_limit` put a job answered `Retry-After: 0` back at once."""
    with pytest.raises(RateLimited) as info:
        limits_http.raise_for_rate_limit(httpx.Response(429, headers={"Retry-After": "0"}))
    assert info.value.retry_after == MIN_RETRY_AFTER_S
    assert slow_down_wait(429, {"Retry-After": "0"}) == MIN_RETRY_AFTER_S


async def test_a_provider_s_negative_retry_after_holds_it_for_the_default(app: Conveyor, chat: ChatServer) -> None:
    """A real provider answering 429 with `Retry-After: -3` is held for the default 5 s, as for any
    value that is no wait. Before, the negative number read as 0 and the provider was held 1 s."""
    chat.retry_after = "-3"
    gen = gen_for(app, chat, "limited")
    with pytest.raises(RateLimited) as info:
        await gen.run(GenerateRequest(prompt="x"))
    assert info.value.retry_after == DEFAULT_RETRY_AFTER_S
