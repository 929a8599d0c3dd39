"""Text from uploaded documents (PDF, DOCX, HTML, Markdown, plain text), by path or URL, size-capped.

Paths must lie inside CONVEYOR_DOCUMENTS_ROOT; URLs are fetched through the SSRF guard. Parsing
runs in a thread, so a large PDF does not stall the worker's event loop, from a bounded set of them
(parsers.py): a parse outlives a job that times out, and those must not pile up. The work of a parse
is bounded by the document, not by the job: its bytes, its text, a DOCX's unpacked size, a PDF's
pages and drawing operations.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.errors import ConfigurationError, Retry, Unrecoverable
from conveyor.handlers.bodies import read_capped
from conveyor.handlers.http import raise_for_rate_limit, transfer_errors_as_signals
from conveyor.handlers.parsers import ParseAbandoned, ParserPool
from conveyor.handlers.ssrf import SsrfGuard, guarded_client, send_following
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from conveyor.app import Conveyor, Task
    from conveyor.settings import Settings

QUEUE = "documents"
TASK = "documents.extract"
Kind = Literal["pdf", "docx", "html", "markdown", "text"]
_EXTENSIONS: dict[str, Kind] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}
_MEDIA: dict[str, Kind] = {
    "application/pdf": "pdf",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/plain": "text",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
_NAMES: dict[Kind, str] = {"pdf": "PDF", "docx": "ZIP archive (DOCX)"}
ZIP_EXPANSION_LIMIT = 20  # a DOCX may unpack to at most 20x the byte cap (zip bombs)
# python-docx parses every XML part of a DOCX into one lxml tree, about 20x the XML's size in memory
# for plain paragraphs (and seconds of CPU per MiB): the XML is held to its own, smaller bound.
DOCX_XML_LIMIT = 16 * 1024 * 1024
DOCX_MAX_ENTRIES = 10_000  # a DOCX has a few dozen parts, a few thousand with many images
# pypdf runs every operation of a page's content in Python (5-20 us each), and those of a form XObject
# each time the page draws it: a 1 KB page drawing one form 5,000 times, the form showing a hundred
# strings, took hours of CPU and gigabytes of text in one `extract_text` call, out of reach of the
# cut-off (checked between pages) and of the job's timeout (a thread cannot be stopped). A document
# may take this many operations in all (about 10-40 s of CPU); a book's text takes far fewer.
MAX_PDF_OPERATIONS = 2_000_000
MAX_PDF_PAGES = 10_000  # pages read at most (each costs milliseconds even when it holds nothing)


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(default=None, max_length=4096)
    url: str | None = Field(default=None, max_length=2048)
    kind: Kind | None = None
    max_chars: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DocumentRequest:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


class DocumentResult(BaseModel):
    source: str
    kind: Kind
    text: str
    chars: int
    bytes: int
    pages: int | None = None
    pages_read: int | None = None  # PDF pages whose text was extracted (reading stops at the cut-off)
    truncated: bool


# The formats whose bytes say what they are. A ZIP is parsed as the only ZIP kind read here (DOCX);
# any other ZIP (XLSX, EPUB, ...) then fails as `not a readable DOCX`.
_MAGIC: tuple[tuple[bytes, Kind], ...] = ((b"%PDF-", "pdf"), (b"PK\x03\x04", "docx"))


def magic_kind(data: bytes) -> Kind | None:
    """The kind the document's first bytes prove (PDF, ZIP), or None."""
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def detect_kind(data: bytes, name: str = "", media_type: str = "", *, forced: Kind | None = None) -> Kind:
    """The document's kind: its magic bytes decide when they are present, whatever the Content-Type or
    the extension declares (a peer's declaration is often wrong, the bytes are not, and a PDF or ZIP
    read by a text parser yields garbage); then the job's `kind`, the media type, the extension, an
    HTML sniff, text. A `kind` forced by the job that the bytes contradict is refused (Unrecoverable)."""
    proven = magic_kind(data)
    if forced is not None and proven is not None and forced != proven:
        raise Unrecoverable(f"the document was given kind={forced!r} but its bytes are a {_NAMES[proven]}")
    if proven is not None:
        return proven
    if forced is not None:
        return forced
    media = media_type.split(";", 1)[0].strip().lower()
    if media in _MEDIA:
        return _MEDIA[media]
    ext = os.path.splitext(name.split("?", 1)[0])[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


class _HTMLText:
    """Visible text of an HTML page: scripts, styles and templates dropped, blocks on their own lines.

    A parser target for libxml2's HTML parser (lxml): its callbacks come in document order while the
    page streams through, so no tree is built, and the parser runs in linear time on any input.
    (`html.parser` rescans from every '<' of an unclosed tag: 60 KB of '<a <a ...' took 35 s of CPU.)
    """

    _SKIP = frozenset({"script", "style", "template", "noscript", "head"})
    _VOID = frozenset({"br", "hr"})  # one line break, not one for the start and one for the end
    _BLOCK = frozenset(
        {
            "p",
            "div",
            "br",
            "hr",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "section",
            "article",
            "header",
            "footer",
            "blockquote",
            "pre",
            "table",
            "ul",
            "ol",
            "title",
        }
    )

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._skip = 0

    def start(self, tag: str, attrib: object) -> None:
        tag = tag.lower()
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def end(self, tag: str) -> None:
        tag = tag.lower()
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK and tag not in self._VOID:
            self.parts.append("\n")

    def data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    def close(self) -> None:
        return None


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_text(data: bytes) -> str:
    from lxml import etree  # type: ignore[import-untyped]

    target = _HTMLText()
    parser = etree.HTMLParser(target=target, huge_tree=True)
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    return _tidy("".join(target.parts))


# Every rule runs in linear time on any input: no span may reach past the place where the next match
# could start ('[' for links, '<' for tags), and emphasis markers are dropped where they open or close
# a word rather than paired across the line (a lazy span searched to the end of the line from every
# '*' made a line of "*a *a ..." quadratic: 60 KB took 15 s of CPU, a 20 MiB file days).
_MD_RULES = [
    (re.compile(r"^```.*$", re.M), ""),
    (re.compile(r"!\[([^\[\]\n]*)\]\([^)\[\n]*\)"), r"\1"),
    (re.compile(r"\[([^\[\]\n]+)\]\([^)\[\n]*\)"), r"\1"),
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*", re.M), ""),
    (re.compile(r"^[ \t]{0,3}>[ \t]?", re.M), ""),
    (re.compile(r"^[ \t]*[-*+][ \t]+", re.M), "- "),
    (re.compile(r"(?<![\w*_])[*_]{1,3}(?=[^\s*_])"), ""),  # emphasis opening a word
    (re.compile(r"(?<=[^\s*_])[*_]{1,3}(?![\w*_])"), ""),  # emphasis closing a word
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"<[^<>\n]+>"), ""),
]


def markdown_text(data: bytes) -> str:
    """Markdown with its markup removed (headings, emphasis, links keep their text)."""
    text = data.decode("utf-8", errors="replace")
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return _tidy(text)


class _Halt(BaseException):
    """Ends a page's extraction from inside pypdf. Not an Exception: pypdf catches every Exception
    raised while it reads a form XObject, logs it and goes on with the next one."""


class _PdfBudget:
    """pypdf's visitors for one document: they count its operations and text as extraction goes, and
    halt it mid-page once the text passes the cut-off, the operations their bound, or `stop` is set."""

    def __init__(self, max_chars: int | None, max_operations: int, stop: threading.Event | None) -> None:
        # Extracted text shrinks when tidied (runs of spaces, blank lines): twice the cut-off is kept.
        self.max_raw_chars = None if max_chars is None else 2 * max_chars
        self.max_operations = max_operations
        self.stop = stop
        self.operations = 0
        self.chars = 0
        self.page: list[str] = []  # the text of the page being read, as extraction reports it
        self.halted: Literal["full", "operations", "stopped"] | None = None

    def operation(self, operator: object, operands: object, cm: object, tm: object) -> None:
        self.operations += 1
        if self.operations > self.max_operations:
            self.halted = "operations"
            raise _Halt
        if self.stop is not None and self.operations % 256 == 0 and self.stop.is_set():
            self.halted = "stopped"
            raise _Halt

    def text(self, text: str, cm: object, tm: object, font: object, size: object) -> None:
        self.page.append(text)
        self.chars += len(text)
        if self.max_raw_chars is not None and self.chars > self.max_raw_chars:
            self.halted = "full"
            raise _Halt


def pdf_text(
    data: bytes,
    max_chars: int | None = None,
    stop: threading.Event | None = None,
    max_operations: int = MAX_PDF_OPERATIONS,
) -> tuple[str, int, int]:
    """(text, pages, pages read): pages are read in order until the text passes `max_chars` (within a
    page too) or `MAX_PDF_PAGES` have been read, so a document of many pages costs no more than the
    text kept. A document that takes over `max_operations` to read fails (Unrecoverable), and `stop`
    ends the reading within the page. Any failure of the parser on the file (pypdf raises many types
    for broken or hostile files: unsupported filters, reference loops, its own limits) means the file
    cannot be read, which no retry changes."""
    from pypdf import PdfReader

    parts: list[str] = []
    size = 0
    pages = 0
    budget = _PdfBudget(max_chars, max_operations, stop)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unrecoverable("the PDF is encrypted")
        pages = len(reader.pages)
        for page in reader.pages:
            if (stop is not None and stop.is_set()) or len(parts) >= MAX_PDF_PAGES:
                break
            budget.page = []
            try:
                raw = page.extract_text(visitor_operand_before=budget.operation, visitor_text=budget.text) or ""
            except _Halt:
                if budget.halted != "full":
                    break
                raw = "".join(budget.page)  # the page up to the cut-off
            text = _tidy(raw)
            parts.append(text)
            size += len(text) + 2
            if budget.halted or (max_chars is not None and size > max_chars):
                break
    except (Unrecoverable, ParseAbandoned):
        raise
    except Exception as exc:  # see the docstring
        raise Unrecoverable(f"not a readable PDF: {type(exc).__name__}: {exc}"[:300]) from None
    if budget.halted == "operations":
        raise Unrecoverable(
            f"the PDF takes over {max_operations:,} drawing operations to read (page {len(parts) + 1} of "
            f"{pages}); refusing it as too costly to read"
        )
    if budget.halted == "stopped" or (stop is not None and stop.is_set() and len(parts) < pages):
        raise ParseAbandoned(f"stopped after {len(parts)} of {pages} pages")
    return "\n\n".join(p for p in parts if p), pages, len(parts)


def docx_text(data: bytes, max_bytes: int, stop: threading.Event | None = None) -> str:
    import docx

    # Counted before the archive is opened: zipfile reads every entry of the central directory into
    # an object (about 1.5 KB each, twice: here and in python-docx), so 200,000 empty entries in a
    # 17 MB file took 320 MB and seconds of CPU. Each entry has one such signature (stored content
    # may add some: then the count is too high, never too low).
    entries = data.count(b"PK\x01\x02")
    if entries > DOCX_MAX_ENTRIES:
        raise Unrecoverable(f"the DOCX has {entries} zip entries, over the limit of {DOCX_MAX_ENTRIES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
            xml = sum(info.file_size for info in zf.infolist() if info.filename.lower().endswith((".xml", ".rels")))
    except zipfile.BadZipFile:
        raise Unrecoverable("not a DOCX file (not a zip archive)") from None
    if unpacked > max_bytes * ZIP_EXPANSION_LIMIT:
        raise Unrecoverable(f"the DOCX unpacks to {unpacked} bytes, too large")
    if xml > DOCX_XML_LIMIT:
        raise Unrecoverable(f"the DOCX's XML unpacks to {xml} bytes, over the limit of {DOCX_XML_LIMIT}")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises several unrelated types for broken files
        raise Unrecoverable(f"not a readable DOCX: {type(exc).__name__}: {exc}"[:300]) from None
    from docx.table import _Cell

    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        # Each cell of the XML once, with its own text: python-docx's `row.cells` finds the text of a
        # vertically merged cell by walking up the rows from every cell it spans (200 rows of one
        # merged column took 7 s, 2,000 hours, from a 40 KB file) and repeats a cell once for each
        # column its `gridSpan` claims (any number), so neither is used.
        for row in table.rows:
            if stop is not None and stop.is_set():  # the job ended: nobody reads the rest
                raise ParseAbandoned("stopped in a table")
            parts.append(" | ".join(_Cell(tc, table).text for tc in row._tr.tc_lst))
    return _tidy("\n".join(parts))


def extract(
    data: bytes,
    kind: Kind,
    max_bytes: int,
    max_chars: int | None = None,
    stop: threading.Event | None = None,
    max_pdf_operations: int = MAX_PDF_OPERATIONS,
) -> tuple[str, int | None, int | None]:
    """(text, pages, pages read) of a document of a known kind (pages: PDF only); a PDF's reading ends
    within its page once `stop` is set, a DOCX's at the next table row."""
    if kind == "pdf":
        return pdf_text(data, max_chars, stop, max_pdf_operations)
    if kind == "docx":
        return docx_text(data, max_bytes, stop), None, None
    if kind == "html":
        return html_text(data), None, None
    if kind == "markdown":
        return markdown_text(data), None, None
    return _tidy(data.decode("utf-8", errors="replace")), None, None


class DocumentReader:
    """Reads a document from an allowed path or a guarded URL and extracts its text."""

    def __init__(
        self,
        guard: SsrfGuard,
        *,
        root: str | None,
        max_bytes: int,
        max_chars: int,
        timeout_s: float = 30.0,
        parsers: ParserPool | None = None,
        max_pdf_operations: int = MAX_PDF_OPERATIONS,
    ) -> None:
        self.guard = guard
        self.parsers = parsers or ParserPool()
        self.root = Path(root).resolve() if root else None
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self.timeout_s = timeout_s
        if max_pdf_operations < 1:
            raise ConfigurationError("CONVEYOR_DOCUMENTS_MAX_PDF_OPERATIONS must be at least 1")
        self.max_pdf_operations = max_pdf_operations

    def _read_path(self, raw: str) -> bytes:
        if self.root is None:
            raise Unrecoverable("reading documents by path needs CONVEYOR_DOCUMENTS_ROOT")
        path = (self.root / raw).resolve()
        if not path.is_relative_to(self.root):
            raise Unrecoverable(f"path {raw!r} is outside the documents folder")
        if not path.is_file():
            raise Unrecoverable(f"no document at {raw!r}")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise Unrecoverable(f"document is {size} bytes, over the limit of {self.max_bytes}")
        with path.open("rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise Unrecoverable(f"document is over the limit of {self.max_bytes} bytes")
        return data

    async def _fetch(self, url: str) -> tuple[bytes, str]:
        with transfer_errors_as_signals(
            self.timeout_s, timed_out="document download took over", failed="document download failed"
        ):
            async with asyncio.timeout(self.timeout_s), guarded_client(self.guard, self.timeout_s) as client:
                response, _ = await send_following(client, "GET", url)
                try:
                    status = response.status_code
                    raise_for_rate_limit(status, dict(response.headers), what="document host")
                    if status == 408 or status >= 500:
                        raise Retry(reason=f"document host answered {status}")
                    if status >= 400:
                        raise Unrecoverable(f"document host answered {status}")
                    length = int(response.headers.get("content-length") or 0)
                    if length > self.max_bytes:
                        raise Unrecoverable(f"document is {length} bytes, over the limit of {self.max_bytes}")
                    data, more = await read_capped(response, self.max_bytes)
                    if more:
                        raise Unrecoverable(f"document is over the limit of {self.max_bytes} bytes")
                    return data, response.headers.get("content-type", "")
                finally:
                    await response.aclose()

    async def read(self, req: DocumentRequest, ctx: JobContext | None = None) -> DocumentResult:
        if req.url is not None:
            data, media = await self._fetch(req.url)
            source = req.url
        else:
            assert req.path is not None
            data, media = await asyncio.to_thread(self._read_path, req.path), ""
            source = req.path
        kind = detect_kind(data, source, media, forced=req.kind)
        if ctx is not None:
            await ctx.progress({"stage": "extracting", "kind": kind, "bytes": len(data)})
        limit = min(req.max_chars or self.max_chars, self.max_chars)
        stop = threading.Event()
        text, pages, pages_read = await self.parsers.run(
            extract, data, kind, self.max_bytes, limit, stop, self.max_pdf_operations, stop=stop
        )
        return DocumentResult(
            source=source,
            kind=kind,
            text=text[:limit],
            chars=min(len(text), limit),
            bytes=len(data),
            pages=pages,
            pages_read=pages_read,
            # a PDF read only in part: its text passed the cut-off, or its pages MAX_PDF_PAGES
            truncated=len(text) > limit or (pages is not None and pages_read is not None and pages_read < pages),
        )


class DocumentTasks:
    def __init__(self, task: Task[DocumentResult], reader: DocumentReader) -> None:
        self.task = task
        self.reader = reader


def register(app: Conveyor, settings: Settings, guard: SsrfGuard) -> DocumentTasks:
    """Declare `documents.extract` on queue `documents` (2 attempts, 5 min timeout); its parser pool
    becomes the app's `document_parsers`, which the worker service exports as metrics."""
    parsers = ParserPool(settings.documents_parsers)
    app.document_parsers = parsers
    reader = DocumentReader(
        guard,
        root=settings.documents_root,
        max_bytes=settings.documents_max_bytes,
        max_chars=settings.documents_max_chars,
        parsers=parsers,
        max_pdf_operations=settings.documents_max_pdf_operations,
    )

    async def extract_text(ctx: JobContext, payload: DocumentRequest) -> DocumentResult:
        return await reader.read(payload, ctx)

    task = app.task(extract_text, queue=QUEUE, name=TASK, attempts=2, timeout=300)
    return DocumentTasks(task, reader)
