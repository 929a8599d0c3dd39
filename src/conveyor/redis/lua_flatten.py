"""Flattening of the Lua scripts' shared helpers into each script, once, at import.

`--@include <name>` pastes `includes/<name>.lua` in place (once per script; later includes of the
same file are dropped). `--@lazy <name>` pastes it inside a loader instead, so that a script run
defines the helper's functions only when one of them is first called. Redis runs a script's top
level at every call, and each `local function` there is a closure made anew: in the worker's trip
script, the helpers of rarely taken paths (limits, groups, flows) cost more than the rest of an idle
claim's preamble. A lazy section becomes:

    local a, b                       -- the section's functions that code outside it calls
    local function load_limits() <the helper's text>; return a, b end
    a = function(...) a, b = load_limits(); return a(...) end   -- one stub per such function

The first call of a stub defines the section and replaces every stub, so later calls go straight to
the functions. A section may hand out functions only: a constant or table of it that code outside
uses is refused here, at import.
"""

from __future__ import annotations

import re
from pathlib import Path

_DIRECTIVE = re.compile(r"^--@(include|lazy)\s+(\S+)\s*$", re.MULTILINE)
_SECTION = re.compile(r"^--@lazy-begin (\S+)\n(.*?)^--@lazy-end \1\n", re.MULTILINE | re.DOTALL)
_FUNCTION = re.compile(r"^local function ([A-Za-z_]\w*)", re.MULTILINE)
_LOCAL = re.compile(r"^local ([A-Za-z_][\w, ]*?)\s*=", re.MULTILINE)


def flatten(source: str, includes: Path) -> str:
    """`source` with its include and lazy directives expanded from the directory `includes`."""
    seen: set[str] = set()

    def expand(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if name in seen:
            return ""
        seen.add(name)
        text = _DIRECTIVE.sub(expand, (includes / f"{name}.lua").read_text())
        if kind == "include":
            return text
        if "--@lazy-begin" in text:
            raise ValueError(f"lazy include {name!r} holds another lazy include")
        return f"--@lazy-begin {name}\n{text.rstrip()}\n--@lazy-end {name}\n"

    flat = _DIRECTIVE.sub(expand, source)
    return _SECTION.sub(lambda m: _loader(m, flat), flat)


def _used_outside(name: str, outside: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}\b", outside) is not None


def _loader(section: re.Match[str], flat: str) -> str:
    name, body = section.group(1), section.group(2)
    outside = _strip_comments(flat[: section.start()] + flat[section.end() :])
    functions = _FUNCTION.findall(body)
    values = [v.strip() for m in _LOCAL.findall(body) for v in m.split(",")]
    leaked = [v for v in values if _used_outside(v, outside)]
    if leaked:
        raise ValueError(f"lazy include {name!r}: {', '.join(leaked)} used outside it (only functions may be)")
    exports = [f for f in functions if _used_outside(f, outside)]
    if not exports:
        return ""  # nothing outside calls it: the section is dead code in this script
    names = ", ".join(exports)
    loader = f"load_{name.replace('-', '_')}"
    stubs = "".join(f"{f} = function(...) {names} = {loader}(); return {f}(...) end\n" for f in exports)
    return f"local {names}\nlocal function {loader}()\n{body}return {names}\nend\n{stubs}"


def _strip_comments(lua: str) -> str:
    """Lua without its comments (a name mentioned in a comment is not a use)."""
    lua = re.sub(r"--\[(=*)\[.*?\]\1\]", "", lua, flags=re.DOTALL)
    return re.sub(r"--[^\n]*", "", lua)
