"""Handlers against peers that answer with hostile or broken bodies: compression bombs behind
`Content-Encoding` (webhook receivers, document hosts), impossible token usage (AI providers),
webhook answers whose body stalls or is cut short, documents that cost more to parse than they weigh."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docx
import pytest
from fpdf import FPDF

from conveyor import Conveyor, JobContext
from conveyor.errors import Retry, Unrecoverable
from conveyor.handlers import install
from conveyor.handlers.ai import Provider
from conveyor.handlers.ai.generate import Usage
from conveyor.handlers.documents import DOCX_MAX_ENTRIES, DOCX_XML_LIMIT, DocumentReader, DocumentRequest, html_text
from conveyor.handlers.endpoints import WebhookEndpoint, WebhookEndpoints
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.handlers.webhooks import WebhookRequest, WebhookSender
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.conftest import SECRET
from tests.handlers.rawpeer import RawPeer
from tests.handlers.servers import ChatServer, Receiver
from tests.handlers.test_ai import CostSpy

BOMB_BYTES = 128 * 1024 * 1024  # what the bombs below inflate to
MEMORY_BOUND = 24 * 1024 * 1024


def gzipped(chunks: Any) -> bytes:
    """The gzip of the byte strings `chunks` yields, compressed as they come (never held whole)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return b"".join(packer.compress(c) for c in chunks) + packer.flush()


def zeros(total: int, step: int = 1024 * 1024) -> Any:
    return (bytes(min(step, total - i)) for i in range(0, total, step))


def bomb(layers: int) -> bytes:
    body = gzipped(zeros(BOMB_BYTES))
    for _ in range(layers - 1):
        body = gzipped([body])
    return body


async def peak_memory(call: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    """The most memory Python held at once, beyond what it held before, while `call` ran, and what
    it returned or raised."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            outcome: Any = await call()
        except Exception as exc:
            outcome = exc
        return tracemalloc.get_traced_memory()[1] - base, outcome
    finally:
        tracemalloc.stop()


def sender(receiver: Receiver) -> WebhookSender:
    endpoints = WebhookEndpoints([WebhookEndpoint.of("customer", f"{receiver.url}/hook", SECRET)])
    return WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1")), endpoints, timeout_s=60)


def reader(max_bytes: int = 1_000_000) -> DocumentReader:
    return DocumentReader(
        SsrfGuard(AllowList.parse("127.0.0.1")), root=None, max_bytes=max_bytes, max_chars=100_000, timeout_s=60
    )


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip"])
async def test_a_webhook_answer_that_inflates_to_a_bomb_is_delivered_in_bounded_memory(
    receiver: Receiver, encoding: str
) -> None:
    receiver.answer("/hook", (200, {"Content-Encoding": encoding}, bomb(encoding.count("gzip"))))
    used, result = await peak_memory(lambda: sender(receiver).deliver(WebhookRequest(endpoint="customer", payload={})))
    assert used < MEMORY_BOUND, f"{used} bytes held to read a 1 KiB excerpt"
    assert not isinstance(result, Exception), result
    assert result.status == 200 and result.response_truncated
    if encoding == "gzip":
        assert result.response == "\0" * 1024
    else:  # the receiver took the delivery; its body, in an encoding never asked for, is not read
        assert "not decoded" in result.response and "gzip, gzip" in result.response
    assert len(receiver.received) == 1


async def test_a_document_that_inflates_to_a_bomb_is_refused_in_bounded_memory(receiver: Receiver) -> None:
    receiver.answer("/notes.txt", (200, {"Content-Encoding": "gzip", "Content-Type": "text/plain"}, bomb(1)))
    used, outcome = await peak_memory(lambda: reader().read(DocumentRequest(url=f"{receiver.url}/notes.txt")))
    assert used < MEMORY_BOUND, f"{used} bytes held to read a document capped at 1 MB"
    assert isinstance(outcome, Unrecoverable) and "over the limit of 1000000 bytes" in str(outcome)

    receiver.answer("/twice.txt", (200, {"Content-Encoding": "gzip, gzip"}, bomb(2)))
    used, outcome = await peak_memory(lambda: reader().read(DocumentRequest(url=f"{receiver.url}/twice.txt")))
    assert used < MEMORY_BOUND, f"{used} bytes held to refuse a doubly compressed document"
    assert isinstance(outcome, Retry) and "unsupported Content-Encoding 'gzip, gzip'" in str(outcome)


async def test_compressed_documents_still_read_and_only_gzip_and_deflate_are_asked_for(receiver: Receiver) -> None:
    text = b"Mitochondria produce ATP. " * 2000
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflate = deflater.compress(text) + deflater.flush()
    receiver.answer(
        "/a.txt",
        (200, {"Content-Encoding": "gzip", "Content-Type": "text/plain"}, gzipped([text])),
        (200, {"Content-Encoding": "deflate", "Content-Type": "text/plain"}, zlib.compress(text)),
        (200, {"Content-Encoding": "deflate", "Content-Type": "text/plain"}, raw_deflate),
    )
    for _ in range(3):  # gzip, zlib-wrapped deflate, raw deflate
        result = await reader().read(DocumentRequest(url=f"{receiver.url}/a.txt"))
        assert result.text == text.decode().strip() and result.bytes == len(text)
    assert len(receiver.hits) == 3


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1000, "completion_tokens": 5, "total_tokens": -995},
        {"prompt_tokens": 10**15, "completion_tokens": 5, "total_tokens": 10**15 + 5},
        {"prompt_tokens": "lots", "completion_tokens": 5, "total_tokens": 16},
        {"prompt_tokens": 1.5, "completion_tokens": 5, "total_tokens": 6.5},
        "nonsense",
    ],
    ids=["negative", "huge", "text", "fraction", "not-an-object"],
)
async def test_impossible_usage_from_a_provider_is_ignored_not_charged(
    app: Conveyor, chat: ChatServer, usage: Any, stream: bool
) -> None:
    """The answer is kept; the usage, which would refund a budget (negative), exhaust it or make the
    outcome unrecordable (huge) or crash the handler (not a number), counts as not reported."""
    chat.usage = usage
    model = Provider("odd", chat.base_url("ok"), "test-model", "test-key", 5.0, stream=stream)
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[model])
    assert handlers.ai is not None
    spy = CostSpy()
    job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
    async with running(app.worker("ai", middleware=[spy], lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.text == "echo: hello" and result.usage == Usage()
    assert spy.costs == [None], "no cost reported: the cost limit keeps what it charged at claim"
    assert chat.count("ok") == 1


async def test_a_cost_over_the_engines_bound_is_refused_where_it_is_reported(app: Conveyor) -> None:
    """A cost the outcome script would refuse raises at `report_cost`, so the handler can see it;
    before, it was kept and the run's whole outcome was refused when the run ended."""

    async def handler(ctx: JobContext, data: Any) -> str:
        try:
            ctx.report_cost(10**13)
        except ValueError as exc:
            return str(exc)
        return "kept"

    task = app.task(handler, queue="costs", name="costs.report")
    job = await task.enqueue({})
    async with running(app.worker("costs", lease_ms=5000)):
        assert await job.result(timeout=30) == "cost units must be an integer in [0, 1000000000000]"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize(
    ("usage", "counted"),
    [
        ({"prompt_tokens": 11, "completion_tokens": 5}, Usage(prompt_tokens=11, completion_tokens=5, total_tokens=16)),
        ({"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": None},
         Usage(prompt_tokens=11, completion_tokens=5, total_tokens=16)),
        ({"prompt_tokens": 11, "total_tokens": 11}, Usage(prompt_tokens=11, completion_tokens=0, total_tokens=11)),
    ],
    ids=["no-total", "null-total", "no-completion"],
)
async def test_usage_with_a_count_left_out_is_charged_for_what_it_reports(
    app: Conveyor, chat: ChatServer, usage: Any, counted: Usage, stream: bool
) -> None:
    """Providers that leave `total_tokens` out (or null), or report no completion tokens, are charged
    for the tokens they report: a missing count is 0 and a missing total is the sum. Before, any
    missing count made the whole usage count as not reported, so such a provider's runs cost nothing
    and never took from a tenant's budget."""
    chat.usage = usage
    model = Provider("terse", chat.base_url("ok"), "test-model", "test-key", 5.0, stream=stream)
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[model])
    assert handlers.ai is not None
    spy = CostSpy()
    job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
    async with running(app.worker("ai", middleware=[spy], lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.text == "echo: hello" and result.usage == counted
    assert spy.costs == [counted.total_tokens]


def many_pages(count: int) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for n in range(count):
        pdf.add_page()
        pdf.multi_cell(0, 10, f"Page {n}: the cell is the basic unit of life.")
    return bytes(pdf.output())


async def test_a_pdf_of_many_pages_is_read_only_as_far_as_the_text_kept(tmp_path: Path) -> None:
    (tmp_path / "long.pdf").write_bytes(many_pages(300))
    docs = DocumentReader(SsrfGuard(), root=str(tmp_path), max_bytes=10_000_000, max_chars=100_000)
    result = await docs.read(DocumentRequest(path="long.pdf", max_chars=120))
    assert result.pages == 300 and result.pages_read == 3 and result.truncated
    assert result.text.startswith("Page 0: the cell") and result.chars == 120
    whole = await docs.read(DocumentRequest(path="long.pdf"))
    assert whole.pages == whole.pages_read == 300 and not whole.truncated
    assert whole.text.endswith("Page 299: the cell is the basic unit of life.")


async def test_a_pdf_the_parser_cannot_read_fails_at_once_whatever_the_parser_raises(tmp_path: Path) -> None:
    """pypdf raises other types than PdfReadError for broken files (here NotImplementedError for an
    unknown filter); each is the file's fault, so the job fails at once instead of being retried."""
    good = many_pages(1)
    assert good.count(b"/FlateDecode") >= 1
    (tmp_path / "odd.pdf").write_bytes(good.replace(b"/FlateDecode", b"/FlateDecodX"))
    docs = DocumentReader(SsrfGuard(), root=str(tmp_path), max_bytes=10_000_000, max_chars=100_000)
    with pytest.raises(Unrecoverable, match="not a readable PDF: NotImplementedError: Unsupported filter"):
        await docs.read(DocumentRequest(path="odd.pdf"))


def docx_with_body(markup: str) -> bytes:
    """A real DOCX (python-docx's template) whose body is `markup`, deflated as Word does."""
    template = io.BytesIO()
    docx.Document().save(template)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(template.getvalue())) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            part = src.read(item.filename)
            if item.filename == "word/document.xml":
                head, tail = part.split(b"<w:body>", 1)
                part = head + b"<w:body>" + markup.encode() + tail
            dst.writestr(item.filename, part)
    return out.getvalue()


async def test_a_docx_whose_xml_is_too_large_to_parse_is_refused_before_parsing(tmp_path: Path) -> None:
    """A DOCX of a few hundred KB, under the byte cap and the 20x unpacking bound, whose XML is over
    DOCX_XML_LIMIT: parsing it would hold ~20x the XML in memory (GBs for the 20x bound)."""
    paragraph = "<w:p><w:r><w:t>" + "a" * 1024 * 1024 + "</w:t></w:r></w:p>"
    body = paragraph * (DOCX_XML_LIMIT // len(paragraph) + 1)
    (tmp_path / "huge.docx").write_bytes(docx_with_body(body))
    (tmp_path / "fine.docx").write_bytes(docx_with_body("<w:p><w:r><w:t>Mitochondria</w:t></w:r></w:p>"))
    docs = DocumentReader(SsrfGuard(), root=str(tmp_path), max_bytes=2 * 1024 * 1024, max_chars=100_000)
    assert (tmp_path / "huge.docx").stat().st_size < docs.max_bytes
    with pytest.raises(Unrecoverable, match=f"the DOCX's XML unpacks to .* over the limit of {DOCX_XML_LIMIT}"):
        await docs.read(DocumentRequest(path="huge.docx"))
    assert (await docs.read(DocumentRequest(path="fine.docx"))).text == "Mitochondria"


async def headers_then_stall(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nthanks, rec")
    await r.read()  # until the sender gives up on the rest and closes


async def headers_then_close(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nthanks, rec")


async def gone_then_close(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, b"HTTP/1.1 410 Gone\r\nContent-Length: 1000\r\n\r\nno such ho")


@pytest.mark.parametrize(
    ("behaviour", "note"),
    [
        (headers_then_stall, "[response body not read: it did not end within the attempt's budget]"),
        (headers_then_close, "[response body not read: RemoteProtocolError"),
    ],
)
async def test_a_2xx_whose_body_stalls_or_is_cut_short_is_a_delivery(behaviour: Any, note: str) -> None:
    """The receiver took the webhook when it answered 2xx; before, a body that then stalled or was
    cut short made the attempt a failure, and every retry delivered the webhook again."""
    peer = await RawPeer(behaviour).start()
    try:
        hooks = WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1")), WebhookEndpoints(), timeout_s=1.0)
        result = await hooks.deliver(WebhookRequest(url=f"{peer.url}/hook", payload={"n": 1}))
        assert result.status == 200 and result.response.startswith(note) and result.response_truncated
        assert peer.connections == 1 and len(peer.requests) == 1
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the connection closed")
    finally:
        await peer.close()


async def test_a_4xx_whose_body_is_cut_short_is_classified_by_its_status() -> None:
    peer = await RawPeer(gone_then_close).start()
    try:
        hooks = WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1")), WebhookEndpoints(), timeout_s=15)
        with pytest.raises(Unrecoverable, match="endpoint answered 410"):
            await hooks.deliver(WebhookRequest(url=f"{peer.url}/hook", payload={"n": 1}))
    finally:
        await peer.close()


@pytest.mark.parametrize(
    "markup",
    ["*a ", "_a ", "[a](", "![a](", "<a ", "**a __b "],
    ids=["stars", "underscores", "links", "images", "angles", "mixed"],
)
async def test_markdown_made_to_stall_its_regexes_is_read_through_a_worker(
    app: Conveyor, tmp_path: Path, markup: str
) -> None:
    """One line of a repeated opener, 600 KB: the markup rules matched lazily from every opener to
    the end of the line, so it took hours of CPU (60 KB took 15 s) in a thread the job's timeout
    cannot stop. Now each rule is linear and the job completes well within its timeout."""
    (tmp_path / "notes.md").write_bytes((markup * (600_000 // len(markup))).encode())
    settings = Settings(documents_root=str(tmp_path))
    handlers = install(app, documents=True, settings=settings)
    assert handlers.documents is not None
    job = await handlers.documents.task.enqueue({"path": "notes.md", "max_chars": 1000}, timeout=120, attempts=1)
    async with running(app.worker("documents", lease_ms=5000)):
        result = await job.result(timeout=180)
    assert result.kind == "markdown" and result.bytes >= 599_000


@pytest.mark.parametrize(
    "markup", ["<a ", "</a ", "<!--", "<", "<div>"], ids=["tags", "end-tags", "comment", "lt", "nest"]
)
async def test_html_made_to_stall_its_parser_is_read_through_a_worker(
    app: Conveyor, tmp_path: Path, markup: str
) -> None:
    """600 KB of unclosed tags: `html.parser` rescanned from every '<' to the end (60 KB of '<a '
    took 35 s of CPU), in a thread the job's timeout cannot stop. Now the job completes."""
    page = b"<html><body><p>Top</p>" + (markup * (600_000 // len(markup))).encode()
    (tmp_path / "page.html").write_bytes(page)
    handlers = install(app, documents=True, settings=Settings(documents_root=str(tmp_path)))
    assert handlers.documents is not None
    job = await handlers.documents.task.enqueue({"path": "page.html", "max_chars": 1000}, timeout=120, attempts=1)
    async with running(app.worker("documents", lease_ms=5000)):
        result = await job.result(timeout=180)
    assert result.kind == "html" and result.text.startswith("Top")


def test_html_text_keeps_blocks_entities_and_drops_what_is_not_shown() -> None:
    page = (
        b"<html><head><title>T</title><script>x()</script></head><body><h2>Cells</h2>caf&eacute; &amp; tea"
        b"<br>next line<hr><template>hidden</template><noscript>no</noscript><p>a<b>b</b>c</p></body></html>"
    )
    assert html_text(page) == "Cells\ncafé & tea\nnext line\n\nabc"


def docx_with_entries(count: int) -> bytes:
    """A readable DOCX with `count` empty entries added to its archive."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        with zipfile.ZipFile(io.BytesIO(docx_with_body("<w:p><w:r><w:t>hi</w:t></w:r></w:p>"))) as src:
            for info in src.infolist():
                zf.writestr(info, src.read(info))
        for i in range(count):
            zf.writestr(f"e/{i:x}", b"")
    return out.getvalue()


async def test_a_docx_of_too_many_entries_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    """200,000 empty entries (17 MB) took 320 MB and seconds of CPU to open; the count is checked first."""
    (tmp_path / "many.docx").write_bytes(docx_with_entries(DOCX_MAX_ENTRIES + 1))
    (tmp_path / "some.docx").write_bytes(docx_with_entries(100))
    r = DocumentReader(SsrfGuard(AllowList.parse("")), root=str(tmp_path), max_bytes=20_000_000, max_chars=1000)
    with pytest.raises(Unrecoverable, match=f"zip entries, over the limit of {DOCX_MAX_ENTRIES}"):
        await r.read(DocumentRequest(path="many.docx"))
    assert (await r.read(DocumentRequest(path="some.docx"))).text == "hi"


def merged_table(rows: int, cols: int, span: int = 1) -> str:
    """A table whose columns are each one cell merged down `rows` rows, each cell claiming `span`
    grid columns."""
    tc = '<w:tc><w:tcPr><w:gridSpan w:val="%d"/><w:vMerge%s/></w:tcPr>%s</w:tc>'
    first = "<w:tr>" + "".join(tc % (span, ' w:val="restart"', f"<w:p><w:r><w:t>c{c}</w:t></w:r></w:p>")
                               for c in range(cols)) + "</w:tr>"
    rest = "<w:tr>" + (tc % (span, "", "<w:p/>")) * cols + "</w:tr>"
    return "<w:tbl><w:tblGrid>" + "<w:gridCol/>" * cols * span + "</w:tblGrid>" + first + rest * (rows - 1) + "</w:tbl>"


@pytest.mark.parametrize(("rows", "span"), [(300, 1), (1, 100_000)], ids=["merged-down", "spanning"])
async def test_a_docx_table_is_read_once_per_cell(tmp_path: Path, rows: int, span: int) -> None:
    """Each cell's text once, in the row where it starts: before, python-docx walked up the rows from
    every cell of a vertical merge (300 rows: 17 s of CPU, 2,000: hours, from a 40 KB file) and
    repeated a cell once for each grid column its gridSpan claimed (any number)."""
    (tmp_path / "t.docx").write_bytes(docx_with_body(merged_table(rows, 3, span)))
    r = DocumentReader(SsrfGuard(AllowList.parse("")), root=str(tmp_path), max_bytes=1_000_000, max_chars=10**7)
    text = (await r.read(DocumentRequest(path="t.docx"))).text
    assert text.splitlines()[0] == "c0 | c1 | c2"
    assert text.count("c0") == 1 and len(text) < 4 * rows + 20
