"""`conveyor schedules list|pause|resume|run-now|remove` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from conveyor import Queue
from conveyor.cli import app
from conveyor.redis.connection import connect
from conveyor.schedules import Schedule, ScheduleStore

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["schedules", *args])
    return result.exit_code, result.output


def test_schedules_commands(redis_url: str, prefix: str, qname: str) -> None:
    async def setup() -> None:
        c = connect(redis_url)
        await ScheduleStore(c, prefix).put(Schedule(id="hourly", task="sync", queue=qname, interval_s=3600))
        await c.aclose()

    asyncio.run(setup())
    opts = ["--redis-url", redis_url, "--prefix", prefix]
    code, out = cli("list", *opts)
    assert code == 0 and "hourly" in out and "every 3600s" in out
    code, out = cli("pause", "hourly", *opts)
    assert code == 0
    code, out = cli("list", "--json", *opts)
    row = json.loads(out.strip())
    assert row["paused"] is True and row["next_run"] is None
    code, out = cli("resume", "hourly", *opts)
    assert code == 0 and "next run" in out
    code, out = cli("run-now", "hourly", *opts)
    assert code == 0 and "sched:hourly:run-" in out
    job_id = out.split()[-1]

    async def job_exists() -> bool:
        c = connect(redis_url)
        q = Queue(qname, redis=c, prefix=prefix)
        rec = await q.get_job(job_id)
        await q.obliterate(force=True)
        await c.aclose()
        return rec is not None and rec.name == "sync"

    assert asyncio.run(job_exists())
    code, out = cli("remove", "hourly", *opts)
    assert code == 0
    code, out = cli("list", *opts)
    assert code == 0 and "no schedules" in out
    code, out = cli("pause", "hourly", *opts)
    assert code == 1 and "not found" in out


def test_scheduler_refuses_non_finite_options_with_a_clear_error(redis_url: str) -> None:
    """`conveyor scheduler` in a real process: a bad number is one line on stderr, not a traceback."""
    root = Path(__file__).resolve().parents[2]
    for option, value in (("--grace", "nan"), ("--grace", "inf"), ("--grace", "-1"),
                          ("--maintenance-interval", "nan"), ("--maintenance-interval", "0")):
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor", "scheduler", "tests.schedules.fleet_app:app", "--redis-url", redis_url,
             option, value], cwd=root, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert proc.returncode == 1, (option, value, proc.stderr)
        assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr, (option, value, proc.stderr)


def test_a_bad_alerts_or_maintenance_interval_is_a_clear_error_naming_its_setting(redis_url: str, prefix: str) -> None:
    """`conveyor worker` and `conveyor scheduler` with CONVEYOR_ALERTS_INTERVAL_S=0 (or a maintenance
    interval of nan) exit with one line naming the setting, not a traceback."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "REDIS_URL": redis_url, "CONVEYOR_PREFIX": prefix, "PYTHONPATH": str(root)}
    runs = [
        (["worker", "tests.schedules.fleet_app:app"], {"CONVEYOR_ALERTS_INTERVAL_S": "0"},
         "CONVEYOR_ALERTS_INTERVAL_S"),
        (["scheduler", "tests.schedules.fleet_app:app"], {"CONVEYOR_ALERTS_INTERVAL_S": "-5"},
         "CONVEYOR_ALERTS_INTERVAL_S"),
        (["scheduler", "tests.schedules.fleet_app:app", "--maintenance-interval", "nan"], {}, "--maintenance-interval"),
    ]
    for args, extra, named in runs:
        proc = subprocess.run([sys.executable, "-c", "from conveyor.cli import main; main()", *args], cwd=root,
                              env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert proc.returncode in (1, 2), (args, proc.stderr[-2000:])
        assert named in proc.stderr and "Traceback" not in proc.stderr and "╭" not in proc.stderr, proc.stderr[-2000:]
