"""The Django example of docs/integrations.md, as a runnable site: a view enqueues with
`enqueue_sync` once the request's transaction commits, and answers 202 with the job id."""

from __future__ import annotations

import os

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST
from pydantic import BaseModel

from conveyor import Conveyor, InvalidOptionError, JobContext, PayloadValidationError

# myproject/jobs.py: the app the worker runs (`conveyor worker myproject.jobs:app`) and views import.
app = Conveyor(os.environ.get("REDIS_URL"))


class Welcome(BaseModel):
    email: str


@app.task(queue="emails", attempts=5, backoff=30)
async def send_welcome(ctx: JobContext, welcome: Welcome) -> str:
    return f"welcome sent to {welcome.email}"


# myproject/views.py
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email")
    try:
        job = send_welcome.enqueue_sync({"email": email}, idempotency_key=f"welcome-{email}")
    except (PayloadValidationError, InvalidOptionError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"job": job.id, "created": job.created}, status=202)


@require_POST
def signup_after_commit(request: HttpRequest) -> JsonResponse:
    """Enqueue only if the request's database work commits (transaction.on_commit)."""
    email = request.POST.get("email", "")
    transaction.on_commit(lambda: send_welcome.enqueue_sync({"email": email}))
    return JsonResponse({"queued": True}, status=202)


urlpatterns = [path("signup", signup), path("signup-after-commit", signup_after_commit)]
