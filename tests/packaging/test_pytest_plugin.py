"""The pytest plugin for users, run as users run it: a pytest subprocess over a small project (pytester)."""

from __future__ import annotations

import pytest

from conveyor import pytest_plugin
from conveyor.testing import RedisServer

pytest_plugins = ["pytester"]

APP = '''
from pydantic import BaseModel
from conveyor import Conveyor

app = Conveyor()


class Signup(BaseModel):
    email: str


@app.task(queue="emails", attempts=3)
async def welcome(ctx, signup: Signup) -> str:
    return "hi " + signup.email


@app.task(queue="emails", attempts=3, backoff=60)
async def flaky(ctx, n: int) -> int:
    if ctx.attempt < 3:
        raise RuntimeError("not yet")
    return n
'''

TESTS = '''
import os
from conveyor import JobState
from myjobs import app, flaky, welcome

SEEN = []


async def test_drain_runs_jobs_to_completion(conveyor, conveyor_prefix):
    assert conveyor.app is app and app.prefix == conveyor_prefix
    SEEN.append(conveyor_prefix)
    jobs = [await welcome.enqueue({"email": f"u{i}@example.com"}) for i in range(5)]
    stats = await conveyor.drain(app.queue("emails"))
    assert stats.succeeded == 5
    assert [await j.result() for j in jobs] == [f"hi u{i}@example.com" for i in range(5)]


async def test_each_test_has_its_own_prefix(conveyor, conveyor_prefix):
    SEEN.append(conveyor_prefix)
    assert len(set(SEEN)) == len(SEEN)
    counts = await conveyor.queue("emails").counts()
    assert sum(counts.values()) == 0  # the previous test's jobs are not visible here


async def test_retries_wait_unless_promoted(conveyor):
    job = await flaky.enqueue(7)
    await conveyor.drain("emails")
    assert await job.state() is JobState.DELAYED  # backoff of 60 s: left for later
    await conveyor.drain("emails", promote_delayed=True)
    record = await job.record()
    assert record.state is JobState.COMPLETED and record.attempts_made == 3 and record.result == 7


async def test_run_one_leases_exactly_one_job(conveyor):
    first = await welcome.enqueue({"email": "1@example.com"})
    second = await welcome.enqueue({"email": "2@example.com"})
    record = await conveyor.run_one("emails")
    assert record.id == first.id and record.state is JobState.COMPLETED and record.worker
    assert await second.state() is JobState.WAITING
    assert (await conveyor.run_one("emails")).id == second.id
    assert await conveyor.run_one("emails") is None


def test_app_is_restored_after_each_test():
    assert app.prefix == "cv"
'''

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
conveyor_app = myjobs:app
"""


def make_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myjobs=APP, test_jobs=TESTS)
    pytester.makeini(INI)
    pytester.syspathinsert()


def test_users_tests_run_on_an_embedded_valkey(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pytest_plugin.ENV_URL, raising=False)
    monkeypatch.delenv("CONVEYOR_SERVER_BIN", raising=False)
    make_project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5)


def test_users_tests_run_on_their_server_and_leave_no_keys(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisServer() as server:
        monkeypatch.setenv(pytest_plugin.ENV_URL, server.url)
        make_project(pytester)
        result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "-q")
        result.assert_outcomes(passed=5)
        import redis

        with redis.Redis(port=server.port) as client:
            assert client.dbsize() == 0


def test_a_missing_app_setting_says_what_to_do(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pytest_plugin.ENV_URL, "redis://127.0.0.1:1/0")  # never reached
    pytester.makepyfile(test_x="async def test_x(conveyor):\n    pass\n")
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "-q")
    result.stdout.fnmatch_lines(["*conveyor_app = module:attribute*"])
    assert result.ret != 0


def test_the_plugin_is_loaded_here_without_shadowing_the_projects_fixtures(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin("conveyor")
    names = {n for n in dir(pytest_plugin) if n.startswith("conveyor")}
    assert names == {"conveyor", "conveyor_app", "conveyor_app_object", "conveyor_prefix", "conveyor_redis_url"}
    # The project's own fixtures of the same kind keep their meaning.
    assert request.getfixturevalue("redis_url").startswith("redis://127.0.0.1:")
