"""Runs `python -m conveyor ...` as an operator would: a subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without REDIS_URL or any Conveyor setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CONVEYOR_")}
    env.update(extra)
    return env


def conveyor(*args: str, cwd: Path | None = None, redis_url: str | None = None, stdin: str = "",
             timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"REDIS_URL": redis_url} if redis_url else {}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args], env=clean_env(**extra, **env), cwd=cwd,
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def ok(*args: str, **kwargs: Any) -> str:
    done = conveyor(*args, **kwargs)
    assert done.returncode == 0, f"conveyor {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def as_json(*args: str, **kwargs: Any) -> Any:
    return json.loads(ok(*args, "--json", **kwargs))


def error_line(*args: str, **kwargs: Any) -> str:
    """The one error line of a failing command (and it must fail, with nothing else on stderr)."""
    done = conveyor(*args, **kwargs)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]
