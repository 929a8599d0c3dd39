"""Built-in task handlers: AI generation, signed webhooks, email and document text.

Enable them in one line: `handlers = conveyor.handlers.install(app, ai=True, webhooks=True,
email=True, documents=True)`; configuration comes from settings (see docs/handlers.md).
"""

from conveyor.handlers.install import Handlers, install

__all__ = ["Handlers", "install"]
