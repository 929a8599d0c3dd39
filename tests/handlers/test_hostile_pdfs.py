"""PDFs built to cost a reader far more than their size: the work of reading one is bounded (its
operations, its text within a page, its pages) and a job that ends stops its parse within the page.
Before, a 1 KB page drawing one form XObject 5,000 times ran in one pypdf call for hours, out of
reach of the text cut-off and of the job's timeout, holding a parser thread and gigabytes of text."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conveyor import Conveyor, JobFailedError
from conveyor.errors import Unrecoverable
from conveyor.handlers import documents as documents_module
from conveyor.handlers import install
from conveyor.handlers.documents import DocumentReader, DocumentRequest
from conveyor.handlers.parsers import ParserPool
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.hostile_pdf import form_drawn_over_and_over, one_page, silent_form, wordy_form
from tests.handlers.test_parsers import empty_pages

# Small enough that the bound is reached in about a second; the default (2,000,000) in about ten.
OPERATIONS = 100_000


def reader(root: Path, *, max_pdf_operations: int = OPERATIONS, parsers: ParserPool | None = None) -> DocumentReader:
    return DocumentReader(
        SsrfGuard(AllowList()),
        root=str(root),
        max_bytes=1_000_000,
        max_chars=100_000,
        parsers=parsers,
        max_pdf_operations=max_pdf_operations,
    )


async def test_a_form_drawn_thousands_of_times_fails_the_job_at_once(app: Conveyor, tmp_path: Path) -> None:
    data = form_drawn_over_and_over(silent_form(10_000))  # 50 million operations in about 1 KB
    assert len(data) < 2_000
    (tmp_path / "bomb.pdf").write_bytes(data)
    settings = Settings(documents_root=str(tmp_path), documents_max_pdf_operations=OPERATIONS)
    handlers = install(app, documents=True, settings=settings)
    assert handlers.documents is not None
    job = await handlers.documents.task.enqueue({"path": "bomb.pdf"})
    async with running(app.worker("documents", lease_ms=5000)):
        with pytest.raises(JobFailedError, match=r"takes over 100,000 drawing operations to read \(page 1 of 1\)"):
            await job.result(timeout=120)
    assert (await job.record()).attempts_made == 1


async def test_text_past_the_cut_off_ends_the_read_within_the_page(tmp_path: Path) -> None:
    """200 million letters from one page; the read ends once the text passes the cut-off."""
    (tmp_path / "wordy.pdf").write_bytes(form_drawn_over_and_over(wordy_form(1_000)))
    result = await reader(tmp_path).read(DocumentRequest(path="wordy.pdf", max_chars=5_000))
    assert result.truncated and result.chars == 5_000 and result.pages == result.pages_read == 1
    assert result.text.startswith("cover\na") and set(result.text[6:]) == {"a"}


async def test_a_parse_whose_job_ended_stops_within_the_page(tmp_path: Path) -> None:
    """The job's timeout bounds the parse: the page being read is left at once, not at its end."""
    (tmp_path / "bomb.pdf").write_bytes(form_drawn_over_and_over(silent_form(100_000)))  # 500 million
    pool = ParserPool(1)
    docs = reader(tmp_path, max_pdf_operations=10**12, parsers=pool)
    task = asyncio.ensure_future(docs.read(DocumentRequest(path="bomb.pdf")))
    await wait_for(lambda: pool.running == 1, timeout=60, what="the parse running")
    # Into the page: reading the file and finding its page take milliseconds of CPU (a parse told to
    # stop before its page starts never reads it), this page alone hours.
    cpu = time.process_time()
    await wait_for(lambda: time.process_time() - cpu > 2, timeout=120, what="the parse well into its page")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: pool.running == 0, timeout=60, what="the parse stopped within its page")
    assert pool.abandoned == 0


async def test_pages_past_the_page_bound_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents_module, "MAX_PDF_PAGES", 5)
    (tmp_path / "empty.pdf").write_bytes(empty_pages(8))
    result = await reader(tmp_path).read(DocumentRequest(path="empty.pdf"))
    assert (result.pages, result.pages_read, result.truncated) == (8, 5, True)


@pytest.mark.parametrize(
    ("content", "media_box", "outcome"),
    [
        (b"BT /F1 12 Tf " + b"[" * 100_000 + b"]" * 100_000 + b" TJ ET", b"[0 0 612 792]", "RecursionError"),
        (b"BT /F1 12 Tf 72 700 Td (vast) Tj ET", b"[0 0 1000000000000 1000000000000]", "vast"),
    ],
    ids=["nested-arrays", "vast-page"],
)
async def test_nesting_fails_at_once_and_dimensions_cost_nothing(
    tmp_path: Path, content: bytes, media_box: bytes, outcome: str
) -> None:
    (tmp_path / "odd.pdf").write_bytes(one_page(content, media_box=media_box))
    if outcome == "vast":
        assert (await reader(tmp_path).read(DocumentRequest(path="odd.pdf"))).text == "vast"
        return
    with pytest.raises(Unrecoverable, match=f"not a readable PDF: {outcome}"):
        await reader(tmp_path).read(DocumentRequest(path="odd.pdf"))
