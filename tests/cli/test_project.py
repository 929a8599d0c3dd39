"""Every operator command against `conveyor up`'s embedded server, run from the project directory
(and from a folder inside it) with no REDIS_URL; and nothing but `conveyor up` starts a server."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.embedded.state import ServerState
from tests.cli.project import UpProject
from tests.cli.run import as_json, conveyor, error_line, ok

# Generous: each runs several CLI processes against a real server;
# a busy machine (a second copy of the suite) slows every start.
pytestmark = pytest.mark.timeout(360)


@pytest.fixture
def project(up_project: UpProject) -> UpProject:
    return up_project


def wait_state(project: UpProject, queue: str, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = as_json("job", queue, job_id, cwd=project.directory)
        if job["state"] == state:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['state']}, expected {state}"
        time.sleep(0.1)


def test_env_prints_the_embedded_server_url(project: UpProject) -> None:
    line = ok("env", cwd=project.directory).strip()
    state = ServerState.load(project.data_dir / "embedded.json")
    assert state is not None and shlex.split(line) == ["export", f"REDIS_URL={state.url}"]
    found = as_json("env", cwd=project.directory)
    assert found == {"REDIS_URL": state.url, "source": "embedded", "data_dir": str(project.data_dir.resolve())}


def test_enqueue_follow_and_inspect_from_a_subdirectory(project: UpProject) -> None:
    inside = project.directory / "src" / "deep"
    inside.mkdir(parents=True, exist_ok=True)
    made = as_json("enqueue", "default", "echo", "--data", '{"hello": "cli"}', cwd=inside)
    assert made["queue"] == "default" and made["created"] is True
    job = wait_state(project, "default", made["id"], "completed")
    assert job["result"] == {"hello": "cli"} and job["data_hidden"] is False
    listed = as_json("jobs", "default", "--state", "completed", "--limit", "5", cwd=inside)
    assert made["id"] in [j["id"] for j in listed["jobs"]]
    assert "echo" in ok("jobs", "default", "--state", "completed", cwd=inside)
    assert f"id                {made['id']}" in ok("job", "default", made["id"], cwd=inside)

    queues = {q["name"]: q for q in as_json("queues", cwd=inside)["queues"]}
    assert {"default", "web", "docs", "reports"} <= set(queues)  # served by up's worker, jobs or not
    assert queues["default"]["counts"]["completed"] >= 1
    status = as_json("status", cwd=inside)
    assert len(status["workers"]) == 1 and "default" in status["workers"][0]["queues"]
    table = ok("status", cwd=inside)
    assert "Workers (1 live)" in table and "default" in table


def test_failed_jobs_retry_cancel_promote_remove_purge(project: UpProject) -> None:
    cwd = project.directory
    bad = as_json("enqueue", "reports", "csv_report", "--data", '{"csv": 5}', cwd=cwd)  # invalid payload
    failed = wait_state(project, "reports", bad["id"], "failed")
    assert failed["error"]["type"] and "Traceback" in ok("job", "reports", bad["id"], cwd=cwd)
    assert as_json("retry", "reports", bad["id"], cwd=cwd) == {"id": bad["id"], "queue": "reports",
                                                                 "state": "waiting"}
    wait_state(project, "reports", bad["id"], "failed")
    retried = as_json("retry", "reports", "--all-failed", cwd=cwd)
    assert retried["queue"] == "reports" and retried["retried"] >= 1
    wait_state(project, "reports", bad["id"], "failed")

    later = as_json("enqueue", "default", "echo", "--delay", "3600", cwd=cwd)
    assert later["state"] == "delayed"
    assert as_json("cancel", "default", later["id"], cwd=cwd)["state"] == "cancelled"
    assert as_json("remove", "default", later["id"], cwd=cwd) == {"id": later["id"], "queue": "default",
                                                                    "removed": True}
    again = as_json("enqueue", "default", "echo", "--delay", "3600", cwd=cwd)
    ok("promote", "default", again["id"], cwd=cwd)
    wait_state(project, "default", again["id"], "completed")

    refused = conveyor("purge", "reports", "failed", cwd=cwd, stdin="n\n")
    assert refused.returncode == 1 and refused.stderr.startswith("Delete 1 failed job(s) of queue reports? [y/N]")
    assert refused.stderr.endswith("error: not confirmed; nothing deleted (pass --yes to skip the question)\n")
    assert as_json("jobs", "reports", "--state", "failed", cwd=cwd)["jobs"]
    purged = as_json("purge", "reports", "failed", "--yes", cwd=cwd)
    assert purged["purged"] >= 1 and as_json("jobs", "reports", "--state", "failed", cwd=cwd)["jobs"] == []


def test_pause_and_resume_every_queue(project: UpProject) -> None:
    cwd = project.directory
    paused = as_json("pause", "--all", cwd=cwd)
    assert {"default", "reports"} <= {q["name"] for q in paused["queues"]}
    try:
        assert all(q["paused"] for q in as_json("queues", cwd=cwd)["queues"])
        held = as_json("enqueue", "default", "echo", cwd=cwd)
        assert as_json("job", "default", held["id"], cwd=cwd)["state"] == "waiting"
    finally:
        ok("resume", "--all", cwd=cwd)
    wait_state(project, "default", held["id"], "completed")
    assert as_json("pause", "docs", cwd=cwd) == {"name": "docs", "paused": True}
    assert as_json("resume", "docs", cwd=cwd) == {"name": "docs", "paused": False}


def test_doctor_finds_the_embedded_server_healthy(project: UpProject) -> None:
    report = as_json("doctor", cwd=project.directory)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True, report
    assert checks["persistence"]["detail"].startswith("AOF on")
    assert checks["maxmemory-policy"]["detail"] == "noeviction"
    assert checks["clock skew"]["detail"].startswith("1 live worker")
    assert "0 problem(s)" in ok("doctor", cwd=project.directory)


def test_commands_say_the_server_is_not_running_instead_of_starting_one(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / ".conveyor").mkdir(parents=True)
    elsewhere.mkdir()
    for args in (["status"], ["queues"], ["jobs", "q"], ["enqueue", "q", "x"], ["doctor"], ["env"],
                 ["keys", "list"], ["schedules", "list"]):
        line = error_line(*args, cwd=project)
        assert f"the embedded server of {project.resolve()} is not running" in line, (args, line)
        assert "conveyor up" in line and "REDIS_URL" in line
    assert not (project / ".conveyor" / "data" / "embedded.json").exists()
    line = error_line("status", cwd=elsewhere)
    assert "REDIS_URL is not set and no .conveyor/ project" in line
