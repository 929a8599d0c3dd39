"""Command line: `conveyor ...`. The only place logging is configured."""

from __future__ import annotations

import sys

import typer

from conveyor import __version__
from conveyor.api.command import api_command, keys_app
from conveyor.embedded.cli import embedded_for_command
from conveyor.errors import ConveyorError
from conveyor.service.command import settings_help, worker_command
from conveyor.service.logging import configure_logging
from conveyor.up import up_command

app = typer.Typer(help="Conveyor: background jobs on Redis/Valkey.", no_args_is_help=True)
app.command("api")(api_command(configure_logging))
app.add_typer(keys_app, name="keys")


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


app.command("up")(up_command)


@app.callback()
def _embedded_redis(ctx: typer.Context) -> None:
    """Conveyor: background jobs on Redis/Valkey (embedded Valkey when REDIS_URL is unset)."""
    try:
        embedded_for_command(ctx.invoked_subcommand, sys.argv[1:])
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


app.command("worker", epilog=settings_help())(worker_command(configure_logging))


def main() -> None:
    app()


from conveyor.schedules.cli import scheduler_command, schedules_app  # noqa: E402

app.add_typer(schedules_app, name="schedules")
app.command("scheduler")(scheduler_command)
