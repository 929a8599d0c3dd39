"""`conveyor up` end to end, as a newcomer runs it on a machine with no Redis installed: the embedded
server, the worker service and the API come up; the README's curl flow (enqueue, follow events, read
the result) works with the admin key from the file; Ctrl-C stops everything; a second start keeps
the key and the jobs."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis as syncredis

from conveyor import JobState, Queue
from conveyor.embedded import EmbeddedConfig, acquire
from conveyor.embedded.server import looks_like_server, wait_gone
from conveyor.embedded.state import ServerState, process_alive, process_start_time
from conveyor.redis.connection import connect
from conveyor.settings import Settings
from conveyor.testing import free_port
from tests.conftest import wait_for
from tests.embedded.conftest import clean_env
from tests.embedded.up_app import release_key

# Generous: each starts `conveyor up` (server, worker, API) and stops it;
# a busy machine (a second copy of the suite) slows every start.
pytestmark = pytest.mark.timeout(360)

BOOT_TIMEOUT_S = 150.0  # generous: the machine may be busy with a second copy of the suite


class Up:
    """`python -m conveyor up` in a subprocess; its output is read by a thread into a queue."""

    def __init__(self, workdir: Path, api_port: int, health_port: int, *app: str, **env: str) -> None:
        empty_bin = workdir / "bin"
        empty_bin.mkdir(exist_ok=True)  # PATH without redis-server or valkey-server
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "up", *app,
             "--api-port", str(api_port), "--health-port", str(health_port)],
            env=clean_env(workdir / ".conveyor" / "data", PATH=str(empty_bin),
                          **{"CONVEYOR_LOG_LEVEL": "warning", "CONVEYOR_SHUTDOWN_GRACE_S": "5", **env}),
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, text: str, timeout: float = BOOT_TIMEOUT_S) -> str:
        """Read output until a line containing `text`; return that line."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                output = "\n".join(self.output)
                raise AssertionError(f"no {text!r} within {timeout}s; output:\n{output}") from None
            if line is None:
                raise AssertionError(f"exited before {text!r}; output:\n" + "\n".join(self.output))
            self.output.append(line)
            if text in line:
                return line

    def stop(self, signum: int = signal.SIGINT, timeout: float = 40.0) -> int:
        """Signal `up` and wait for it; the exit code (its output is kept for failure messages)."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def __str__(self) -> str:
        while True:  # drain what the reader thread has collected so far
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return "output of conveyor up:\n" + "\n".join(self.output)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def events_until_end(client: httpx.Client, url: str, headers: dict[str, str]) -> list[str]:
    """The event types of a job's SSE stream, read until the server closes it at the job's end."""
    kinds: list[str] = []
    with client.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                kinds.append(line.split(":", 1)[1].strip())
    return kinds


def test_up_runs_everything_and_keeps_jobs_and_key_across_restarts(workdir: Path) -> None:
    api_port, health_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    up = Up(workdir, api_port, health_port)
    try:
        key_line = up.expect("Admin key")
        up.expect("Press Ctrl-C to stop.")
        key_file = workdir / ".conveyor" / "admin.key"
        key = key_file.read_text().strip()
        assert key in key_line  # printed once, on first start
        assert key_file.stat().st_mode & 0o777 == 0o600
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api, timeout=30) as http:
            assert http.get("/api/health").status_code == 200
            assert http.get(f"http://127.0.0.1:{health_port}/health").status_code == 200
            assert "conveyor" in http.get(f"http://127.0.0.1:{health_port}/metrics").text
            assert http.post("/api/queues/default/jobs", json={"name": "echo", "data": {}}).status_code == 401

            # The README flow: enqueue, follow the events, read the result. A one-second delay makes
            # sure the stream is followed live rather than read after the end.
            created = http.post("/api/queues/default/jobs", headers=auth,
                                json={"name": "echo", "data": {"hello": "world"}, "options": {"delay": 1}})
            assert created.status_code == 202, created.text
            body = created.json()
            kinds = events_until_end(http, body["events_url"], auth)
            assert kinds[0] == "state" and kinds[-1] == "completed", kinds
            job = http.get(body["status_url"], headers=auth).json()
            assert (job["state"], job["result"]) == ("completed", {"hello": "world"})

            report = http.post("/api/queues/reports/jobs", headers=auth,
                               json={"name": "csv_report", "data": {"csv": "x,y\n1,2\n3,4\n"}}).json()
            done = http.get(f"/api/jobs/reports/{report['id']}/wait", params={"timeout": 20},
                            headers=auth).json()
            assert done["state"] == "completed" and done["result"]["numeric"]["x"]["mean"] == 2.0

        assert up.stop() == 0, str(up)
        up.expect("embedded Valkey stopped")
        assert not (workdir / ".conveyor" / "data" / "embedded.json").exists()
    finally:
        up.close()

    again = Up(workdir, api_port, health_port)
    try:
        assert "in " in again.expect("Admin key")  # not created again: the saved key still works
        again.expect("Press Ctrl-C to stop.")
        assert key_file.read_text().strip() == key
        with httpx.Client(base_url=api, timeout=30) as http:
            job = http.get(body["status_url"], headers=auth).json()
            assert (job["state"], job["result"]) == ("completed", {"hello": "world"})  # survived the restart
        assert again.stop() == 0, str(again)
    finally:
        again.close()


def test_up_stops_everything_when_a_child_cannot_start(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        up = Up(workdir, api_port, free_port())
        try:
            assert "stopped the rest" in up.expect("api exited (code")
            assert up.proc.wait(40) == 1
            up.expect("embedded Valkey stopped")
            state_file = workdir / ".conveyor" / "data" / "embedded.json"
            assert not state_file.exists()
        finally:
            up.close()


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_up_killed_with_sigkill_takes_its_children_and_next_up_reuses_the_server(workdir: Path) -> None:
    api_port, health_port = free_port(), free_port()
    health = f"http://127.0.0.1:{health_port}/health"
    first = Up(workdir, api_port, health_port)
    try:
        first.expect("Press Ctrl-C to stop.")
        state = ServerState.load(workdir / ".conveyor" / "data" / "embedded.json")
        assert state is not None
        first.proc.kill()
        first.proc.wait(10)
        deadline = time.monotonic() + 30
        while not (_refused(health) and _refused(f"http://127.0.0.1:{api_port}/api/health")):
            assert time.monotonic() < deadline, "the worker or the API outlived `up`"
            time.sleep(0.1)
        assert process_alive(state.pid, state.start_time)  # the server waits for its next user
    finally:
        first.close()

    second = Up(workdir, api_port, health_port)
    try:
        second.expect("Press Ctrl-C to stop.")
        reused = ServerState.load(workdir / ".conveyor" / "data" / "embedded.json")
        assert reused is not None and reused.pid == state.pid
        assert second.stop() == 0, str(second)
        second.expect("embedded Valkey stopped")  # the dead `up`'s lease did not keep it alive
        assert not process_alive(state.pid, state.start_time)
    finally:
        second.close()


def test_up_with_redis_url_starts_no_embedded_server(workdir: Path, redis_url: str) -> None:
    api_port, health_port = free_port(), free_port()
    up = Up(workdir, api_port, health_port, REDIS_URL=redis_url)
    try:
        assert "(REDIS_URL)" in up.expect("  Redis ")
        up.expect("Press Ctrl-C to stop.")
        key = (workdir / ".conveyor" / "admin.key").read_text().strip()
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:
            auth = {"Authorization": f"Bearer {key}"}
            job = http.post("/api/queues/default/jobs", headers=auth, json={"name": "echo", "data": [1]})
            done = http.get(f"/api/jobs/default/{job.json()['id']}/wait", params={"timeout": 20},
                            headers=auth).json()
            assert (done["state"], done["result"]) == ("completed", [1])
        assert up.stop(signal.SIGTERM) == 0, str(up)
        assert not (workdir / ".conveyor" / "data").exists()
    finally:
        up.close()


def test_up_restarts_an_embedded_server_that_dies(workdir: Path) -> None:
    api_port, health_port = free_port(), free_port()
    up = Up(workdir, api_port, health_port)
    try:
        up.expect("Press Ctrl-C to stop.")
        key = (workdir / ".conveyor" / "admin.key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        state = ServerState.load(workdir / ".conveyor" / "data" / "embedded.json")
        assert state is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:
            before = http.post("/api/queues/default/jobs", headers=auth, json={"name": "echo", "data": "a"})
            os.kill(state.pid, signal.SIGKILL)
            assert f"(pid {state.pid}) died; restarted it" in up.expect("restarted it")
            after = http.post("/api/queues/default/jobs", headers=auth, json={"name": "echo", "data": "b"})
            assert after.status_code == 202, after.text
            for created, data in ((before, "a"), (after, "b")):
                done = http.get(f"/api/jobs/default/{created.json()['id']}/wait", params={"timeout": 30},
                                headers=auth).json()
                assert (done["state"], done["result"]) == ("completed", data)
        assert up.stop(signal.SIGHUP) == 0, str(up)  # the terminal closing stops everything cleanly
        up.expect("embedded Valkey stopped")
    finally:
        up.close()



def test_up_restarts_an_embedded_server_that_dies_while_the_children_start(workdir: Path) -> None:
    """The server is watched from the moment the children start, not only once they answer: killed
    before they are ready, it is started again and they become ready on it."""
    api_port, health_port = free_port(), free_port()
    up = Up(workdir, api_port, health_port)
    try:
        key_file = workdir / ".conveyor" / "admin.key"  # written just before the children start
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not key_file.exists():
            assert time.monotonic() < deadline and up.proc.poll() is None, str(up)
            time.sleep(0.01)
        state = ServerState.load(workdir / ".conveyor" / "data" / "embedded.json")
        assert state is not None
        os.kill(state.pid, signal.SIGKILL)
        assert f"(pid {state.pid}) died; restarted it" in up.expect("restarted it")
        up.expect("Press Ctrl-C to stop.")
        assert not any("not healthy" in line for line in up.output), str(up)
        auth = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:
            created = http.post("/api/queues/default/jobs", headers=auth, json={"name": "echo", "data": "c"})
            assert created.status_code == 202, created.text
            done = http.get(f"/api/jobs/default/{created.json()['id']}/wait", params={"timeout": 30},
                            headers=auth).json()
            assert (done["state"], done["result"]) == ("completed", "c")
        assert up.stop() == 0, str(up)
        up.expect("embedded Valkey stopped")
    finally:
        up.close()


UP_APP = "tests.embedded.up_app:app"
ROOT = Path(__file__).resolve().parents[2]


class HeldJob:
    """`up` running tests/embedded/up_app.py on the test's Redis, with one `hold` job active in it."""

    def __init__(self, workdir: Path, redis_url: str, grace_s: int) -> None:
        self.prefix = f"up{uuid.uuid4().hex[:10]}"
        self.up = Up(workdir, free_port(), free_port(), UP_APP, REDIS_URL=redis_url, CONVEYOR_PREFIX=self.prefix,
                     CONVEYOR_SHUTDOWN_GRACE_S=str(grace_s), CONVEYOR_LOG_LEVEL="info",
                     CONVEYOR_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
        self.client = connect(redis_url)
        self.queue = Queue("default", redis=self.client, prefix=self.prefix)
        self.job_id = ""

    async def start(self) -> None:
        await asyncio.to_thread(self.up.expect, "Press Ctrl-C to stop.")
        self.job_id = (await self.queue.add("hold")).id

        async def active() -> bool:
            return await self.queue.get_state(self.job_id) is JobState.ACTIVE

        await wait_for(active, timeout=60, interval=0.05, what="the held job runs")
        # Running in the worker, not only leased: a job leased after the signal is handed back unrun.
        await asyncio.to_thread(self.up.expect, '"job started"')

    async def signal(self, signum: int) -> None:
        self.up.proc.send_signal(signum)
        await asyncio.to_thread(self.up.expect, '"worker stopping"')

    async def release(self) -> None:
        await self.client.rpush(release_key(self.prefix, self.job_id), "go")

    async def exit_code(self, timeout: float = 150.0) -> int:
        return await asyncio.to_thread(self.up.proc.wait, timeout)

    async def close(self) -> None:
        self.up.close()
        await self.queue.obliterate(force=True)
        await self.client.aclose()


async def test_one_signal_lets_the_active_job_finish_within_the_grace(workdir: Path, redis_url: str) -> None:
    """`up` used to forward SIGTERM twice, which the worker reads as "exit now": the active job was
    abandoned to the stalled sweep. One signal now stops claiming and lets the job finish."""
    held = HeldJob(workdir, redis_url, grace_s=60)
    try:
        await held.start()
        await held.signal(signal.SIGINT)  # Ctrl-C
        await held.release()  # the job may finish only now, after the signal reached the worker
        assert await held.exit_code() == 0, str(held.up)
        record = await held.queue.get_job(held.job_id)
        assert record is not None and record.state is JobState.COMPLETED and record.result == "released"
        stopped = held.up.expect("stopped: api")
        assert "worker (code 0)" in stopped, str(held.up)
        assert not any("second signal" in line for line in held.up.output), str(held.up)
    finally:
        await held.close()


async def test_a_second_signal_exits_at_once(workdir: Path, redis_url: str) -> None:
    """A job that would run past any wait: the second signal ends `up` without waiting for the grace
    (an hour here); the job stays leased for the stalled sweep to recover."""
    held = HeldJob(workdir, redis_url, grace_s=3600)
    try:
        await held.start()
        await held.signal(signal.SIGTERM)
        held.up.proc.send_signal(signal.SIGTERM)
        assert await held.exit_code() == 0, str(held.up)
        assert "worker (code 130)" in held.up.expect("stopped: api")
        assert await held.queue.get_state(held.job_id) is JobState.ACTIVE  # never released, never finished
    finally:
        await held.close()


def _children_named(parent: int, name: bytes) -> list[int]:
    """Pids whose parent is `parent` and whose command line holds `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2:].split()[1]) == parent and name in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_embedded_server_loads_stops_it(workdir: Path, signum: int) -> None:
    """Ctrl-C (or SIGTERM) while the embedded server replays its append-only file: `up` used to
    exit and leave that server running in its own session, named by no state file and held by no
    lease (SIGTERM's default action did the same at any moment before the children ran)."""
    data = workdir / ".conveyor" / "data"
    with acquire(EmbeddedConfig.from_settings(Settings(data_dir=str(data)))) as handle:
        filler = syncredis.Redis.from_url(handle.url, socket_timeout=60)
        fill = "for i = 1, tonumber(ARGV[2]) do redis.call('SET', KEYS[1] .. i, ARGV[1]) end return 1"
        for part in range(40):  # 2 million keys: seconds of replay at the next start
            filler.eval(fill, 1, f"k{part}:", "x" * 20, 50_000)
        filler.close()
    up = Up(workdir, free_port(), free_port())
    servers: list[int] = []
    started: int | None = None
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not (servers := _children_named(up.proc.pid, b"valkey-server")):
            assert up.proc.poll() is None and time.monotonic() < deadline, str(up)
            time.sleep(0.01)
        server = servers[0]
        started = process_start_time(server)
        up.proc.send_signal(signum)
        assert up.proc.wait(60) == 130, str(up)
        assert "interrupted while starting" in up.expect("error:"), str(up)
        assert wait_gone(server, started, 30), "the embedded server outlived `up`"
        assert not (data / "embedded.json").exists()
    finally:
        up.close()
        for pid in servers:  # what a failed run left behind
            if process_alive(pid, started) and looks_like_server(pid):
                os.kill(pid, signal.SIGKILL)


def _loads(log: Path) -> int:
    """How many times the server has finished replaying its append-only file."""
    return sum("loaded from append only file" in line for line in log.read_text(errors="replace").splitlines())


def test_a_signal_while_a_restarted_server_loads_stops_up_and_the_server(workdir: Path) -> None:
    """`up` starts again an embedded server that dies; a Ctrl-C while the new one replayed its file
    was counted and passed on to the children, but `up` went on waiting for the replay to end (as
    long as the file takes: minutes for a large one) before it stopped anything."""
    data = workdir / ".conveyor" / "data"
    up = Up(workdir, free_port(), free_port())
    servers: list[int] = []
    try:
        up.expect("Press Ctrl-C to stop.")
        state = ServerState.load(data / "embedded.json")
        assert state is not None
        filler = syncredis.Redis.from_url(state.url, socket_timeout=60)
        fill = "for i = 1, tonumber(ARGV[2]) do redis.call('SET', KEYS[1] .. i, ARGV[1]) end return 1"
        for part in range(40):  # 2 million keys: seconds of replay at the next start
            filler.eval(fill, 1, f"k{part}:", "x" * 20, 50_000)
        filler.close()
        loads = _loads(data / "valkey.log")
        os.kill(state.pid, signal.SIGKILL)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not (servers := [p for p in _children_named(up.proc.pid, b"valkey-server") if p != state.pid]):
            assert up.proc.poll() is None and time.monotonic() < deadline, str(up)
            time.sleep(0.01)
        started = process_start_time(servers[0])
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(90) == 0, str(up)
        assert wait_gone(servers[0], started, 30), "the restarted server outlived `up`"
        assert _loads(data / "valkey.log") == loads, "`up` waited for the replay to end before it stopped"
    finally:
        up.close()
        for pid in servers:  # what a failed run left behind
            if process_alive(pid) and looks_like_server(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1"])
def test_up_with_an_unreachable_redis_url_says_so_in_one_line(workdir: Path, url: str) -> None:
    """The admin key is `up`'s first call to Redis: a REDIS_URL nothing answers at ended `up` with
    a ConnectionError (or RedisClusterException) traceback."""
    up = Up(workdir, free_port(), free_port(), REDIS_URL=url)
    try:
        assert up.proc.wait(60) == 1, str(up)
        up.expect("error:")
        assert up.output == [up.output[-1]] and up.output[0].startswith(f"error: Redis at {url} is unreachable: ")
        assert up.lines.get(timeout=10) is None  # nothing more: no child was started
    finally:
        up.close()


def test_up_with_an_ipv6_api_host_checks_and_prints_it_bracketed(workdir: Path, redis_url: str) -> None:
    """`--api-host ::` (every IPv6 and IPv4 address) made `up` build http://:::8000 to check the API's
    health: httpx refused it (InvalidURL) and `up` ended with a traceback once the children ran."""
    api_port, health_port = free_port(), free_port()
    up = Up(workdir, api_port, health_port, "--api-host", "::", REDIS_URL=redis_url)
    try:
        api = up.expect("  API ")
        assert f"http://[::]:{api_port}/api/health" in api, str(up)
        up.expect("Press Ctrl-C to stop.")
        assert httpx.get(f"http://[::1]:{api_port}/api/health", timeout=30).status_code == 200
        assert up.stop(signal.SIGTERM) == 0, str(up)
    finally:
        up.close()
