"""Command line: `conveyor ...`. The only place logging is configured."""

from __future__ import annotations

import typer

from conveyor import __version__

app = typer.Typer(help="Conveyor: background jobs on Redis/Valkey.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:
    app()


from conveyor.schedules.cli import scheduler_command, schedules_app  # noqa: E402

app.add_typer(schedules_app, name="schedules")
app.command("scheduler")(scheduler_command)
