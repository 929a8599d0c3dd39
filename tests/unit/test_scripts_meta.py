"""The Lua scripts' headers agree with the code table and the wrappers."""

from __future__ import annotations

import re

from conveyor.redis.codes import ScriptCode
from conveyor.redis.scripts import LUA_DIR, Script, all_script_files

HEADER = re.compile(r"^--\[\[ (?P<name>[a-z-]+-\d+):", re.MULTILINE)


def test_every_script_header_names_itself_and_lists_known_codes() -> None:
    files = all_script_files()
    assert files, "no scripts found"
    for filename in files:
        text = (LUA_DIR / filename).read_text()
        match = HEADER.search(text)
        assert match and match.group("name") == filename.removesuffix(".lua"), filename
        codes_line = next(line for line in text.splitlines() if line.startswith("Codes:"))
        for value, name in re.findall(r"(-?\d+) ([A-Z_]+)", codes_line):
            assert ScriptCode[name] == int(value), f"{filename}: {name}={value}"
        keys_line = next(line for line in text.splitlines() if line.startswith("KEYS:"))
        declared = len(re.findall(r"\b\d+ [a-z]", keys_line))
        assert declared == Script.load(filename).num_keys, filename


def test_includes_are_flattened_once() -> None:
    script = Script.load("finish-10.lua")
    assert "--@include" not in script.source
    assert script.source.count("local function now_ms") == 1
    assert script.source.count("local function claim(") == 1


def test_the_lifecycle_events_of_the_modes_agree_with_the_scripts() -> None:
    """events.py's HOT_EVENTS (documented) is the set lua/includes/events.lua drops."""
    import re

    from conveyor.events import HOT_EVENTS
    from conveyor.redis.scripts import LUA_DIR

    source = (LUA_DIR / "includes" / "events.lua").read_text()
    table = re.search(r"local HOT_EVENTS = \{([^}]*)\}", source)
    assert table is not None
    assert set(re.findall(r"(\w+) = true", table.group(1))) == HOT_EVENTS
