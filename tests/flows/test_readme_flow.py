"""The README's flow lines, exactly as shown, against `conveyor up` in a fresh project directory: one
curl starts the `questions` pipeline, one follows it until it ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.cli.project import UpProject
from tests.cli.run import clean_env

ROOT = Path(__file__).resolve().parents[2]
BLOCK = next(b for b in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
             if "questions/jobs" in b)


def test_readme_questions_pipeline_lines(up_project: UpProject) -> None:
    lines = [line for line in BLOCK.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("QID=$(curl") and lines[1].startswith("curl")
    script = f"KEY=$(cat .conveyor/admin.key)\nAPI={up_project.api}\n{BLOCK}\necho \"QID=$QID\"\n"
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=up_project.directory, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    qid = re.findall(r"^QID=(\S+)$", done.stdout, re.MULTILINE)[0]
    kinds = re.findall(r"^event: (\S+)$", done.stdout, re.MULTILINE)
    data = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("data: ")]
    assert kinds[0] == "state" and kinds[1] == "children", done.stdout[-3000:]
    # the stream ends when the pipeline does (a quick pipeline may have ended before it started)
    assert kinds[-1] == "completed" or (len(kinds) == 2 and data[0]["state"] == "completed"), kinds
    children = next(d for k, d in zip(kinds, data, strict=True) if k == "children")["children"]
    if kinds[-1] == "completed" and any(c["state"] != "completed" for c in children):
        assert "child" in kinds  # the progress of children not yet ended streamed in
    names = {c["name"] for c in children}
    assert names == {"validate", "generate"}, children
    own = [d for k, d in zip(kinds, data, strict=True) if k not in ("children", "child", "state")]
    assert all(d.get("job_id") == qid for d in own)
    key = (up_project.directory / ".conveyor" / "admin.key").read_text().strip()
    url = f"{up_project.api}/api/jobs/questions/{qid}"
    read = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {key}", url],
                          capture_output=True, text=True, timeout=60)
    result = json.loads(read.stdout)["result"]
    assert result["generator"] == "offline" and result["topics"] == ["cells", "molecules", "atoms"]
    assert len(result["questions"]) == 5 and result["rejected"] == 0
