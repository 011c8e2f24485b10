"""Real files for the file tests, made with the libraries that write them: PDFs
(fpdf2: with text, without text, encrypted), DOCX, XLSX, PPTX, and a small OGG."""

from __future__ import annotations

import io

from docx import Document
from fpdf import FPDF
from fpdf.enums import EncryptionMethod
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches


def pdf(*pages: str, password: str | None = None) -> bytes:
    """A PDF with one page per text (an empty text: a page without text, as a scan
    has); with ``password``, encrypted so that it cannot be opened without it."""
    doc = FPDF()
    doc.set_font("helvetica", size=12)
    for text in pages:
        doc.add_page()
        if text:
            doc.multi_cell(0, 10, text)
        else:
            doc.rect(20, 20, 100, 100, style="F")  # a drawing, no text
    if password is not None:
        doc.set_encryption(
            owner_password="owner-" + password,
            user_password=password,
            encryption_method=EncryptionMethod.RC4,
        )
    return bytes(doc.output())


def docx(
    *paragraphs: str, heading: str | None = None, table: list[list[str]] | None = None
) -> bytes:
    document = Document()
    if heading is not None:
        document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(rows: list[list[object]], *, title: str = "Budget") -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pptx(*slides: tuple[str, str]) -> bytes:
    deck = Presentation()
    for title, body in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5])
        slide.shapes.title.text = title
        box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(2))
        box.text_frame.text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


#: The first bytes of an OGG/Opus stream ("OggS" capture pattern and an OpusHead
#: packet): enough for a fake transcription server that checks what it got.
OGG = (
    b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
)
