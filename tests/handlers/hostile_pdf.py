"""Small PDFs built byte by byte, shaped to cost a reader far more than their size: one page that
draws a form XObject thousands of times, deeply nested arrays, absurd page dimensions."""

from __future__ import annotations

import zlib

FORM_DRAWS = 5_000  # pypdf's own cap on form XObjects drawn per page


def pdf(objects: list[bytes]) -> bytes:
    """A PDF of `objects` (numbered from 1; 1 is the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def stream(data: bytes, dictionary: bytes = b"") -> bytes:
    packed = zlib.compress(data, 9)
    return b"<< /Length %d /Filter /FlateDecode %s >>\nstream\n" % (len(packed), dictionary) + packed + b"\nendstream"


def one_page(content: bytes, form: bytes | None = None, media_box: bytes = b"[0 0 612 792]") -> bytes:
    """One page showing `content` in Helvetica (/F1), with `form` (a content stream) as XObject /X0."""
    xobjects = b"/XObject << /X0 6 0 R >>" if form is not None else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Resources << /Font << /F1 4 0 R >> %s >> /Contents 5 0 R >>"
        % (media_box, xobjects),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        stream(content),
    ]
    if form is not None:
        resources = b"/Type /XObject /Subtype /Form /BBox [0 0 10 10] /Resources << /Font << /F1 4 0 R >> >>"
        objects.append(stream(form, resources))
    return pdf(objects)


def form_drawn_over_and_over(form: bytes) -> bytes:
    """A page (about 1 KB) that draws `form` FORM_DRAWS times."""
    return one_page(b"BT /F1 12 Tf 72 700 Td (cover) Tj ET\n" + b"/X0 Do\n" * FORM_DRAWS, form)


def silent_form(operations: int) -> bytes:
    """A form of `operations` text operations that show nothing: they add no text, so no cut-off on
    the text ends them, yet a reader must run each one."""
    return b"BT /F1 12 Tf " + b"() Tj " * operations + b"ET"


def wordy_form(strings: int) -> bytes:
    """A form showing `strings` strings of 40 letters."""
    return b"BT /F1 12 Tf " + (b"(" + b"a" * 40 + b") Tj ") * strings + b"ET"
