"""The TypeScript client (clients/node) under Node's own test runner, against a real `conveyor api`
and a real `conveyor worker` on a real server. Skipped, saying so, when node or npm is not on PATH."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.api.keys import KeyStore
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "node"
NODE, NPM = shutil.which("node"), shutil.which("npm")
pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node/npm not on PATH: the Node client tests are skipped"
)
KEYS = {"CLIENT": (["enqueue", "read-data"], None), "ADMIN": (["admin"], None), "READ": (["read"], None),
        "LIMITED": (["read"], 1)}


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "WORKER_"))}


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    return subprocess.Popen([conveyor, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.stdout.read().decode(errors="replace") if proc.stdout else ""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def make_keys(url: str) -> dict[str, str]:
    client = connect(url)
    try:
        store = KeyStore(client)
        return {who: (await store.create(f"node-{who.lower()}", scopes, rate_limit=rate))[0]
                for who, (scopes, rate) in KEYS.items()}
    finally:
        await client.aclose()


@pytest.fixture
def api_stack(qname: str) -> Iterator[dict[str, str]]:
    with RedisServer() as server:
        port = free_port()
        env = {**base_env(), "REDIS_URL": server.url, "API_TEST_QUEUE": qname, "CONVEYOR_API_RATE_LIMIT": "0",
               "CONVEYOR_API_SSE_KEEPALIVE_S": "0.3", "WORKER_HEALTH_PORT": "0", "CONVEYOR_STATS_INTERVAL_S": "0"}
        api = spawn(["api", "tests.api.sample_app:app", "--port", str(port)], env)
        worker = spawn(["worker", "tests.api.sample_app:app"], env)
        url = f"http://127.0.0.1:{port}"
        try:
            keys = asyncio.run(make_keys(server.url))
            deadline = 60.0
            while not healthy(url):
                assert api.poll() is None, stop(api)
                deadline -= 0.1
                assert deadline > 0, "conveyor api did not become healthy"
                asyncio.run(asyncio.sleep(0.1))
            yield {"CONVEYOR_TEST_API_URL": url, "CONVEYOR_TEST_QUEUE": qname,
                   "CONVEYOR_TEST_DEAD_URL": f"http://127.0.0.1:{free_port()}",
                   **{f"CONVEYOR_TEST_KEY_{who}": token for who, token in keys.items()}}
        finally:
            api_out, worker_out = stop(api), stop(worker)
            assert "Traceback" not in api_out, api_out
            # The worker logs the traceback of the job that fails on purpose; nothing may crash.
            assert '"level": "error"' not in worker_out and '"level": "critical"' not in worker_out, worker_out


@pytest.mark.timeout(600)
def test_node_client_against_a_real_api(api_stack: dict[str, str]) -> None:
    assert NPM is not None and NODE is not None
    if not (CLIENT / "node_modules" / "typescript").exists():
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund", "--silent"], cwd=CLIENT, check=True, timeout=300)
    subprocess.run([NPM, "run", "--silent", "build"], cwd=CLIENT, check=True, timeout=300)
    run = subprocess.run([NODE, "--test", "--test-reporter=spec", "test/"], cwd=CLIENT,
                         env={**base_env(), **api_stack}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "# fail 0" in run.stdout or "fail 0" in run.stdout, run.stdout[-3000:]
