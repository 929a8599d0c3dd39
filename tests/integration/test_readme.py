"""The README as a new user meets it: every ```python block runs as it stands against a server named
by REDIS_URL, and against `conveyor up` started in a fresh project directory with no REDIS_URL (as
`make up` does); the quick start's shell lines work twice in a row, each time on the job just made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.project import UpProject
from tests.cli.run import as_json, clean_env

# Generous: each starts `conveyor up` and runs the examples;
# a busy machine (a second copy of the suite) slows every start.
pytestmark = pytest.mark.timeout(360)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
QUICK_START = next(b for b in re.findall(r"```sh\n(.*?)```", README, re.DOTALL) if "ID=$(curl" in b)
EXAMPLE_QUEUES = ("default", "web", "docs", "reports")


def run_example(index: int, directory: Path, env: dict[str, str]) -> None:
    script = directory / f"readme_example_{index}.py"
    script.write_text(BLOCKS[index])
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=directory)
    assert proc.returncode == 0, f"README python block {index}:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_with_redis_url(index: int, redis_url: str, tmp_path: Path) -> None:
    run_example(index, tmp_path, {**os.environ, "REDIS_URL": redis_url})


@pytest.fixture
def project(up_project: UpProject) -> UpProject:
    return up_project


def example_queues(project: UpProject) -> dict[str, dict[str, int]]:
    found = as_json("queues", cwd=project.directory)["queues"]
    return {q["name"]: q["counts"] for q in found if q["name"] in EXAMPLE_QUEUES}


def test_readme_examples_run_against_conveyor_up_without_touching_its_queues(project: UpProject) -> None:
    before = example_queues(project)
    assert set(before) == set(EXAMPLE_QUEUES)
    for _ in range(2):  # a second run finds nothing left over by the first
        for index in range(len(BLOCKS)):
            run_example(index, project.directory, clean_env())
    assert example_queues(project) == before


def test_quick_start_follows_the_job_it_just_enqueued(project: UpProject) -> None:
    script = QUICK_START.replace("http://127.0.0.1:8000", project.api) + '\necho "ENQUEUED=$ID"\n'
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    ids = []
    for _ in range(2):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=project.directory, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        job_id = re.findall(r"^ENQUEUED=(\S+)$", done.stdout, re.MULTILINE)[0]
        # curl prints no newline after a body, so a line may hold a document and what followed it
        read = [json.JSONDecoder().raw_decode(line)[0] for line in done.stdout.splitlines()
                if line.startswith('{"id":"')]
        assert read[0]["id"] == job_id and read[0]["state"] == "completed"
        assert read[0]["result"] == {"hello": "world"}
        frames = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("data: {")]
        assert frames and all(f.get("id", f.get("job_id")) == job_id for f in frames)  # its own events
        assert "Workers (1 live)" in done.stdout
        ids.append(job_id)
    assert ids[0] != ids[1]
