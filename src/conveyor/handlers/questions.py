"""The `questions` pipeline of the example app: quiz questions for a lesson, as a flow.

    lesson (queue questions, the root)      step "retrieve": topics and their source passages
      └─ validate (fan-in)                  checks every question against its sources
           └─ generate x topic (parallel)   one generation per topic
    lesson again, once validate has ended   step "store": the kept questions, returned as the result

Generation goes through the configured AI provider chain (CONVEYOR_AI_PROVIDERS) when there is one;
without one, a small local generator writes deterministic questions from the passages, so the
pipeline runs offline and gives the same result every time. `flows.collect` (queue `default`) is
the smallest flow: it returns its children's results in the order they were given.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from conveyor.flows import FlowNode
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.handlers.ai.generate import Generator

QUEUE = "questions"
_TEXT = 100_000
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{4,}")
_STOP = frozenset({"about", "after", "their", "there", "these", "those", "which", "while", "where", "other",
                   "would", "could", "should", "being", "every", "under", "between", "through"})


class LessonRequest(BaseModel):
    text: str = Field(min_length=1, max_length=_TEXT, description="the lesson's text")
    topics: list[str] | None = Field(None, max_length=10, description="topics to ask about (default: found)")
    per_topic: int = Field(2, ge=1, le=5)


class TopicRequest(BaseModel):
    topic: str = Field(min_length=1, max_length=200)
    passages: list[str] = Field(min_length=1, max_length=10)
    count: int = Field(2, ge=1, le=5)


class Question(BaseModel):
    topic: str
    question: str
    options: list[str] = Field(min_length=2, max_length=6)
    answer_index: int = Field(ge=0)
    source: str = ""


class Generated(BaseModel):
    topic: str
    passages: list[str]
    questions: list[Question]
    generator: str


class Validated(BaseModel):
    questions: list[Question]
    rejected: list[dict[str, str]]


class LessonResult(BaseModel):
    topics: list[str]
    questions: list[Question]
    rejected: int
    generator: str


def retrieve(req: LessonRequest) -> dict[str, list[str]]:
    """Topics (given, or the lesson's most frequent longer words) and up to 3 sentences on each."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", req.text) if s.strip()]
    topics = req.topics
    if not topics:
        words = Counter(w.lower() for w in _WORD.findall(req.text) if w.lower() not in _STOP)
        topics = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
    found: dict[str, list[str]] = {}
    for topic in topics:
        passages = [s for s in sentences if topic.lower() in s.lower()][:3]
        if passages:
            found[topic] = passages
    return found


def offline_questions(req: TopicRequest) -> list[Question]:
    """Deterministic questions from the passages alone: the true statement among made-up ones."""
    out = []
    for i, passage in enumerate(req.passages[: req.count]):
        wrong = [f"The lesson does not mention {req.topic}.", f"The lesson says {req.topic} is not important."]
        at = (sum(map(ord, req.topic)) + i) % 3
        options = [*wrong[:at], passage, *wrong[at:]]
        out.append(Question(topic=req.topic, question=f"Which statement about {req.topic} does the lesson make?",
                            options=options, answer_index=at, source=passage))
    return out


def supported(q: Question, passages: list[str]) -> str | None:
    """Why a question is rejected, or None: a well-formed question whose answer the sources support."""
    if q.answer_index >= len(q.options):
        return "answer_index points past the options"
    if len({o.strip().lower() for o in q.options}) != len(q.options):
        return "options repeat"
    answer = q.options[q.answer_index].lower()
    words = set(_WORD.findall(answer.lower()))
    source = " ".join(passages).lower()
    if answer.strip(" .") not in source and not (words and sum(w in source for w in words) * 2 >= len(words)):
        return "the sources do not support the answer"
    return None


def install_questions(app: Conveyor, generator: Generator | None) -> None:
    """Declare `lesson`, `generate` and `validate` on queue `questions`, and `flows.collect` on `default`."""

    async def generate(ctx: JobContext, req: TopicRequest) -> Generated:
        if generator is None or not generator.chain:
            return Generated(topic=req.topic, passages=req.passages, questions=offline_questions(req),
                             generator="offline")
        from conveyor.handlers.ai.generate import GenerateRequest
        from conveyor.handlers.ai.tasks import QuizOutput

        sources = "\n".join(f"- {p}" for p in req.passages)
        made = await generator.run(GenerateRequest(
            prompt=(f"Write {req.count} multiple-choice questions about '{req.topic}' answerable from these "
                    f"sources only; the correct option should quote them.\n{sources}"),
            schema_name="quiz"), ctx, output=QuizOutput)
        questions = [Question(topic=req.topic, question=q.question, options=q.options,
                              answer_index=q.answer_index, source=q.explanation)
                     for q in QuizOutput.model_validate(made.data).questions]
        return Generated(topic=req.topic, passages=req.passages, questions=questions, generator=made.provider)

    async def validate(ctx: JobContext) -> Validated:
        kept: list[Question] = []
        rejected: list[dict[str, str]] = []
        for item in (await ctx.children()).ordered():
            if not isinstance(item, dict) or "questions" not in item:
                rejected.append({"question": "", "reason": f"generation failed: {item}"[:300]})
                continue
            made = Generated.model_validate(item)
            for q in made.questions:
                reason = supported(q, made.passages)
                if reason:
                    rejected.append({"question": q.question, "reason": reason})
                else:
                    kept.append(q)
        return Validated(questions=kept, rejected=rejected)

    async def lesson(ctx: JobContext, req: LessonRequest) -> LessonResult:
        found: dict[str, list[str]] = await ctx.step("retrieve", retrieve, req)
        children = await ctx.children()
        if not children.all_ended:  # a run killed between adopting and writing the child adds it again
            kids = [FlowNode(QUEUE, "generate", TopicRequest(topic=t, passages=p, count=req.per_topic).model_dump())
                    for t, p in found.items()]
            await ctx.add_children([FlowNode(QUEUE, "validate", None, children=kids, on_child_failure="ignore")])
            ctx.wait_for_children()
        validated = Validated.model_validate(children.only())

        def store() -> dict[str, Any]:
            using = "offline" if generator is None or not generator.chain else "providers"
            return LessonResult(topics=list(found), questions=validated.questions,
                                rejected=len(validated.rejected), generator=using).model_dump()

        return LessonResult.model_validate(await ctx.step("store", store))

    async def collect(ctx: JobContext) -> dict[str, Any]:
        """The results of this job's flow children, in the order the children were given."""
        return {"children": (await ctx.children()).ordered()}

    app.task(lesson, queue=QUEUE, name="lesson", attempts=3)
    app.task(generate, queue=QUEUE, name="generate", attempts=3)
    app.task(validate, queue=QUEUE, name="validate")
    app.task(collect, queue="default", name="flows.collect")
