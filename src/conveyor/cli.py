"""Command line: `conveyor ...`. The only place logging is configured."""

from __future__ import annotations

import typer

from conveyor import __version__
from conveyor.api.command import api_command, keys_app
from conveyor.service.command import settings_help, worker_command
from conveyor.service.logging import configure_logging

app = typer.Typer(help="Conveyor: background jobs on Redis/Valkey.", no_args_is_help=True)
app.command("api")(api_command(configure_logging))
app.add_typer(keys_app, name="keys")


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


app.command("worker", epilog=settings_help())(worker_command(configure_logging))


def main() -> None:
    app()


from conveyor.schedules.cli import scheduler_command, schedules_app  # noqa: E402

app.add_typer(schedules_app, name="schedules")
app.command("scheduler")(scheduler_command)
