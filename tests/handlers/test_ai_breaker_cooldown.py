"""An open circuit is measured against the cool-down the workers have now, not the one it opened
with: the setting is changed by restarting workers while a provider's circuit stays open in Redis."""

from __future__ import annotations

from conveyor import Conveyor
from conveyor.handlers.ai import CircuitBreaker
from tests.conftest import wait_for


def breaker(app: Conveyor, cooldown_s: float) -> CircuitBreaker:
    return CircuitBreaker(lambda: app.client, prefix=app.prefix, failures=3, cooldown_s=cooldown_s)


async def test_a_lowered_cooldown_applies_to_a_circuit_already_open(app: Conveyor) -> None:
    """Opened under a 1 h cool-down, the circuit is open at most the new cool-down (60 s, then 0.5 s)
    from when it opened, and is then half-open: its first failure reopens it. Before, a circuit open
    past the new cool-down read as never opened: the provider was called at once and needed
    `failures` more failures in a row to open again."""
    old = breaker(app, 3600.0)
    for _ in range(3):
        await old.record_failure("p")
    assert await old.open_for("p") > 3000

    assert 0 < await breaker(app, 60.0).open_for("p") <= 60
    assert 0 < await breaker(app, 60.0).record_failure("p") <= 60, "a failure while open changes nothing"

    short = breaker(app, 0.5)
    await wait_for(lambda: _closed(short), what="the lowered cool-down over")
    assert await short.record_failure("p") == 0.5, "half-open: the first failure reopens the circuit"
    assert (await short.state("p"))["trips"] == "2"


async def test_a_raised_cooldown_lengthens_an_open_circuit_within_the_new_setting(app: Conveyor) -> None:
    short = breaker(app, 60.0)
    for _ in range(3):
        await short.record_failure("p")
    assert 0 < await short.open_for("p") <= 60
    assert 3600 < await breaker(app, 7200.0).open_for("p") <= 7200


async def _closed(b: CircuitBreaker) -> bool:
    return await b.open_for("p") == 0
