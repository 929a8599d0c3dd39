"""The generic `ai.generate` task: one chat completion, tried across the provider chain.

Timeouts, connection errors and 5xx count against the provider's circuit breaker and move on to the
next provider; a 429, or a 503 with Retry-After, holds the provider for its Retry-After (bounded, no
breaker failure) and moves on; output that fails the requested schema moves on too. Answers are
streamed into the job's output as they arrive (streaming.py); a provider that fails after streaming
leaves its partial answer there, followed by a marker line naming the next provider. When every
provider was only rate-limited or circuit-open the job waits (`RateLimited`, no attempt used);
otherwise it is retried with the job's backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

import jsonschema_rs
import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    RateLimited,
    Retry,
    Unrecoverable,
    UsageReportError,
)
from conveyor.handlers.ai.circuit import CircuitBreaker
from conveyor.handlers.ai.dedupe import Dedupe, fingerprint
from conveyor.handlers.ai.providers import MAX_SELECTED, Provider, ProviderChain
from conveyor.handlers.ai.streaming import STREAMED, BrokenAnswer, Completion, Received, complete
from conveyor.handlers.http import slow_down_wait
from conveyor.limits.named import MAX_TOKENS_PER_JOB
from conveyor.options import COST_MAX
from conveyor.worker.context import JobContext

logger = logging.getLogger(__name__)

Check = Callable[[Any], str | None]
_FATAL_STATUS = frozenset({400, 413, 422})
# A call that ended so was sent and not answered (yet): the provider bills its prompt all the same.
_UNANSWERED = (asyncio.CancelledError, TimeoutError, openai.APITimeoutError)
# Structured output nested deeper is invalid: results are stored as JSON by a codec that stops at 254
# levels (the result's own fields wrap the output in a few), and nothing real nests 64 deep.
MAX_OUTPUT_DEPTH = 64


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(BaseModel):
    """A prompt (with an optional system message) or a full message list; optional JSON schema."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    system: str | None = None
    messages: list[ChatMessage] = Field(default_factory=list, max_length=200)
    json_schema: dict[str, Any] | None = None
    schema_name: str = Field(default="output", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    strict: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    providers: list[str] | None = Field(default=None, max_length=MAX_SELECTED)
    dedupe: bool = Field(
        default=True, description="Share the provider call with identical requests in flight (dedupe.py)."
    )

    @model_validator(mode="after")
    def _needs_input(self) -> GenerateRequest:
        if not self.prompt and not self.messages:
            raise ValueError("give a prompt or messages")
        return self

    def chat(self) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        out += [m.model_dump() for m in self.messages]
        if self.prompt:
            out.append({"role": "user", "content": self.prompt})
        return out


# Characters a token stands for in the estimate of a failed stream's usage (the usual rule of thumb
# for English text with OpenAI's tokenisers).
CHARS_PER_TOKEN = 4


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Some of the counts are an estimate (a stream that failed part-way reports no usage).
    estimated: bool = False

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.estimated = self.estimated or other.estimated


def estimated_usage(prompt_chars: int, answer_chars: int) -> Usage:
    """The tokens a provider probably billed for a prompt and a partial answer of these sizes, one
    per CHARS_PER_TOKEN characters (rounded up), capped so a run's sum stays recordable."""
    prompt = min(MAX_TOKENS_PER_JOB // 2, -(-prompt_chars // CHARS_PER_TOKEN))
    completion = min(MAX_TOKENS_PER_JOB // 2, -(-answer_chars // CHARS_PER_TOKEN))
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, estimated=True)


def reported_usage(raw: Any) -> Usage | None:
    """The usage a provider reported, or None when it reported none or one that cannot be true: a
    count that is not a whole number in [0, MAX_TOKENS_PER_JOB] (negative, absurdly large, text)
    would refund or exhaust budgets and make the run's outcome unrecordable. A count left out (or
    null) is 0, and a total left out is the sum: providers that send fewer fields are still charged
    for the tokens they report."""
    if raw is None:
        return None
    counts: list[int | None] = []
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        v = getattr(raw, name, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS_PER_JOB):
            logger.warning("AI provider reported impossible usage %.200r; ignored", raw)
            return None
        counts.append(v)
    if all(v is None for v in counts):  # no count at all (not a usage object): not reported
        return None
    prompt, completion, total = counts[0] or 0, counts[1] or 0, counts[2]
    if total is None:
        total = prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


class ProviderAttempt(BaseModel):
    provider: str
    outcome: Literal["ok", "timeout", "error", "rate_limited", "circuit_open", "invalid_output", "rejected"]
    detail: str = ""
    wait_s: float | None = None


class GenerateResult(BaseModel):
    text: str
    data: Any = None
    provider: str
    model: str
    finish_reason: str | None = None
    usage: Usage
    attempts: list[ProviderAttempt]
    deduplicated: bool = False  # answered by an identical request's call (usage then 0: no call made)


class _Skip(Exception):
    def __init__(self, attempt: ProviderAttempt) -> None:
        super().__init__(attempt.detail)
        self.attempt = attempt


class Generator:
    """Runs requests across a provider chain with a shared circuit breaker."""

    def __init__(
        self, chain: ProviderChain, breaker: CircuitBreaker, *, max_input_chars: int = 200_000,
        dedupe: Dedupe | None = None,
    ) -> None:
        self.chain = chain
        self.breaker = breaker
        self.max_input_chars = max_input_chars
        self.dedupe = dedupe

    async def run(
        self,
        request: GenerateRequest,
        ctx: JobContext | None = None,
        *,
        output: type[BaseModel] | None = None,
        check: Check | None = None,
    ) -> GenerateResult:
        """One completion; `output` (a pydantic model) or `request.json_schema` validates JSON output,
        and `check` may reject parsed output with a reason (so the next provider is tried)."""
        if not self.chain:
            raise Unrecoverable(
                "no AI provider is configured: set CONVEYOR_AI_PROVIDERS to a JSON list of "
                "{name, base_url, model, api_key_env}"
            )
        try:
            providers = self.chain.select(request.providers)
        except ConfigurationError as exc:
            raise Unrecoverable(str(exc)) from None
        messages = request.chat()
        size = sum(len(m["content"]) for m in messages)
        if size > self.max_input_chars:
            raise Unrecoverable(f"prompt is {size} characters, over the limit of {self.max_input_chars}")
        schema = output.model_json_schema() if output is not None else request.json_schema
        if schema is not None and output is None:
            try:
                schema_validator(schema)
            except jsonschema_rs.ValidationError as exc:
                raise Unrecoverable(f"json_schema is not a valid JSON Schema: {exc.message}"[:500]) from None
        if self.dedupe is None or not request.dedupe:
            return await self._chain(providers, request, messages, schema, output, check, ctx)
        fp = fingerprint({
            "providers": [[p.name, p.base_url, p.model, p.stream] for p in providers], "messages": messages,
            "schema": schema, "schema_name": request.schema_name, "strict": request.strict,
            "temperature": request.temperature, "max_tokens": request.max_tokens,
            # Jobs of one group (tenant) share only among themselves: no tenant learns of another's prompts.
            "group": ctx.group if ctx is not None else None,
        })

        async def call() -> str:
            result = await self._chain(providers, request, messages, schema, output, check, ctx)
            return result.model_dump_json()

        raw, shared = await self.dedupe.run(fp, call, _readable)
        result = GenerateResult.model_validate_json(raw)
        if not shared:
            return result
        if ctx is not None:  # this job made no call: its output is the shared answer, its cost 0
            await ctx.stream(result.text)
            ctx.report_cost(ctx.cost_used or 0)
        return result.model_copy(update={"deduplicated": True, "usage": Usage(), "attempts": []})

    async def _chain(
        self,
        providers: list[Provider],
        request: GenerateRequest,
        messages: list[dict[str, str]],
        schema: dict[str, Any] | None,
        output: type[BaseModel] | None,
        check: Check | None,
        ctx: JobContext | None,
    ) -> GenerateResult:
        """Try the providers in order (the one provider call a de-duplicated request shares)."""
        usage = Usage()
        attempts: list[ProviderAttempt] = []
        for provider in providers:
            if ctx is not None and attempts and ctx.state.get(STREAMED):
                # The output already holds a failed provider's (partial) answer: say where the next begins.
                last = attempts[-1]
                await ctx.stream(f"\n\n[{last.provider}: {last.outcome}; trying {provider.name}]\n\n")
            try:
                result = await self._try(provider, request, messages, schema, output, check, usage, ctx)
            except _Skip as skip:
                attempts.append(skip.attempt)
                logger.info("AI provider %s skipped: %s", provider.name, skip.attempt.outcome)
                continue
            attempts.append(ProviderAttempt(provider=provider.name, outcome="ok"))
            return result.model_copy(update={"attempts": attempts, "usage": usage})
        raise _give_up(attempts)

    async def _try(
        self,
        provider: Provider,
        request: GenerateRequest,
        messages: list[dict[str, str]],
        schema: dict[str, Any] | None,
        output: type[BaseModel] | None,
        check: Check | None,
        usage: Usage,
        ctx: JobContext | None,
    ) -> GenerateResult:
        name = provider.name
        wait = await self.breaker.open_for(name)
        if wait > 0:
            raise _Skip(ProviderAttempt(provider=name, outcome="circuit_open", wait_s=wait))
        if ctx is not None:
            await ctx.progress({"stage": "generating", "provider": name})
        kwargs: dict[str, Any] = {"model": provider.model, "messages": messages}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": schema, "strict": request.strict},
            }
        try:
            response = await self._complete(provider, kwargs, messages, usage, ctx)
        except (openai.APITimeoutError, TimeoutError):
            await self._failed(name)
            raise _Skip(
                ProviderAttempt(provider=name, outcome="timeout", detail=f"no answer in {provider.timeout_s}s")
            ) from None
        except openai.APIConnectionError as exc:
            await self._failed(name)
            detail = f"connection: {exc}: {exc.__cause__}" if exc.__cause__ else f"connection: {exc}"
            raise _Skip(ProviderAttempt(provider=name, outcome="error", detail=detail[:300])) from None
        except openai.APIStatusError as exc:
            raise await self._status(provider, exc) from None
        # ValueError: a body or chunk that is not JSON; RecursionError: JSON nested too deep to parse.
        except (BrokenAnswer, openai.APIError, ValueError, RecursionError) as exc:
            await self._failed(name)
            raise _Skip(
                ProviderAttempt(provider=name, outcome="error", detail=f"broken answer: {exc}"[:300])
            ) from None
        reported = reported_usage(response.usage)
        if reported is not None:
            _charge(provider, reported, usage, ctx)
        await self.breaker.record_success(name)
        text = response.text
        data = _parse(name, text, schema, output, check) if schema is not None else None
        return GenerateResult(
            text=text,
            data=data,
            provider=name,
            model=response.model or provider.model,
            finish_reason=response.finish_reason,
            usage=usage,
            attempts=[],
        )

    async def _complete(
        self,
        provider: Provider,
        kwargs: dict[str, Any],
        messages: list[dict[str, str]],
        usage: Usage,
        ctx: JobContext | None,
    ) -> Completion:
        """One call to `provider`. A stream that fails, or whose job is cancelled or times out, after
        text arrived brings no usage chunk, yet the provider billed its tokens: its reported usage,
        else an estimate, is charged to the job (the run still ends as it would have). A call
        cancelled or timed out before any text came back (streamed or whole) was sent, and the
        provider bills its prompt: the prompt's estimate is charged."""
        received = Received()
        try:
            return await complete(
                self.chain.client(provider), kwargs, ctx,
                stream=provider.stream, timeout_s=provider.timeout_s, received=received,
            )
        except ConveyorError:  # the job's own writes failed: the run is over, not the provider
            raise
        # CancelledError: the job was cancelled or ran past its timeout while the provider answered.
        except (Exception, asyncio.CancelledError) as exc:
            spent = reported_usage(received.usage)
            if spent is None and (received.chars or isinstance(exc, _UNANSWERED)):
                spent = estimated_usage(sum(len(m["content"]) for m in messages), received.chars)
            if spent is not None:
                _charge(provider, spent, usage, ctx)
            raise

    async def _failed(self, name: str) -> None:
        opened = await self.breaker.record_failure(name)
        if opened:
            logger.warning("AI provider %s: circuit opened for %.1fs", name, opened)

    async def _status(self, provider: Provider, exc: openai.APIStatusError) -> Exception:
        name, status = provider.name, exc.status_code
        # "Come back later" (a 429, or a 503 with Retry-After) holds the provider, as the other handlers
        # wait: the provider is not failing, so no breaker failure is counted.
        wait = slow_down_wait(status, dict(exc.response.headers))
        if wait is not None:
            held = await self.breaker.hold(name, wait)
            return _Skip(ProviderAttempt(provider=name, outcome="rate_limited", detail=str(status), wait_s=held))
        if status in _FATAL_STATUS:
            return Unrecoverable(f"AI provider {name} rejected the request ({status}): {_message(exc)}")
        await self._failed(name)
        outcome: Literal["error", "rejected", "timeout"] = (
            "timeout" if status == 408 else "error" if status >= 500 else "rejected"
        )
        return _Skip(ProviderAttempt(provider=name, outcome=outcome, detail=f"{status}: {_message(exc)}"))


def _charge(provider: Provider, spent: Usage, usage: Usage, ctx: JobContext | None) -> None:
    """Add a call's tokens to the run's usage, its cost and the named limiters it went through."""
    usage.add(spent)
    if ctx is None:
        return
    ctx.report_cost(min(COST_MAX, (ctx.cost_used or 0) + spent.total_tokens))
    # The named limiters the job went through are corrected by what the provider used.
    try:
        ctx.add_usage(spent.prompt_tokens, spent.completion_tokens, model=provider.model, estimated=spent.estimated)
    except UsageReportError as exc:  # the run's sum passed the bound: keep what was reported
        logger.warning("AI provider %s: usage not added: %s", provider.name, exc)


def _readable(raw: str) -> bool:
    """Whether a shared result is a GenerateResult of this version (de-duplication drops others)."""
    try:
        GenerateResult.model_validate_json(raw)
    except ValidationError:
        return False
    return True


def _message(exc: openai.APIStatusError) -> str:
    return str(exc.message)[:300]


def schema_validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for a job's own JSON Schema. Its patterns run on a linear-time engine (no lookaround
    or backreferences), so no pattern can stall the worker's loop however the answer reads, and no
    `$ref` is fetched from the network. Raises ValidationError for a schema that is not valid."""
    return jsonschema_rs.Draft202012Validator(schema, pattern_options=jsonschema_rs.RegexOptions(), offline=True)


def _parse(name: str, text: str, schema: dict[str, Any], output: type[BaseModel] | None, check: Check | None) -> Any:
    """The JSON output validated; an invalid one skips to the next provider."""
    try:
        data = json.loads(text)
        if _deeper_than(data, MAX_OUTPUT_DEPTH):
            raise _Skip(ProviderAttempt(
                provider=name, outcome="invalid_output", detail=f"not JSON: nested over {MAX_OUTPUT_DEPTH} levels"
            ))
        if output is not None:
            value: Any = output.model_validate(data)
            data = value.model_dump(mode="json")
        else:
            schema_validator(schema).validate(data)
            value = data
    except json.JSONDecodeError as exc:
        raise _Skip(ProviderAttempt(provider=name, outcome="invalid_output", detail=f"not JSON: {exc}"[:300])) from None
    except RecursionError:
        detail = f"not JSON: nested over {MAX_OUTPUT_DEPTH} levels"
        raise _Skip(ProviderAttempt(provider=name, outcome="invalid_output", detail=detail)) from None
    except ValidationError as exc:
        detail = f"schema: {exc.errors(include_url=False, include_input=False)}"[:300]
        raise _Skip(ProviderAttempt(provider=name, outcome="invalid_output", detail=detail)) from None
    except jsonschema_rs.ValidationError as exc:
        raise _Skip(
            ProviderAttempt(provider=name, outcome="invalid_output", detail=f"schema: {exc.message}"[:300])
        ) from None
    problem = check(value) if check is not None else None
    if problem:
        raise _Skip(ProviderAttempt(provider=name, outcome="invalid_output", detail=problem[:300]))
    return data


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests lists and objects over `limit` levels (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _give_up(attempts: list[ProviderAttempt]) -> Exception:
    """Every provider was tried: wait without using an attempt if all were only throttled."""
    summary = "; ".join(f"{a.provider}: {a.outcome}{' ' + a.detail if a.detail else ''}" for a in attempts)
    waits = [a.wait_s for a in attempts if a.outcome in {"rate_limited", "circuit_open"} and a.wait_s]
    if waits and len(waits) == len(attempts):
        return RateLimited(retry_after=min(waits), reason=f"every AI provider is throttled or open: {summary}")
    return Retry(reason=f"no AI provider succeeded: {summary}")
