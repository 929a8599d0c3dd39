"""Log set-up (in a child interpreter, since it configures the process's logging): JSON off a terminal,
colours on one, stdlib records from the library rendered the same way."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import io, logging, sys, structlog
from conveyor.logconfig import configure_logging

class Terminal(io.StringIO):
    def isatty(self): return True

out = Terminal() if sys.argv[1] == "tty" else io.StringIO()
configure_logging("info", "auto", stream=out)
structlog.get_logger("conveyor.jobs").info("job finished", queue="q", job_id="1")
logging.getLogger("conveyor.worker.worker").warning("queue %s: heartbeat failed", "q")
logging.getLogger("conveyor.worker.worker").debug("hidden at info")
sys.stdout.write(out.getvalue())
"""


def run(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.splitlines()


def test_json_lines_when_not_a_terminal() -> None:
    first, second = (json.loads(line) for line in run("pipe"))
    assert first["event"] == "job finished" and first["queue"] == "q" and first["level"] == "info"
    assert first["logger"] == "conveyor.jobs" and "timestamp" in first
    assert second["event"] == "queue q: heartbeat failed" and second["level"] == "warning"


def test_colours_on_a_terminal() -> None:
    lines = run("tty")
    assert len(lines) == 2 and "\x1b[" in lines[0] and "job finished" in lines[0]
    assert "heartbeat failed" in lines[1]
