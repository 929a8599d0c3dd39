"""The HTTP API: `create_app(conveyor_app, settings)` returns the ASGI app `conveyor api` serves."""

from conveyor.api.app import create_app, mount_dashboard

__all__ = ["create_app", "mount_dashboard"]
