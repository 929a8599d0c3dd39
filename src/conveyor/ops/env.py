"""`conveyor env`: the `export REDIS_URL=...` line that points other tools at this project's server."""

from __future__ import annotations

import shlex

import typer

from conveyor.discovery import find_server
from conveyor.errors import ServerNotFoundError
from conveyor.ops.common import JsonOpt, fail, print_json


def env(as_json: JsonOpt = False) -> None:
    """Print `export REDIS_URL=...` for the server this directory uses: REDIS_URL when set, else the
    running embedded server of the project (`eval "$(conveyor env)"` in a shell)."""
    try:
        found = find_server()
    except ServerNotFoundError as exc:
        fail(str(exc))
    if as_json:
        print_json({"REDIS_URL": found.url, "source": found.source,
                    "data_dir": None if found.data_dir is None else str(found.data_dir)})
    else:
        typer.echo(f"export REDIS_URL={shlex.quote(found.url)}")
