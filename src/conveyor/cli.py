"""Command line: `conveyor ...`. The only place logging is configured."""

from __future__ import annotations

import typer

from conveyor import __version__
from conveyor.up import up_command

app = typer.Typer(help="Conveyor: background jobs on Redis/Valkey.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


app.command("up")(up_command)


def main() -> None:
    app()
