"""Command line: `conveyor ...`. The only place logging is configured."""

from __future__ import annotations

import typer

from conveyor import __version__
from conveyor.up import up_command
from conveyor.service.command import settings_help, worker_command
from conveyor.service.logging import configure_logging
from conveyor.api.command import api_command, keys_app

app = typer.Typer(help="Conveyor: background jobs on Redis/Valkey.", no_args_is_help=True)
app.command("api")(api_command)
app.add_typer(keys_app, name="keys")


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


app.command("up")(up_command)
app.command("worker", epilog=settings_help())(worker_command(configure_logging))


def main() -> None:
    app()
