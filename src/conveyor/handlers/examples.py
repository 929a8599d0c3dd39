"""Examples of each built-in handler, and one pipeline that chains them.

`install_examples(app)` enables every handler and declares `examples.study_pack`: fetch a document,
write a validated quiz from it, then email the quiz to a student and tell the customer's system by
webhook (a registered endpoint, signed). Each step is a real task, so it can also be enqueued on its own:

    handlers = install_examples(app)
    await handlers.ai.flashcards.enqueue({"content": notes, "count": 10})
    await handlers.webhooks.send({"event": "done"}, endpoint="acme", event="quiz.ready")
    await handlers.email.task.enqueue({"to": ["ana@example.com"], "subject": "Hi", "text": "Hello"})
    await handlers.documents.task.enqueue({"url": "https://example.com/notes.pdf"})
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from conveyor.handlers.ai.tasks import QuizRequest, quiz
from conveyor.handlers.documents import DocumentRequest
from conveyor.handlers.endpoints import ENDPOINT_NAME_PATTERN
from conveyor.handlers.install import Handlers, install
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from collections.abc import Iterable

    from conveyor.app import Conveyor
    from conveyor.handlers.endpoints import WebhookEndpoint
    from conveyor.settings import Settings

QUEUE = "examples"


class StudyPackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_url: str = Field(max_length=2048)
    student_email: str = Field(max_length=320)
    notify_endpoint: str | None = Field(
        default=None, pattern=ENDPOINT_NAME_PATTERN, description="registered webhook endpoint to tell"
    )
    questions: int = Field(default=5, ge=1, le=20)


class StudyPackResult(BaseModel):
    questions: int
    rejected: int
    email_job: str
    webhook_job: str | None
    tokens: int


def install_examples(
    app: Conveyor, settings: Settings | None = None, webhook_endpoints: Iterable[WebhookEndpoint] = ()
) -> Handlers:
    """Every handler plus the `examples.study_pack` pipeline task on queue `examples`."""
    handlers = install(
        app, ai=True, webhooks=True, email=True, documents=True, settings=settings,
        webhook_endpoints=webhook_endpoints,
    )
    ai, docs, mail, hooks = handlers.ai, handlers.documents, handlers.email, handlers.webhooks
    assert ai is not None and docs is not None and mail is not None and hooks is not None

    async def study_pack(ctx: JobContext, payload: StudyPackRequest) -> StudyPackResult:
        document = await docs.reader.read(DocumentRequest(url=payload.document_url), ctx)
        made = await quiz(ai.generator, ctx, QuizRequest(document=document.text, count=payload.questions))
        lines = [
            f"{n}. {q.question}\n" + "\n".join(f"   {chr(65 + i)}) {o}" for i, o in enumerate(q.options))
            for n, q in enumerate(made.questions, 1)
        ]
        email_job = await mail.task.enqueue(
            {"to": [payload.student_email], "subject": "Your practice quiz", "text": "\n\n".join(lines)},
            idempotency_key=f"study-pack-mail:{ctx.job_id}",
        )
        webhook_job = None
        if payload.notify_endpoint:
            webhook_job = await hooks.send(
                {"job": ctx.job_id, "questions": len(made.questions)},
                endpoint=payload.notify_endpoint,
                event="quiz.ready",
                idempotency_key=f"study-pack-hook:{ctx.job_id}",
            )
        return StudyPackResult(
            questions=len(made.questions),
            rejected=len(made.rejected),
            email_job=email_job.id,
            webhook_job=webhook_job.id if webhook_job else None,
            tokens=made.usage.total_tokens,
        )

    app.task(study_pack, queue=QUEUE, name="examples.study_pack", attempts=3, timeout=900)
    return handlers
