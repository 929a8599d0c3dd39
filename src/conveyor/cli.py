"""Command line: `conveyor ...`. The only place logging is configured.

Each command's module is imported when that command runs (`COMMANDS` below), so `conveyor --help`
and `conveyor version` load neither FastAPI nor the worker service, and a command whose optional
extra is missing says which one in one line (`conveyor.extras`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
import typer.main

from conveyor import __version__
from conveyor.errors import MissingExtraError
from conveyor.extras import import_for


@dataclass(frozen=True, slots=True)
class Lazy:
    """A command loaded on demand: `module.attr` is a Typer app (a command group) or a command
    function; with `factory` it is a function that takes the CLI's logging set-up and returns one."""

    module: str
    attr: str
    help: str
    extras: tuple[str, ...] = ()
    factory: bool = False
    epilog: str | None = None  # attribute of `module` returning the epilog text


_OPS = "conveyor.ops.commands"
_INSPECT = "conveyor.ops.inspect"
COMMANDS: dict[str, Lazy] = {
    "up": Lazy("conveyor.up.command", "up_command",
               "Run everything on this machine: embedded Valkey, worker service and API.",
               extras=("embedded", "service", "api")),
    "worker": Lazy("conveyor.service.command", "worker_command",
                   "Run a worker for every queue APP declares, with health, metrics, graceful stop.",
                   extras=("service",), factory=True, epilog="settings_help"),
    "api": Lazy("conveyor.api.command", "api_command", "Serve the HTTP API for APP's queues.",
                extras=("api",), factory=True),
    "scheduler": Lazy("conveyor.schedules.cli", "scheduler_command",
                      "Run APP's schedules (cron and intervals) without workers."),
    "status": Lazy(_INSPECT, "status", "The whole system at a glance: workers, queues, limits."),
    "queues": Lazy(_INSPECT, "queues", "One row per queue in Redis: counts by state, oldest waiting."),
    "jobs": Lazy(_INSPECT, "jobs", "List jobs of one state in a queue."),
    "job": Lazy(_INSPECT, "job", "One job: record, error, logs."),
    "enqueue": Lazy(_OPS, "enqueue", "Enqueue a job by name with JSON data."),
    "retry": Lazy(_OPS, "retry", "Send a failed or cancelled job (or every failed one) back to waiting."),
    "cancel": Lazy(_OPS, "cancel", "Cancel a waiting or delayed job; ask an active one to stop."),
    "promote": Lazy(_OPS, "promote", "Make a delayed job ready now."),
    "remove": Lazy(_OPS, "remove", "Delete a job that is not active."),
    "purge": Lazy(_OPS, "purge", "Delete every job of one state in a queue (asks first)."),
    "pause": Lazy(_OPS, "pause", "Stop handing out jobs of a queue (or of every queue), fleet-wide."),
    "resume": Lazy(_OPS, "resume", "Hand out jobs of a paused queue (or of every queue) again."),
    "doctor": Lazy("conveyor.ops.doctor", "doctor", "Check the server: settings, latency, topology, clocks."),
    "env": Lazy("conveyor.ops.env", "env", "Print the `export REDIS_URL=...` line for this project."),
    "keys": Lazy("conveyor.api.command", "keys_app", "Manage API keys (stored hashed in Redis).",
                 extras=("api",)),
    "schedules": Lazy("conveyor.schedules.cli", "schedules_app", "List and control schedules."),
    "costs": Lazy("conveyor.costs.cli", "costs_app", "Tokens and cost per tenant, task and day; budgets."),
}


def _configure_logging(level: str, fmt: str) -> None:
    from conveyor.logconfig import configure_logging

    configure_logging(level, fmt)


def load_command(name: str, spec: Lazy) -> Any:
    """Import the command's module and build its Typer/Click command."""
    module = import_for(spec.module, spec.extras, f"`conveyor {name}`")
    target = getattr(module, spec.attr)
    if spec.factory:
        target = target(_configure_logging)
    if isinstance(target, typer.Typer):
        command = typer.main.get_command(target)
    else:
        single = typer.Typer()
        epilog = getattr(module, spec.epilog)() if spec.epilog else None
        single.command(name, epilog=epilog)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(typer.core.TyperGroup):
    """Lists the lazy commands by name and help text; imports one only when it is run."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        if self._listing:  # help output needs the name and help text only
            return typer.core.TyperCommand(cmd_name, help=spec.help)
        try:
            return load_command(cmd_name, spec)
        except MissingExtraError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(cls=LazyGroup, help="Conveyor: background jobs on Redis/Valkey.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Conveyor: background jobs on Redis/Valkey. Commands find the server through REDIS_URL, else the
    embedded server that `conveyor up` runs for the project directory (the nearest .conveyor/ upwards)."""


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help='Print {"version": ...}.')) -> None:
    """Print the installed version."""
    typer.echo(f'{{"version": "{__version__}"}}' if as_json else __version__)


def main() -> None:
    app()
