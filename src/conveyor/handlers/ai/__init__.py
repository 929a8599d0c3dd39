"""AI generation: a provider chain with fallback, a shared circuit breaker and study-app tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.handlers.ai.circuit import CircuitBreaker
from conveyor.handlers.ai.dedupe import Dedupe
from conveyor.handlers.ai.generate import GenerateRequest, GenerateResult, Generator, Usage
from conveyor.handlers.ai.providers import Provider, ProviderChain, parse_providers
from conveyor.handlers.ai.tasks import (
    FeedbackRequest,
    FeedbackResult,
    FlashcardsRequest,
    FlashcardsResult,
    OutlineRequest,
    OutlineResult,
    QuizRequest,
    QuizResult,
    feedback,
    flashcards,
    lesson_outline,
    quiz,
)
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.settings import Settings

QUEUE = "ai"

__all__ = [
    "QUEUE",
    "AiTasks",
    "CircuitBreaker",
    "GenerateRequest",
    "GenerateResult",
    "Generator",
    "Provider",
    "ProviderChain",
    "Usage",
    "parse_providers",
    "register",
]


class AiTasks:
    """The declared AI tasks of an app, and the generator they share."""

    def __init__(self, generator: Generator, tasks: dict[str, Any]) -> None:
        self.generator = generator
        self.generate = tasks["ai.generate"]
        self.flashcards = tasks["ai.flashcards"]
        self.lesson_outline = tasks["ai.lesson_outline"]
        self.quiz = tasks["ai.quiz"]
        self.feedback = tasks["ai.feedback"]


def build_generator(app: Conveyor, settings: Settings, providers: list[Provider] | None = None) -> Generator:
    chain = ProviderChain(parse_providers(settings.ai_providers) if providers is None else providers)
    breaker = CircuitBreaker(
        lambda: app.client,
        prefix=app.prefix,
        failures=settings.ai_breaker_failures,
        cooldown_s=settings.ai_breaker_cooldown_s,
    )
    dedupe = None
    if settings.ai_dedupe:
        dedupe = Dedupe(
            lambda: app.client, prefix=app.prefix, lease_s=settings.ai_dedupe_lease_s, reuse_s=settings.ai_reuse_ttl_s
        )
    return Generator(chain, breaker, max_input_chars=settings.ai_max_input_chars, dedupe=dedupe)


def register(app: Conveyor, settings: Settings, *, providers: list[Provider] | None = None) -> AiTasks:
    """Declare `ai.generate` and the study tasks on queue `ai` (3 attempts, 10 min timeout)."""
    gen = build_generator(app, settings, providers)
    opts: dict[str, Any] = {"queue": QUEUE, "attempts": 3, "timeout": 600}

    async def ai_generate(ctx: JobContext, payload: GenerateRequest) -> GenerateResult:
        return await gen.run(payload, ctx)

    async def ai_flashcards(ctx: JobContext, payload: FlashcardsRequest) -> FlashcardsResult:
        return await flashcards(gen, ctx, payload)

    async def ai_lesson_outline(ctx: JobContext, payload: OutlineRequest) -> OutlineResult:
        return await lesson_outline(gen, ctx, payload)

    async def ai_quiz(ctx: JobContext, payload: QuizRequest) -> QuizResult:
        return await quiz(gen, ctx, payload)

    async def ai_feedback(ctx: JobContext, payload: FeedbackRequest) -> FeedbackResult:
        return await feedback(gen, ctx, payload)

    fns: dict[str, Callable[..., Any]] = {
        "ai.generate": ai_generate,
        "ai.flashcards": ai_flashcards,
        "ai.lesson_outline": ai_lesson_outline,
        "ai.quiz": ai_quiz,
        "ai.feedback": ai_feedback,
    }
    return AiTasks(gen, {name: app.task(fn, name=name, **opts) for name, fn in fns.items()})
