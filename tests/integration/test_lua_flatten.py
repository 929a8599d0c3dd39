"""Lazy Lua includes (redis/lua_flatten.py): a lazy helper's functions are defined on first use, once
per script run, and every caller outside it reaches them; run on a real Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor.redis.connection import RedisClient
from conveyor.redis.lua_flatten import flatten
from conveyor.redis.scripts import LUA_DIR, Script, all_script_files, core_script

HELPER = """-- doubles and triples; `twice` is used outside, `helper_only` only here
local FACTOR = 3
local function helper_only(x) return x * FACTOR end
local function twice(x) return x * 2 end
local function thrice(x) return helper_only(x) end
"""


def _includes(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.lua").write_text(text)
    return tmp_path


def test_a_lazy_section_hands_out_the_functions_used_outside_it(tmp_path: Path) -> None:
    flat = flatten("--@lazy maths\nreturn {twice(2), thrice(2)}\n", _includes(tmp_path, maths=HELPER))
    assert flat.startswith("local twice, thrice\nlocal function load_maths()\n")
    assert "helper_only = function" not in flat  # used only inside: defined inside, no stub
    assert re.findall(r"^(\w+) = function", flat, re.MULTILINE) == ["twice", "thrice"]


def test_a_constant_used_outside_a_lazy_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FACTOR used outside"):
        flatten("--@lazy maths\nreturn FACTOR\n", _includes(tmp_path, maths=HELPER))


def test_a_lazy_section_nobody_calls_is_left_out(tmp_path: Path) -> None:
    assert flatten("--@lazy maths\nreturn 1\n", _includes(tmp_path, maths=HELPER)) == "\nreturn 1\n"


def test_an_include_already_pasted_is_not_pasted_again_lazily(tmp_path: Path) -> None:
    flat = flatten("--@include maths\n--@lazy maths\nreturn twice(1)\n", _includes(tmp_path, maths=HELPER))
    assert flat.count("local function twice") == 1 and "load_maths" not in flat


async def test_stubs_load_the_section_once_per_run_and_give_the_real_results(
    plain_client: RedisClient, tmp_path: Path
) -> None:
    counted = HELPER + "redis.call('INCR', KEYS[1])\n"  # counts the loads
    source = flatten(
        "--@lazy maths\nlocal a = twice(5)\nlocal b = thrice(5)\nlocal c = twice(7)\nreturn {a, b, c}\n",
        _includes(tmp_path, maths=counted),
    )
    key = f"loads:{tmp_path.name}"
    assert await plain_client.eval(source, 1, key) == [10, 15, 14]
    assert await plain_client.eval(source, 1, key) == [10, 15, 14]
    assert int(await plain_client.get(key)) == 2  # once per run, not once per call
    await plain_client.delete(key)


async def test_every_script_compiles_on_redis(plain_client: RedisClient) -> None:
    """A lazy section may push a script past Lua's limits (locals, upvalues): every script of every
    loader (core, flows, limiters, costs, schedules, alerts) is loaded into Redis."""
    from conveyor.alerts import store
    from conveyor.costs import ledger
    from conveyor.limits import shared
    from conveyor.redis import flow_scripts
    from conveyor.schedules import scripts as schedule_scripts

    loaded = [core_script(f.removesuffix(".lua").rsplit("-", 1)[0]) for f in all_script_files()]
    for registry in (shared._S, ledger._S, schedule_scripts._S, store._S):
        loaded += list(registry.values())
    loaded += [v for v in vars(flow_scripts).values() if isinstance(v, Script)]
    assert len(loaded) > len(all_script_files())
    for script in loaded:
        assert await plain_client.script_load(script.source) == script.sha, script.name


async def test_one_time_reading_per_run(plain_client: RedisClient) -> None:
    """now_ms and the counter floor of reserve read Redis time once per run and agree."""
    common = flatten("--@include common\n", LUA_DIR / "includes")
    probe = common + (
        "local a = now_ms()\nlocal x = 0\nfor i = 1, 200000 do x = x + i end\nlocal b = now_ms()\n"
        "local last = reserve(KEYS[1], 'id', 1)\nreturn {a, b, last}\n"
    )
    a, b, last = await plain_client.eval(probe, 1, "{flatten-test}:meta")
    assert a == b
    assert a * 1000 <= last < (a + 1) * 1000 + 1  # the µs floor of the same reading, plus one
    await plain_client.delete("{flatten-test}:meta")
