"""The example pipeline end to end: document over HTTP -> quiz from the chat server -> email over
SMTP and a signed webhook, each step a job run by a real worker."""

from __future__ import annotations

import json

from conveyor import Conveyor
from conveyor.handlers.endpoints import WebhookEndpoint
from conveyor.handlers.examples import install_examples
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.conftest import SECRET
from tests.handlers.servers import ChatServer, Receiver, SmtpServer
from tests.handlers.test_documents import make_pdf


async def test_study_pack_pipeline(app: Conveyor, chat: ChatServer, receiver: Receiver, smtp: SmtpServer) -> None:
    receiver.files["/lesson.pdf"] = (make_pdf("Mitochondria produce ATP for the cell."), "application/pdf")
    chat.replies["quiz"] = {
        "questions": [
            {"question": "What do mitochondria produce?", "options": ["ATP", "DNA"], "answer_index": 0},
        ]
    }
    chat.replies["quiz_review"] = {"verdicts": [{"index": 0, "supported": True}]}
    settings = Settings(
        ai_providers=json.dumps(
            [{"name": "local", "base_url": chat.base_url("ok"), "model": "m", "api_key": "test-key"}]
        ),
        webhook_allow_hosts="127.0.0.1",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_username=SmtpServer.USER,
        smtp_password=SmtpServer.PASSWORD,
        smtp_ca_file=str(smtp.cert),
        email_from="quiz@study.test",
    )
    install_examples(app, settings, [WebhookEndpoint.of("school", f"{receiver.url}/hooks/quiz", SECRET)])
    study_pack = app.get_task("examples", "examples.study_pack")
    assert study_pack is not None
    job = await study_pack.enqueue(
        {
            "document_url": f"{receiver.url}/lesson.pdf",
            "student_email": "ana@example.com",
            "notify_endpoint": "school",
            "questions": 1,
        }
    )
    async with (
        running(app.worker("examples", lease_ms=5000)),
        running(app.worker("email", lease_ms=5000)),
        running(app.worker("webhooks", lease_ms=5000)),
    ):
        result = await job.result(timeout=30)
        await wait_for(
            lambda: len(smtp.inbox.messages) == 1 and len(receiver.received) == 1,
            timeout=20,
            what="email and webhook delivered",
        )
    assert result.questions == 1 and result.rejected == 0 and result.tokens == 32
    assert "Mitochondria produce ATP" in chat.calls[0][1]["messages"][-1]["content"]
    assert b"What do mitochondria produce?" in smtp.inbox.messages[0].content
    [hook] = receiver.received
    assert hook.verified and json.loads(hook.body) == {"job": job.id, "questions": 1}
