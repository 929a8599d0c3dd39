"""One way to find the server, everywhere: the CLI, `Queue()` and `Conveyor()` all call this.

`REDIS_URL` when it is set; otherwise the embedded server of the project directory, which is the
nearest directory upwards (from the current one) that holds a `.conveyor/` folder, as git finds
`.git/`; otherwise a `ServerNotFoundError` that names both ways out. Nothing here starts a server:
only `conveyor up` does (`conveyor.embedded.acquire`).

The embedded server's state file is read through `conveyor.embedded.state`, which needs nothing
beyond the standard library, so finding the server works without the `[embedded]` extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import ConfigurationError, ServerNotFoundError

PROJECT_DIR_NAME = ".conveyor"
DATA_DIR_NAME = "data"
STATE_FILE_NAME = "embedded.json"


def find_project_dir(start: Path | None = None) -> Path | None:
    """The nearest directory at or above `start` (default: the current one) holding `.conveyor/`."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / PROJECT_DIR_NAME).is_dir():
            return directory
    return None


def data_dir(configured: str | None = None, start: Path | None = None) -> Path:
    """The embedded server's data directory: `configured` (CONVEYOR_DATA_DIR) when given, else
    `.conveyor/data` of the project directory, else `./.conveyor/data` (where `conveyor up` makes one)."""
    if configured is not None:
        if not configured:
            raise ConfigurationError("CONVEYOR_DATA_DIR must not be empty")
        return Path(configured).expanduser().resolve()
    base = find_project_dir(start) or (start or Path.cwd()).resolve()
    return base / PROJECT_DIR_NAME / DATA_DIR_NAME


@dataclass(frozen=True, slots=True)
class Found:
    """Where the URL came from: `source` is "REDIS_URL", "argument" or "embedded"."""

    url: str
    source: str
    data_dir: Path | None = None


def running_embedded_url(directory: Path) -> str | None:
    """The URL of the embedded server of `directory` when its process runs, else None (read-only)."""
    from conveyor.embedded.state import ServerState, process_alive

    state = ServerState.load(directory / STATE_FILE_NAME)
    if state is None or not process_alive(state.pid, state.start_time):
        return None
    return state.url


def find_server(url: str | None = None, environ: Mapping[str, str] | None = None) -> Found:
    """`url` if given, else REDIS_URL, else the running embedded server of the project directory."""
    env = os.environ if environ is None else environ
    if url:
        return Found(url, "argument")
    if env.get("REDIS_URL"):
        return Found(env["REDIS_URL"], "REDIS_URL")
    directory = data_dir(env.get("CONVEYOR_DATA_DIR"))
    embedded = running_embedded_url(directory)
    if embedded is None:
        raise ServerNotFoundError(_not_running(directory))
    return Found(embedded, "embedded", directory)


def resolve_redis_url(url: str | None = None) -> str:
    """The Redis URL to use (see `find_server`); raises ServerNotFoundError naming both options."""
    return find_server(url).url


def _not_running(directory: Path) -> str:
    if directory.parent.name != PROJECT_DIR_NAME:  # CONVEYOR_DATA_DIR points elsewhere
        where, start = f"the embedded server of {directory} is not running", "`conveyor up` with this CONVEYOR_DATA_DIR"
    elif directory.parent.is_dir():
        project = directory.parent.parent
        where, start = f"the embedded server of {project} is not running", f"`conveyor up` in {project}"
    else:
        where = f"REDIS_URL is not set and no {PROJECT_DIR_NAME}/ project is in {Path.cwd()} or above"
        start = "`conveyor up` in your project directory"
    return f"{where}: start it with {start}, or set REDIS_URL (e.g. redis://host:port/0) to use your own server"
