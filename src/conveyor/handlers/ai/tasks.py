"""Ready-made study-app tasks built on the generic generator: flashcards, lesson outlines, quizzes
(with a second validation pass against the source) and feedback on an exam answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import Retry
from conveyor.handlers.ai.generate import GenerateRequest, Generator, Usage
from conveyor.handlers.ai.providers import MAX_SELECTED
from conveyor.worker.context import JobContext

_TEXT = 200_000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: list[str] | None = Field(default=None, max_length=MAX_SELECTED)
    language: str | None = Field(default=None, max_length=50)

    def lang(self) -> str:
        return f" Write in {self.language}." if self.language else ""


# ---------------------------------------------------------------- flashcards


class FlashcardsRequest(_In):
    content: str = Field(min_length=1, max_length=_TEXT)
    count: int = Field(10, ge=1, le=100)


class Flashcard(BaseModel):
    front: str = Field(min_length=1)
    back: str = Field(min_length=1)


class FlashcardsOutput(BaseModel):
    cards: list[Flashcard] = Field(min_length=1)


class FlashcardsResult(BaseModel):
    cards: list[Flashcard]
    provider: str
    usage: Usage


async def flashcards(gen: Generator, ctx: JobContext | None, req: FlashcardsRequest) -> FlashcardsResult:
    prompt = (
        f"Make {req.count} flashcards from the material below. Each card has a short question or term "
        f"on the front and a precise answer on the back, using only facts from the material.{req.lang()}"
        f"\n\n<material>\n{req.content}\n</material>"
    )
    res = await gen.run(
        GenerateRequest(prompt=prompt, schema_name="flashcards", providers=req.providers),
        ctx,
        output=FlashcardsOutput,
    )
    seen: set[str] = set()
    cards = []
    for card in FlashcardsOutput.model_validate(res.data).cards:
        key = card.front.strip().lower()
        if key not in seen:
            seen.add(key)
            cards.append(card)
    return FlashcardsResult(cards=cards[: req.count], provider=res.provider, usage=res.usage)


# ---------------------------------------------------------------- lesson outline


class OutlineRequest(_In):
    topic: str = Field(min_length=1, max_length=500)
    content: str | None = Field(default=None, max_length=_TEXT)
    level: Literal["beginner", "intermediate", "advanced"] = "beginner"
    duration_minutes: int = Field(45, ge=5, le=600)


class OutlineSection(BaseModel):
    heading: str = Field(min_length=1)
    objectives: list[str] = Field(default_factory=list)
    key_points: list[str] = Field(default_factory=list)
    minutes: int = Field(ge=0)


class OutlineOutput(BaseModel):
    title: str = Field(min_length=1)
    sections: list[OutlineSection] = Field(min_length=1)


class OutlineResult(OutlineOutput):
    provider: str
    usage: Usage


async def lesson_outline(gen: Generator, ctx: JobContext | None, req: OutlineRequest) -> OutlineResult:
    source = f"\n\nBase it on this material:\n<material>\n{req.content}\n</material>" if req.content else ""
    prompt = (
        f"Plan a {req.duration_minutes}-minute lesson on {req.topic!r} for {req.level} learners: a title and "
        f"sections with objectives, key points and minutes that add up to the lesson length."
        f"{req.lang()}{source}"
    )

    def check(out: Any) -> str | None:
        total = sum(s.minutes for s in out.sections)
        return None if total <= req.duration_minutes * 1.25 else f"sections take {total} min"

    res = await gen.run(
        GenerateRequest(prompt=prompt, schema_name="lesson_outline", providers=req.providers),
        ctx,
        output=OutlineOutput,
        check=check,
    )
    return OutlineResult(**res.data, provider=res.provider, usage=res.usage)


# ---------------------------------------------------------------- quiz


class QuizRequest(_In):
    document: str = Field(min_length=1, max_length=_TEXT)
    count: int = Field(5, ge=1, le=50)
    difficulty: Literal["easy", "medium", "hard"] = "medium"


class QuizQuestion(BaseModel):
    question: str = Field(min_length=1)
    options: list[str] = Field(min_length=2, max_length=6)
    answer_index: int = Field(ge=0)
    explanation: str = ""


class QuizOutput(BaseModel):
    questions: list[QuizQuestion] = Field(min_length=1)


class Verdict(BaseModel):
    index: int
    supported: bool
    reason: str = ""


class QuizReview(BaseModel):
    verdicts: list[Verdict]


class Rejected(BaseModel):
    question: str
    reason: str


class QuizResult(BaseModel):
    questions: list[QuizQuestion]
    rejected: list[Rejected]
    provider: str
    usage: Usage


def _structural_problem(q: QuizQuestion) -> str | None:
    if q.answer_index >= len(q.options):
        return "answer_index points past the options"
    if len({o.strip().lower() for o in q.options}) != len(q.options):
        return "options repeat"
    return None


async def quiz(gen: Generator, ctx: JobContext | None, req: QuizRequest) -> QuizResult:
    """Generate, drop malformed questions, then ask a reviewer pass which answers the document supports."""
    prompt = (
        f"Write {req.count} {req.difficulty} multiple-choice questions about the document below. Each has "
        f"options, the index of the one correct option and a short explanation citing the document."
        f"{req.lang()}"
        f"\n\n<document>\n{req.document}\n</document>"
    )
    first = await gen.run(
        GenerateRequest(prompt=prompt, schema_name="quiz", providers=req.providers), ctx, output=QuizOutput
    )
    rejected: list[Rejected] = []
    candidates: list[QuizQuestion] = []
    for q in QuizOutput.model_validate(first.data).questions:
        problem = _structural_problem(q)
        if problem or any(q.question.strip().lower() == c.question.strip().lower() for c in candidates):
            rejected.append(Rejected(question=q.question, reason=problem or "duplicate question"))
        else:
            candidates.append(q)
    if ctx is not None:
        await ctx.progress({"stage": "validating", "questions": len(candidates)})
    listing = "\n".join(f"{i}. {q.question} -> {q.options[q.answer_index]}" for i, q in enumerate(candidates))
    review = await gen.run(
        GenerateRequest(
            system="You check quiz questions strictly against a source document.",
            prompt=(
                "For each numbered question, say whether the document supports the given answer as the only "
                f"correct one.\n\n<document>\n{req.document}\n</document>"
                f"\n\n<questions>\n{listing}\n</questions>"
            ),
            schema_name="quiz_review",
            providers=req.providers,
        ),
        ctx,
        output=QuizReview,
    )
    verdicts = {v.index: v for v in QuizReview.model_validate(review.data).verdicts}
    kept: list[QuizQuestion] = []
    for i, q in enumerate(candidates):
        verdict = verdicts.get(i)
        if verdict is not None and verdict.supported:
            kept.append(q)
        else:
            rejected.append(Rejected(question=q.question, reason=verdict.reason if verdict else "not reviewed"))
    if not kept:
        raise Retry(reason=f"no generated question passed validation ({len(rejected)} rejected)")
    usage = Usage()
    usage.add(first.usage)
    usage.add(review.usage)
    return QuizResult(questions=kept[: req.count], rejected=rejected, provider=first.provider, usage=usage)


# ---------------------------------------------------------------- feedback


class FeedbackRequest(_In):
    question: str = Field(min_length=1, max_length=20_000)
    answer: str = Field(max_length=_TEXT)
    rubric: str | None = Field(default=None, max_length=20_000)
    reference_answer: str | None = Field(default=None, max_length=_TEXT)
    max_score: int = Field(10, ge=1, le=1000)
    student_name: str | None = Field(default=None, max_length=100)


class FeedbackOutput(BaseModel):
    score: float
    strengths: list[str] = Field(default_factory=list)
    improvements: list[str] = Field(default_factory=list)
    feedback: str = Field(min_length=1)


class FeedbackResult(FeedbackOutput):
    max_score: int
    provider: str
    usage: Usage


async def feedback(gen: Generator, ctx: JobContext | None, req: FeedbackRequest) -> FeedbackResult:
    parts = [f"Question:\n{req.question}", f"Student answer:\n{req.answer}"]
    if req.rubric:
        parts.append(f"Rubric:\n{req.rubric}")
    if req.reference_answer:
        parts.append(f"Reference answer:\n{req.reference_answer}")
    who = f" to {req.student_name}" if req.student_name else ""
    prompt = (
        f"Grade the exam answer out of {req.max_score} and write encouraging, specific feedback{who}: "
        f"strengths, what to improve and a short paragraph.{req.lang()}\n\n" + "\n\n".join(parts)
    )

    def check(out: Any) -> str | None:
        return None if 0 <= out.score <= req.max_score else f"score {out.score} is outside 0..{req.max_score}"

    res = await gen.run(
        GenerateRequest(prompt=prompt, schema_name="exam_feedback", providers=req.providers),
        ctx,
        output=FeedbackOutput,
        check=check,
    )
    return FeedbackResult(**res.data, max_score=req.max_score, provider=res.provider, usage=res.usage)
