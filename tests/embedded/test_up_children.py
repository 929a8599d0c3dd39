"""A Ctrl-C at any moment of `conveyor up` starting its worker and API leaves no child that `up`'s
clean-up cannot reach (tests/embedded/children_sweep.py raises it at each point in turn, in a process
of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

SWEEP = Path(__file__).with_name("children_sweep.py")


def test_an_interrupt_at_any_point_of_starting_the_children_leaves_none_outside_the_group() -> None:
    """A KeyboardInterrupt after a child's fork but before `Popen` returned left that child out of the
    group: `up`'s clean-up stopped the others and it ran on until `up` itself had exited."""
    done = subprocess.run([sys.executable, str(SWEEP)], capture_output=True, text=True, timeout=550)
    assert done.returncode == 0, f"left behind:\n{done.stdout}\n{done.stderr[-3000:]}"
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["after_fork"] > 0, summary  # the window between a fork and the group was swept
