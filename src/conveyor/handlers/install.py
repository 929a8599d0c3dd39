"""`install(app, ...)`: declare the built-in tasks on an app in one line, configured from settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.handlers.ssrf import AllowList, Resolver, SsrfGuard, system_resolver
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.handlers.ai import AiTasks, Provider
    from conveyor.handlers.documents import DocumentTasks
    from conveyor.handlers.email import EmailTasks
    from conveyor.handlers.endpoints import WebhookEndpoint
    from conveyor.handlers.webhooks import WebhookTasks


@dataclass(slots=True)
class Handlers:
    """What `install` declared: each field holds the tasks of one handler (None when not enabled)."""

    settings: Settings
    guard: SsrfGuard
    ai: AiTasks | None = None
    webhooks: WebhookTasks | None = None
    email: EmailTasks | None = None
    documents: DocumentTasks | None = None


def install(
    app: Conveyor,
    *,
    ai: bool = False,
    webhooks: bool = False,
    email: bool = False,
    documents: bool = False,
    settings: Settings | None = None,
    resolver: Resolver | None = None,
    ai_providers: list[Provider] | None = None,
    webhook_endpoints: Iterable[WebhookEndpoint] = (),
) -> Handlers:
    """Declare the chosen handlers on queues `ai`, `webhooks`, `email` and `documents`.

    `settings` defaults to `Settings.from_env()`; `resolver` replaces the SSRF guard's DNS lookup and
    `ai_providers` the provider chain from CONVEYOR_AI_PROVIDERS (both mainly for tests and embedding);
    `webhook_endpoints` adds endpoints (`WebhookEndpoint.of(name, url, secret)`) to those of
    CONVEYOR_WEBHOOK_ENDPOINTS.
    """
    settings = settings or Settings.from_env()
    guard = SsrfGuard(AllowList.parse(settings.webhook_allow_hosts), resolver or system_resolver)
    handlers = Handlers(settings, guard)
    if ai:
        from conveyor.handlers import ai as ai_module

        handlers.ai = ai_module.register(app, settings, providers=ai_providers)
    if webhooks:
        from conveyor.handlers import webhooks as webhooks_module

        handlers.webhooks = webhooks_module.register(app, settings, guard, webhook_endpoints)
    if email:
        from conveyor.handlers import email as email_module

        handlers.email = email_module.register(app, settings)
    if documents:
        from conveyor.handlers import documents as documents_module

        handlers.documents = documents_module.register(app, settings, guard)
    return handlers
