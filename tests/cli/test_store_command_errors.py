"""`conveyor schedules ...` and `conveyor keys ...` share how they reach the server with the operator
commands, each keeping its own exit statuses: a bad setting is status 1 for schedules and 2 for keys,
an unusable server one line and status 1 for both; never a traceback."""

from __future__ import annotations

import pytest

from conveyor.testing import RedisServer
from tests.cli.run import conveyor
from tests.proxy import TcpProxy

BAD_SCHEME = ("error: unsupported Redis URL scheme 'http': use redis://, rediss://, unix://, redis+cluster:// "
              "or redis+sentinel://")


@pytest.mark.parametrize(("args", "status"), [
    (("schedules", "list"), 1), (("schedules", "pause", "hourly"), 1),
    (("keys", "list"), 2), (("keys", "revoke", "k1"), 2),
])
def test_a_bad_redis_url_is_one_line(args: tuple[str, ...], status: int) -> None:
    done = conveyor(*args, "--redis-url", "http://example.invalid/0")
    assert (done.returncode, done.stdout, done.stderr) == (status, "", BAD_SCHEME + "\n")


UNREACHABLE = "error: Redis at {url} is unreachable: "  # met finding the server or outside a guarded call


@pytest.mark.parametrize(("args", "said"), [
    (("schedules", "list"), "error: Redis not usable: "),
    (("schedules", "remove", "hourly"), "error: Redis not usable while running delete-6: "),
    (("keys", "list"), UNREACHABLE),
    (("keys", "create", "ci", "-s", "read"), UNREACHABLE),
])
def test_an_unreachable_server_is_one_line_and_status_1(
    redis_server: RedisServer, args: tuple[str, ...], said: str
) -> None:
    with TcpProxy(redis_server.port) as down:  # a real listener that resets every connection
        down.refuse(True)
        done = conveyor(*args, "--redis-url", down.url)
    assert done.returncode == 1 and done.stdout == "", done
    [line] = done.stderr.splitlines()
    assert line.startswith(said.format(url=down.url)), line


def test_a_bad_prefix_is_refused_by_the_schedule_commands_with_status_1(redis_server: RedisServer) -> None:
    done = conveyor("schedules", "list", "--prefix", "bad prefix{", redis_url=redis_server.url)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: invalid key prefix 'bad prefix{'\n")


@pytest.mark.parametrize("args", [("keys", "list"), ("keys", "create", "ci", "-s", "read"), ("keys", "revoke", "k1")])
def test_a_bad_prefix_is_refused_by_the_key_commands_with_status_2(
    redis_server: RedisServer, args: tuple[str, ...]
) -> None:
    """A brace in the prefix would put the key records outside their `{auth}` hash-tag slot."""
    done = conveyor(*args, "--prefix", "bad prefix{", redis_url=redis_server.url)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "error: invalid key prefix 'bad prefix{'\n")
