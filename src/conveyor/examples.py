"""The example application `conveyor up` serves when given no APP: tasks that do real work with no
external account, so a newcomer can enqueue a job with curl and watch it finish.

Queues: `default` (echo, a ping for smoke checks), `web` (fetch a public URL through the SSRF guard
and summarise it), `docs`
(render Markdown to HTML) and `reports` (statistics over CSV text); plus the built-in handlers on
`ai`, `webhooks`, `email`, `documents` and the `examples.study_pack` pipeline (see docs/handlers.md);
the `questions` flow pipeline and `flows.collect` on `default` (docs/flows.md).
"""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
import time
from typing import Annotated, Any

from markdown_it import MarkdownIt
from pydantic import BaseModel, Field, HttpUrl

from conveyor import Conveyor, JobContext, Unrecoverable
from conveyor.handlers.bodies import iter_capped
from conveyor.handlers.examples import install_examples
from conveyor.handlers.http import transfer_errors_as_signals
from conveyor.handlers.questions import install_questions
from conveyor.handlers.ssrf import guarded_client, send_following

app = Conveyor(name="conveyor-examples")
# The built-in handlers (AI generation, signed webhooks, email, document text) and a pipeline that
# uses all four (`examples.study_pack`); they read their providers, endpoints and SMTP server from
# settings (docs/handlers.md) and fail with a clear, non-retried error while those are not set. Their
# SSRF guard also checks every request of `web.fetch_url`.
handlers = install_examples(app)
# The `questions` pipeline (a flow: retrieve -> generate per topic in parallel -> validate -> store) and
# `flows.collect`, the smallest flow (docs/flows.md).
install_questions(app, handlers.ai.generator if handlers.ai else None)

MAX_FETCH_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 5
MAX_TEXT_CHARS = 256 * 1024
SHOWN_HEADERS = ("content-type", "content-length", "server", "last-modified", "etag", "cache-control")


async def echo(ctx: JobContext, data: Any = None) -> Any:
    """Return the data unchanged: proves the whole path (API, queue, worker, result) works."""
    return data


class FetchRequest(BaseModel):
    url: HttpUrl
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0


class FetchSummary(BaseModel):
    url: str
    final_url: str
    status: int
    bytes: int
    truncated: bool
    elapsed_ms: float
    headers: dict[str, str]
    title: str | None


def _title(body: bytes, content_type: str) -> str | None:
    if "html" not in content_type:
        return None
    text = body[:65536].decode("utf-8", errors="replace")
    lower = text.lower()
    start = lower.find("<title")
    if start < 0:
        return None
    start = lower.find(">", start) + 1
    end = lower.find("</title>", start)
    if start <= 0 or end < start:
        return None
    return " ".join(text[start:end].split())[:200] or None


async def fetch_url(ctx: JobContext, request: FetchRequest) -> FetchSummary:
    """GET a URL through the SSRF guard (public addresses only unless CONVEYOR_WEBHOOK_ALLOW_HOSTS says
    otherwise, every redirect re-checked, no proxies from the environment), read at most 5 MiB, and
    summarise its size and headers."""
    started = time.monotonic()
    size, truncated = 0, False
    head = bytearray()
    url = str(request.url)
    with transfer_errors_as_signals(request.timeout_s, timed_out="no answer within", failed="fetch failed"):
        async with asyncio.timeout(request.timeout_s), guarded_client(handlers.guard, request.timeout_s) as client:
            response, hops = await send_following(client, "GET", url, max_redirects=MAX_REDIRECTS)
            try:
                async for chunk in iter_capped(response, MAX_FETCH_BYTES):
                    size += len(chunk)
                    if len(head) < 65536:
                        head.extend(chunk[: 65536 - len(head)])
                    if size > MAX_FETCH_BYTES:
                        truncated = True
                        break
            finally:
                await response.aclose()
    headers = {k: v for k, v in response.headers.items() if k.lower() in SHOWN_HEADERS}
    await ctx.log(f"fetched {size} bytes with status {response.status_code}")
    return FetchSummary(
        url=url, final_url=hops[-1] if hops else url, status=response.status_code, bytes=size,
        truncated=truncated, elapsed_ms=round((time.monotonic() - started) * 1000, 1), headers=headers,
        title=_title(bytes(head), response.headers.get("content-type", "")),
    )


class MarkdownDoc(BaseModel):
    markdown: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class RenderedHtml(BaseModel):
    html: str
    headings: list[str]
    words: int


_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(ctx: JobContext, doc: MarkdownDoc) -> RenderedHtml:
    """Render CommonMark (plus tables) to HTML; raw HTML in the input is escaped, not passed through."""
    tokens = _markdown.parse(doc.markdown)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    return RenderedHtml(html=_markdown.renderer.render(tokens, _markdown.options, {}), headings=headings,
                        words=len(doc.markdown.split()))


class CsvReportRequest(BaseModel):
    csv: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","


class ColumnStats(BaseModel):
    count: int
    mean: float
    median: float
    min: float
    max: float
    stdev: float | None


class CsvReport(BaseModel):
    rows: int
    columns: list[str]
    numeric: dict[str, ColumnStats]
    text: dict[str, int]


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def csv_report(ctx: JobContext, request: CsvReportRequest) -> CsvReport:
    """Per column of a CSV with a header row: statistics when every value is a number, else distinct count."""
    reader = csv.reader(io.StringIO(request.csv), delimiter=request.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise Unrecoverable("the CSV is empty: it needs a header row") from None
    columns: list[list[str]] = [[] for _ in header]
    rows = 0
    for row in reader:
        if not row:
            continue
        rows += 1
        for i, cell in enumerate(row[: len(header)]):
            if cell.strip():
                columns[i].append(cell.strip())
    numeric: dict[str, ColumnStats] = {}
    text: dict[str, int] = {}
    for name, values in zip(header, columns, strict=True):
        numbers = [n for n in (_number(v) for v in values) if n is not None]
        if values and len(numbers) == len(values):
            numeric[name] = ColumnStats(
                count=len(numbers), mean=statistics.fmean(numbers), median=statistics.median(numbers),
                min=min(numbers), max=max(numbers),
                stdev=statistics.stdev(numbers) if len(numbers) > 1 else None,
            )
        else:
            text[name] = len(set(values))
    return CsvReport(rows=rows, columns=header, numeric=numeric, text=text)


# Registered without decorator syntax so the functions keep their types for callers and mypy.
echo_task = app.task(echo, queue="default")
fetch_url_task = app.task(fetch_url, queue="web", concurrency=20, attempts=3, timeout=60)
render_markdown_task = app.task(render_markdown, queue="docs")
csv_report_task = app.task(csv_report, queue="reports")
