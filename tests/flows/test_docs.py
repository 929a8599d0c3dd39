"""Every ```python block of docs/flows.md runs as it stands against a real server (REDIS_URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "flows.md").read_text(), re.DOTALL)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_flows_doc_example_runs(index: int, redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / f"flows_example_{index}.py"
    script.write_text(BLOCKS[index])
    proc = subprocess.run([sys.executable, str(script)], env={**os.environ, "REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"docs/flows.md python block {index}:\n{proc.stderr[-3000:]}"
