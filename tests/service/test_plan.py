"""Queue plan, settings and the command line (a worker process refusing bad settings)."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from conveyor.cli import app as cli_app
from conveyor.errors import ConfigurationError
from conveyor.service.command import load_app
from conveyor.service.plan import QueuePlan, concurrency_env_name, plan_queues
from conveyor.settings import Settings
from tests.cli.run import conveyor
from tests.service.apps import build_app


def test_env_names_upper_case_and_replace_other_characters() -> None:
    assert concurrency_env_name("slow.io") == "CONVEYOR_CONCURRENCY_SLOW_IO"
    assert concurrency_env_name("ai-2") == "CONVEYOR_CONCURRENCY_AI_2"


def test_declared_concurrency_env_override_and_subset() -> None:
    app = build_app("p")
    assert plan_queues(app, None, {}) == [QueuePlan("fast", 5), QueuePlan("slow.io", 2)]
    env = {"CONVEYOR_CONCURRENCY_SLOW_IO": "7"}
    assert plan_queues(app, None, env) == [QueuePlan("fast", 5), QueuePlan("slow.io", 7)]
    assert plan_queues(app, " slow.io ,slow.io", env) == [QueuePlan("slow.io", 7)]


@pytest.mark.parametrize(
    ("queues", "env", "message"),
    [
        ("fast,nope", {}, r"unknown queue\(s\) \['nope'\]"),
        (None, {"CONVEYOR_CONCURRENCY_NOPE": "3"}, "names no queue"),
        (None, {"CONVEYOR_CONCURRENCY_FAST": "zero"}, "must be an integer"),
        (None, {"CONVEYOR_CONCURRENCY_FAST": "0"}, "must be an integer"),
    ],
)
def test_bad_plans_are_rejected(queues: str | None, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        plan_queues(build_app("p"), queues, env)


def test_ambiguous_override_is_rejected() -> None:
    app = build_app("p")
    app.declare_queue("slow_io")
    with pytest.raises(ConfigurationError, match="ambiguous"):
        plan_queues(app, None, {"CONVEYOR_CONCURRENCY_SLOW_IO": "3"})


def test_load_app_errors_are_specific() -> None:
    assert load_app("tests.service.apps:app").queue_configs.keys() == {"fast", "slow.io"}
    with pytest.raises(ConfigurationError, match="module:attribute"):
        load_app("tests.service.apps")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_app("tests.service.nothing_here:app")
    with pytest.raises(ConfigurationError, match=r"not a conveyor\.Conveyor"):
        load_app("tests.service.apps:probe_key")


def test_help_documents_every_setting() -> None:
    result = CliRunner().invoke(cli_app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for env, _, _ in Settings.describe():
        assert env in result.output
    assert "CONVEYOR_CONCURRENCY_<QUEUE>" in result.output
    for flag in ("--queues", "--health-port", "--shutdown-grace", "--lease-ms", "--log-format"):
        assert flag in result.output


def test_bad_settings_exit_with_a_clear_error() -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli_app, ["worker", "tests.service.apps:app"], env={"CONVEYOR_SHUTDOWN_GRACE_S": "-1"}
    )
    assert result.exit_code == 2 and "CONVEYOR_SHUTDOWN_GRACE_S must be >= 0" in result.output
    result = runner.invoke(cli_app, ["worker", "tests.service.apps:app"], env={"CONVEYOR_LEASE_MS": "soon"})
    assert result.exit_code == 2 and "lease_ms has an invalid value" in result.output


@pytest.mark.parametrize("setting", ["CONVEYOR_HEARTBEAT_S", "CONVEYOR_SHUTDOWN_GRACE_S", "CONVEYOR_METRICS_INTERVAL_S",
                                     "CONVEYOR_RESTART_BACKOFF_MAX_S", "CONVEYOR_STATS_INTERVAL_S"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_setting_in_seconds_that_is_not_a_finite_number_is_one_line_and_status_2(
    redis_url: str, setting: str, value: str
) -> None:
    """nan passes every range check (`nan < 0` is false): CONVEYOR_HEARTBEAT_S=nan ended the worker
    with a ValueError traceback, and the others let it run with a grace, an interval or a backoff
    of nan or inf (a SIGTERM then never finished waiting, or no sample was ever taken)."""
    try:
        done = conveyor("worker", "tests.service.apps:app", "--health-port", "0", redis_url=redis_url,
                        timeout=60, **{setting: value})
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker ran with {setting}={value}") from None
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {setting} must be a finite number, got {float(value)!r}"
