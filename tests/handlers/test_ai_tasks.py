"""The ready-made study tasks against the OpenAI-compatible test server."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Retry
from conveyor.handlers import install
from conveyor.handlers.ai import build_generator
from conveyor.handlers.ai.tasks import (
    FeedbackRequest,
    OutlineRequest,
    QuizRequest,
    feedback,
    lesson_outline,
    quiz,
)
from conveyor.settings import Settings
from tests.conftest import running
from tests.handlers.conftest import provider
from tests.handlers.servers import ChatServer

DOCUMENT = "Photosynthesis turns light, water and carbon dioxide into glucose and oxygen in chloroplasts."


async def test_flashcards_through_a_worker_are_deduplicated(app: Conveyor, chat: ChatServer) -> None:
    chat.replies["flashcards"] = {
        "cards": [
            {"front": "Where does photosynthesis happen?", "back": "In chloroplasts"},
            {"front": "where does photosynthesis happen?", "back": "duplicate"},
            {"front": "What does it produce?", "back": "Glucose and oxygen"},
        ]
    }
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok")])
    assert handlers.ai is not None
    job = await handlers.ai.flashcards.enqueue({"content": DOCUMENT, "count": 5, "language": "English"})
    async with running(app.worker("ai", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert [c.back for c in result.cards] == ["In chloroplasts", "Glucose and oxygen"]
    assert result.usage.total_tokens == 16
    prompt = chat.calls[0][1]["messages"][-1]["content"]
    assert DOCUMENT in prompt and "5 flashcards" in prompt and "English" in prompt


async def test_lesson_outline_checks_the_timing(app: Conveyor, chat: ChatServer) -> None:
    gen = build_generator(app, Settings(), [provider(chat, "ok")])
    chat.replies["lesson_outline"] = {
        "title": "Photosynthesis",
        "sections": [
            {"heading": "Intro", "objectives": ["name the inputs"], "key_points": ["light"], "minutes": 15},
            {"heading": "Practice", "objectives": [], "key_points": [], "minutes": 30},
        ],
    }
    outline = await lesson_outline(gen, None, OutlineRequest(topic="photosynthesis", duration_minutes=45))
    assert outline.title == "Photosynthesis" and len(outline.sections) == 2
    chat.replies["lesson_outline"]["sections"][1]["minutes"] = 300
    with pytest.raises(Retry, match="sections take 315 min"):
        await lesson_outline(gen, None, OutlineRequest(topic="photosynthesis", duration_minutes=45))


async def test_quiz_drops_malformed_and_unsupported_questions(app: Conveyor, chat: ChatServer) -> None:
    gen = build_generator(app, Settings(), [provider(chat, "ok")])
    chat.replies["quiz"] = {
        "questions": [
            {
                "question": "What does photosynthesis produce?",
                "options": ["Glucose and oxygen", "Salt"],
                "answer_index": 0,
                "explanation": "stated",
            },
            {"question": "Broken?", "options": ["a", "b"], "answer_index": 5},
            {
                "question": "Where is the nucleus?",
                "options": ["Chloroplast", "Cell centre"],
                "answer_index": 0,
            },
        ]
    }
    chat.replies["quiz_review"] = {
        "verdicts": [
            {"index": 0, "supported": True},
            {"index": 1, "supported": False, "reason": "not in the document"},
        ]
    }
    result = await quiz(gen, None, QuizRequest(document=DOCUMENT, count=3))
    assert [q.question for q in result.questions] == ["What does photosynthesis produce?"]
    assert sorted(r.reason for r in result.rejected) == [
        "answer_index points past the options",
        "not in the document",
    ]
    assert result.usage.total_tokens == 32
    review_prompt = chat.calls[1][1]["messages"][-1]["content"]
    assert DOCUMENT in review_prompt and "0. What does photosynthesis produce? -> Glucose and oxygen" in review_prompt

    chat.replies["quiz_review"] = {"verdicts": [{"index": 0, "supported": False}]}
    with pytest.raises(Retry, match="no generated question passed validation"):
        await quiz(gen, None, QuizRequest(document=DOCUMENT, count=3))


async def test_feedback_rejects_a_score_out_of_range(app: Conveyor, chat: ChatServer) -> None:
    gen = build_generator(app, Settings(), [provider(chat, "ok")])
    request = FeedbackRequest(
        question="Explain photosynthesis.",
        answer="Plants eat light.",
        max_score=10,
        rubric="inputs, outputs, place",
        student_name="Sam",
    )
    chat.replies["exam_feedback"] = {
        "score": 4,
        "strengths": ["mentions light"],
        "improvements": ["outputs"],
        "feedback": "Good start, Sam.",
    }
    result = await feedback(gen, None, request)
    assert result.score == 4 and result.max_score == 10 and result.feedback == "Good start, Sam."
    assert "Sam" in chat.calls[0][1]["messages"][-1]["content"]
    chat.replies["exam_feedback"]["score"] = 12
    with pytest.raises(Retry, match=r"outside 0\.\.10"):
        await feedback(gen, None, request)
