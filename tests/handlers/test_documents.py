"""Text extraction from real PDF and DOCX files made by the tests, HTML and Markdown, by path and URL."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pytest
from fpdf import FPDF

from conveyor import Conveyor
from conveyor.errors import Unrecoverable
from conveyor.handlers import install
from conveyor.handlers.documents import DocumentReader, DocumentRequest, detect_kind, html_text, markdown_text
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.settings import Settings
from tests.conftest import running
from tests.handlers.servers import Receiver


def make_pdf(*pages: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Cell biology", level=1)
    document.add_paragraph("Mitochondria produce ATP.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "organelle"
    table.rows[0].cells[1].text = "function"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def reader(root: Path | None = None, allow: str = "127.0.0.1", max_bytes: int = 1_000_000) -> DocumentReader:
    return DocumentReader(
        SsrfGuard(AllowList.parse(allow)),
        root=str(root) if root else None,
        max_bytes=max_bytes,
        max_chars=100_000,
    )


async def test_pdf_by_url_through_a_worker(app: Conveyor, receiver: Receiver) -> None:
    receiver.files["/notes.pdf"] = (
        make_pdf("Photosynthesis happens in chloroplasts.", "Page two: glucose."),
        "application/pdf",
    )
    handlers = install(app, documents=True, settings=Settings(webhook_allow_hosts="127.0.0.1"))
    assert handlers.documents is not None
    job = await handlers.documents.task.enqueue({"url": f"{receiver.url}/notes.pdf"})
    async with running(app.worker("documents", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.kind == "pdf" and result.pages == 2
    assert "Photosynthesis happens in chloroplasts." in result.text and "Page two: glucose." in result.text
    assert not result.truncated and result.bytes > 0
    assert (await job.record()).progress["stage"] == "extracting"


async def test_docx_html_markdown_by_path(tmp_path: Path) -> None:
    (tmp_path / "cells.docx").write_bytes(make_docx())
    (tmp_path / "page.html").write_text(
        "<html><head><title>T</title><style>p{color:red}</style></head><body><h1>Heading</h1>"
        "<script>alert('x')</script><p>First &amp; second.</p><ul><li>one</li><li>two</li></ul></body></html>"
    )
    (tmp_path / "notes.md").write_text(
        "# Title\n\nSome **bold** and _italic_ text with [a link](http://x.test).\n\n```python\nprint(1)\n```\n- item\n"
    )
    r = reader(tmp_path)
    d = await r.read(DocumentRequest(path="cells.docx"))
    assert d.kind == "docx" and d.text == "Cell biology\nMitochondria produce ATP.\norganelle | function"
    h = await r.read(DocumentRequest(path="page.html"))
    assert h.kind == "html" and h.text == "Heading\n\nFirst & second.\n\none\n\ntwo"
    m = await r.read(DocumentRequest(path="notes.md"))
    assert m.kind == "markdown"
    assert m.text == "Title\n\nSome bold and italic text with a link.\n\nprint(1)\n\n- item"


async def test_paths_must_stay_in_the_documents_root(tmp_path: Path) -> None:
    (tmp_path / "inside.txt").write_text("ok")
    with pytest.raises(Unrecoverable, match="outside the documents folder"):
        await reader(tmp_path).read(DocumentRequest(path="../../etc/passwd"))
    with pytest.raises(Unrecoverable, match="CONVEYOR_DOCUMENTS_ROOT"):
        await reader(None).read(DocumentRequest(path="inside.txt"))
    assert (await reader(tmp_path).read(DocumentRequest(path="inside.txt"))).text == "ok"


async def test_size_caps_by_path_and_by_url(tmp_path: Path, receiver: Receiver) -> None:
    big = b"x" * 50_000
    (tmp_path / "big.txt").write_bytes(big)
    receiver.files["/big.txt"] = (big, "text/plain")
    small = reader(tmp_path, max_bytes=10_000)
    with pytest.raises(Unrecoverable, match="over the limit"):
        await small.read(DocumentRequest(path="big.txt"))
    with pytest.raises(Unrecoverable, match="over the limit"):
        await small.read(DocumentRequest(url=f"{receiver.url}/big.txt"))
    with pytest.raises(Unrecoverable, match="over the limit"):
        await small.read(DocumentRequest(url=f"{receiver.url}/big.txt?chunked=1"))
    capped = await reader(tmp_path).read(DocumentRequest(path="big.txt", max_chars=100))
    assert capped.truncated and capped.chars == 100 and len(capped.text) == 100


async def test_urls_go_through_the_ssrf_guard(receiver: Receiver) -> None:
    receiver.files["/a.txt"] = (b"secret internal", "text/plain")
    with pytest.raises(Unrecoverable, match="loopback"):
        await reader(allow="").read(DocumentRequest(url=f"{receiver.url}/a.txt"))
    receiver.answer("/hop", (302, {"Location": "http://192.168.1.1/admin"}, b""))
    with pytest.raises(Unrecoverable, match=r"192\.168\.1\.1"):
        await reader().read(DocumentRequest(url=f"{receiver.url}/hop"))
    with pytest.raises(Unrecoverable, match="404"):
        await reader().read(DocumentRequest(url=f"{receiver.url}/missing.pdf"))


async def test_broken_files_and_zip_bombs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\0" * 5_000_000)
    (tmp_path / "bomb.docx").write_bytes(bomb.getvalue())
    r = reader(tmp_path, max_bytes=100_000)
    with pytest.raises(Unrecoverable, match="PDF"):
        await r.read(DocumentRequest(path="broken.pdf"))
    with pytest.raises(Unrecoverable, match="unpacks to"):
        await r.read(DocumentRequest(path="bomb.docx"))


def test_kind_detection_and_request_checks() -> None:
    assert detect_kind(b"%PDF-1.7", "x.bin") == "pdf"
    assert detect_kind(b"PK\x03\x04...", "upload") == "docx"
    assert detect_kind(b"<!DOCTYPE html><p>", "page") == "html"
    assert detect_kind(b"hello", "x", "text/markdown; charset=utf-8") == "markdown"
    assert detect_kind(b"hello", "notes.md") == "markdown"
    assert detect_kind(b"%PDF-1.7", "x.html", "text/html") == "pdf"
    assert detect_kind(b"PK\x03\x04...", "x.txt", "text/plain") == "docx"
    assert detect_kind(b"<p>hi</p>", "x.pdf", forced="html") == "html"
    assert html_text(b"<p>a</p><p>b</p>") == "a\n\nb"
    assert markdown_text(b"## H\n**b**") == "H\nb"
    with pytest.raises(ValueError, match="exactly one"):
        DocumentRequest()
    with pytest.raises(ValueError, match="exactly one"):
        DocumentRequest(path="a", url="http://x.test")


async def test_magic_bytes_decide_the_kind_over_what_the_peer_declares(receiver: Receiver, tmp_path: Path) -> None:
    """A PDF or DOCX declared as another kind (Content-Type, extension) is read as what its bytes are;
    before, a DOCX served as text/plain or text/html was run through the text or HTML parser and its
    zipped bytes came back as the 'text'."""
    receiver.files["/report"] = (make_docx(), "text/plain")
    receiver.files["/page"] = (make_docx(), "text/html")
    receiver.files["/notes"] = (make_pdf("Osmosis moves water."), "text/markdown")
    r = reader(tmp_path)
    for path in ("/report", "/page"):
        result = await r.read(DocumentRequest(url=f"{receiver.url}{path}"))
        assert result.kind == "docx" and "Mitochondria produce ATP." in result.text
    result = await r.read(DocumentRequest(url=f"{receiver.url}/notes"))
    assert result.kind == "pdf" and "Osmosis moves water." in result.text
    (tmp_path / "notes.txt").write_bytes(make_pdf("Cells divide."))
    (tmp_path / "notes.html").write_bytes(make_docx())
    assert (await r.read(DocumentRequest(path="notes.txt"))).kind == "pdf"
    assert (await r.read(DocumentRequest(path="notes.html"))).kind == "docx"


async def test_a_forced_kind_the_bytes_contradict_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.pdf").write_bytes(make_pdf("Cells divide."))
    (tmp_path / "notes.docx").write_bytes(make_docx())
    (tmp_path / "notes.md").write_bytes(b"# Cells\n\nThey *divide*.")
    r = reader(tmp_path)
    with pytest.raises(Unrecoverable, match=r"given kind='text' but its bytes are a PDF"):
        await r.read(DocumentRequest(path="notes.pdf", kind="text"))
    with pytest.raises(Unrecoverable, match=r"given kind='pdf' but its bytes are a ZIP archive \(DOCX\)"):
        await r.read(DocumentRequest(path="notes.docx", kind="pdf"))
    assert (await r.read(DocumentRequest(path="notes.pdf", kind="pdf"))).text == "Cells divide."
    assert (await r.read(DocumentRequest(path="notes.md", kind="text"))).text == "# Cells\n\nThey *divide*."
