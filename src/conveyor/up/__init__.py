"""`conveyor up`: embedded Valkey, worker service and HTTP API under one command."""

from conveyor.up.command import DEFAULT_APP, run_up, up_command

__all__ = ["DEFAULT_APP", "run_up", "up_command"]
