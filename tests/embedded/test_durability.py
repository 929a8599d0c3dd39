"""kill -9 of every Conveyor process, server included, while jobs wait, are delayed and are active:
after a restart every job is still there and runs to completion; none is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis as syncredis

from conveyor import JobState, Queue, Worker
from conveyor.embedded import EmbeddedConfig, acquire
from conveyor.embedded.server import wait_gone
from conveyor.embedded.state import ServerState
from conveyor.testing import free_port
from tests.conftest import wait_for
from tests.embedded.conftest import clean_env
from tests.embedded.test_up import Up

SCENARIO = Path(__file__).with_name("crash_scenario.py")
ROOT = Path(__file__).resolve().parents[2]
CRASH_APP = "tests.embedded.crash_app:app"


def aof_flushed(url: str) -> bool:
    """With appendfsync everysec, wait until Valkey has written its AOF buffer to the file: a process
    crash (unlike a power cut) then loses nothing, since the page cache survives the process."""
    with syncredis.Redis.from_url(url, socket_timeout=5) as c:
        info = c.info("persistence")
    return bool(info["aof_enabled"] == 1 and info["aof_buffer_length"] == 0
                and info["aof_last_write_status"] == "ok")


def run_and_kill_everything(data_dir: Path, qname: str, fsync: str) -> tuple[dict[str, Any], ServerState]:
    """Start the scenario process, wait for its jobs to be waiting/delayed/active, then kill -9 it and
    the embedded server it started."""
    proc = subprocess.Popen(
        [sys.executable, str(SCENARIO), qname], env=clean_env(data_dir, CONVEYOR_FSYNC=fsync),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        ids: dict[str, Any] = json.loads(line)
        state = ServerState.load(data_dir / "embedded.json")
        assert state is not None and state.pid == ids["server_pid"]
        if fsync == "everysec":
            deadline = time.monotonic() + 10
            while not aof_flushed(state.url):
                assert time.monotonic() < deadline, "the AOF buffer was not written within 10 s"
                time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        os.kill(state.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_gone(state.pid, state.start_time, 10)
        return ids, state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def test_kill9_everything_then_restart_loses_no_job(data_dir: Path, config: EmbeddedConfig) -> None:
    """Default fsync (everysec); the `conveyor up` variant below runs with CONVEYOR_FSYNC=always."""
    fsync = "everysec"
    qname = f"crash-{uuid.uuid4().hex[:8]}"
    ids, state = run_and_kill_everything(data_dir, qname, fsync)
    config = replace(config, fsync=fsync)

    # "make up" again: the stale state is detected, a new server replays the append-only file.
    with acquire(config) as handle:
        assert handle.started and handle.pid != state.pid
        queue = Queue(qname, redis=handle.url)
        try:
            before = {job_id: await queue.get_state(job_id) for group in ("active", "waiting", "delayed")
                      for job_id in ids[group]}
            assert [before[i] for i in ids["active"]] == [JobState.ACTIVE] * 2
            assert [before[i] for i in ids["waiting"]] == [JobState.WAITING] * 3
            assert [before[i] for i in ids["delayed"]] == [JobState.DELAYED] * 2

            async def done(ctx: object, data: dict[str, int]) -> int:
                return data["n"]

            worker = Worker(queue, {"slow": done, "quick": done}, concurrency=5, lease_ms=1500,
                            stalled_interval_ms=200)
            await worker.start()
            try:
                async def all_completed() -> bool:
                    return (await queue.counts()).get(JobState.COMPLETED, 0) == 7

                await wait_for(all_completed, timeout=30, what="all 7 jobs completed after the crash")
            finally:
                await worker.close()
            records = {job_id: await queue.get_job(job_id) for job_id in before}
            assert all(r is not None and r.state is JobState.COMPLETED for r in records.values())
            # Each active job's lease expired once: a stall if a heartbeat had confirmed its run before
            # the kill, a lapse if not (which of the two depends on how busy the machine was).
            assert [records[i].stalls + records[i].lapses for i in ids["active"]] == [1, 1]  # type: ignore[union-attr]
            assert sorted(r.result for r in records.values()) == [0, 0, 1, 1, 2, 10, 11]  # type: ignore[union-attr]
            counts = await queue.counts()
            assert counts.get(JobState.FAILED, 0) == 0 and counts.get(JobState.ACTIVE, 0) == 0
        finally:
            await queue.obliterate(force=True)
            await queue.close()


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_bytes()
        except OSError:
            continue
        if int(raw[raw.rindex(b")") + 2:].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_kill9_of_conveyor_up_and_everything_it_runs_then_up_again(workdir: Path) -> None:
    """The issue's scenario through `conveyor up`: kill -9 up, its worker and API and the embedded
    server while jobs wait, are delayed and are active; `up` again runs every one of them."""
    api_port, health_port = free_port(), free_port()
    env = {"PYTHONPATH": str(ROOT), "CONVEYOR_FSYNC": "always", "CONVEYOR_LEASE_MS": "1500",
           "CONVEYOR_STALLED_INTERVAL_MS": "300"}
    first = Up(workdir, api_port, health_port, CRASH_APP, CRASH_HANG="1", **env)
    try:
        first.expect("Press Ctrl-C to stop.")
        state = ServerState.load(workdir / ".conveyor" / "data" / "embedded.json")
        assert state is not None
        queue = Queue("crash", redis=state.url)
        try:
            active = [(await queue.add("slow", {"n": i})).id for i in range(2)]
            await wait_for(lambda: _count(queue, JobState.ACTIVE, 2), timeout=30, what="2 active jobs")
            waiting = [(await queue.add("quick", {"n": 10 + i})).id for i in range(3)]
            # Due in an hour: still delayed however long the restart takes on a busy machine.
            delayed = [(await queue.add("quick", {"n": 20 + i}, delay=3600)).id for i in range(2)]
        finally:
            await queue.close()
        victims = {*children_of(first.proc.pid), first.proc.pid, state.pid}
        assert len(victims) == 4  # worker, api, up, valkey-server
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        first.proc.wait(10)
        for pid in victims:
            assert wait_gone(pid, None, 10)
    finally:
        first.close()

    second = Up(workdir, api_port, health_port, CRASH_APP, **env)
    try:
        second.expect("Press Ctrl-C to stop.")
        state = ServerState.load(workdir / ".conveyor" / "data" / "embedded.json")
        assert state is not None
        queue = Queue("crash", redis=state.url)
        try:
            assert [await queue.get_state(i) for i in delayed] == [JobState.DELAYED] * 2
            for job_id in delayed:
                await queue.promote(job_id)  # due in an hour: promote rather than wait
            await wait_for(lambda: _count(queue, JobState.COMPLETED, 7), timeout=30, what="7 completed")
            records = [await queue.get_job(i) for i in [*active, *waiting, *delayed]]
            assert [r.result for r in records if r] == [0, 1, 10, 11, 12, 20, 21]
            assert [r.stalls + r.lapses for r in records if r][:2] == [1, 1]  # recovered by the sweep
            assert (await queue.counts()).get(JobState.FAILED, 0) == 0
        finally:
            await queue.close()
        assert second.stop() == 0, str(second)
    finally:
        second.close()


async def _count(queue: Queue, state: JobState, n: int) -> bool:
    return (await queue.counts()).get(state, 0) == n
