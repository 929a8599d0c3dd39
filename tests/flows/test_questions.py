"""The example app's `questions` pipeline and `flows.collect`, run offline (no AI provider)."""

from __future__ import annotations

import uuid
from typing import Any

from conveyor.examples import app
from conveyor.flows import FlowNode
from conveyor.handlers.questions import LessonRequest, retrieve
from tests.conftest import running

LESSON = ("Cells are the basic unit of life. Every cell has a membrane that controls what enters. "
          "Atoms bond to form molecules. Molecules such as proteins build cells. Energy drives every cell.")


async def _run_lesson(redis_url: str) -> dict[str, Any]:
    async with app.bound(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}"):
        lesson = app.get_task("questions", "lesson")
        assert lesson is not None
        try:
            async with running(app.worker("questions")):
                job = await lesson.enqueue({"text": LESSON, "per_topic": 2})
                result = (await job.result(timeout=90)).model_dump()
                record = await job.record()
                assert record.children and record.children[0][0] == "questions"
                validate = await app.queue("questions").get_job(record.children[0][1])
                assert validate is not None and len(validate.children) == len(result["topics"])
                return result
        finally:
            await app.queue("questions").obliterate(force=True)


async def test_questions_pipeline_runs_offline_and_deterministically(redis_url: str) -> None:
    first = await _run_lesson(redis_url)
    assert first["generator"] == "offline" and first["rejected"] == 0
    assert first["topics"] == list(retrieve(LessonRequest(text=LESSON)))
    assert len(first["questions"]) >= len(first["topics"])
    for q in first["questions"]:
        assert q["options"][q["answer_index"]] in LESSON
    assert await _run_lesson(redis_url) == first


async def test_flows_collect_returns_children_results_in_order(redis_url: str) -> None:
    async with app.bound(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}"):
        try:
            root = FlowNode("default", "flows.collect", None,
                            children=[FlowNode("default", "echo", {"n": i}) for i in range(5)])
            job = await app.flow(root)
            async with running(app.worker("default")):
                assert await job.result(timeout=60) == {"children": [{"n": i} for i in range(5)]}
        finally:
            await app.queue("default").obliterate(force=True)
