"""Documents become text: PDF, DOCX, XLSX, PPTX, CSV, HTML, Markdown, JSON, plain text
and source files, read from a downloaded file (`bridge.files`).

The Office and PDF formats need the ``agent-bridge[files]`` extra (pypdf,
python-docx, openpyxl, python-pptx), imported here only when such a file arrives,
so that a bridge that never sees one pays no import time (0.1-0.2 s each, measured
with ``-X importtime``; about 35 MB installed with lxml and Pillow). Those four were
chosen over Microsoft's markitdown 0.1.9: its base install requires magika (with
onnxruntime), requests, beautifulsoup4 and markdownify, and its ``xlsx`` extra
pandas, for what openpyxl alone does here; its pptx extra is python-pptx anyway.
HTML and the text formats need nothing beyond the standard library (a small
`HTMLParser` below: for text extraction a dependency would add little).

Every function here is blocking (the libraries are): `bridge.files` runs
`to_text` in a thread. Each raises `Unreadable` with a short reason kind, which
`bridge.files` turns into the friendly reply.

Example::

    to_text(Path("/tmp/x.pdf"), "report.pdf", "application/pdf")   # "## Page 1\\n..."
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from pathlib import Path, PurePath
from typing import Any


class Unreadable(Exception):
    """The file cannot become text. ``kind``: ``encrypted``, ``no_text``,
    ``unsupported``, ``no_extra`` (the converter is not installed), ``damaged``."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(detail)


#: Extensions read as text as they are (source files, configs, logs, Markdown).
# fmt: off
TEXT_EXTENSIONS = frozenset([
    "txt", "text", "md", "markdown", "rst", "log", "json", "jsonl", "ndjson", "yaml", "yml",
    "toml", "ini", "cfg", "conf", "env", "xml", "py", "pyi", "js", "mjs", "cjs", "ts", "tsx",
    "jsx", "java", "kt", "kts", "scala", "go", "rs", "c", "h", "cc", "cpp", "cxx", "hpp", "hh",
    "cs", "swift", "m", "rb", "php", "pl", "pm", "lua", "r", "jl", "sh", "bash", "zsh", "fish",
    "ps1", "bat", "sql", "graphql", "proto", "css", "scss", "less", "vue", "svelte", "dart",
    "ex", "exs", "erl", "hs", "clj", "lisp", "el", "vim", "tex", "bib", "diff", "patch",
    "gradle", "properties", "tf", "hcl",
])
# fmt: on
HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml"})
_MIME_EXTENSIONS = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "text/html": "html",
    "text/csv": "csv",
    "text/markdown": "md",
    "application/json": "json",
}
#: Bytes looked at to tell a text file of an unknown type from a binary one.
SNIFF_BYTES = 8192


def kind_of(name: str, mime_type: str | None) -> str:
    """The format to read ``name`` as: an extension such as ``pdf`` or ``txt``, or ""."""
    suffix = PurePath(name).suffix.lower().lstrip(".")
    if not suffix and PurePath(name).name.lower() in ("dockerfile", "makefile"):
        return "txt"
    if suffix in {"pdf", "docx", "xlsx", "pptx", "csv", "tsv", "json"} | HTML_EXTENSIONS:
        return suffix
    if suffix in TEXT_EXTENSIONS:
        return "txt"
    mime = (mime_type or "").split(";")[0].strip().lower()
    if mime in _MIME_EXTENSIONS:
        return _MIME_EXTENSIONS[mime]
    if mime.startswith("text/"):
        return "txt"
    return ""


def to_text(path: Path, name: str, mime_type: str | None) -> str:
    """The text (Markdown where the format has structure) of the file at ``path``,
    named ``name`` by the user. Raises `Unreadable`."""
    kind = kind_of(name, mime_type)
    if not kind:
        if not _looks_like_text(path):
            raise Unreadable("unsupported", f"unknown type {mime_type or 'none'}")
        kind = "txt"
    reader = _READERS.get(kind, _plain)
    try:
        return reader(path)
    except Unreadable:
        raise
    except Exception as exc:  # a damaged file: the libraries raise anything
        raise Unreadable("damaged", f"{kind} reader failed: {type(exc).__name__}") from exc


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if b"\x00" in head:
        return False
    # An incremental decoder: a character cut at the end of the sample is no error.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Windows exports (CSV from Excel) are often cp1252; it decodes any byte.
        return data.decode("cp1252", errors="replace")


def _plain(path: Path) -> str:
    return _decode(path.read_bytes())


def _csv(path: Path, delimiter: str | None = None) -> str:
    text = _decode(path.read_bytes())
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:SNIFF_BYTES])
    except csv.Error:
        dialect = csv.excel
    source = io.StringIO(text)
    reader = csv.reader(source, delimiter=delimiter) if delimiter else csv.reader(source, dialect)
    return markdown_table(reader)


def markdown_table(rows: Iterable[Iterable[object]]) -> str:
    """Rows as a Markdown table (the first row as its header); ``|`` and line breaks
    in cells escaped so that a cell stays a cell."""
    lines: list[list[str]] = []
    width = 0
    for row in rows:
        cells = ["" if cell is None else _cell(cell) for cell in row]
        if not any(cells):
            continue
        width = max(width, len(cells))
        lines.append(cells)
    if not lines:
        return ""
    out = []
    for i, cells in enumerate(lines):
        padded = cells + [""] * (width - len(cells))
        out.append("| " + " | ".join(padded) + " |")
        if i == 0:
            out.append("|" + " --- |" * width)
    return "\n".join(out)


def _cell(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split())


def _pdf(path: Path) -> str:
    pypdf = _extra("pypdf")
    reader = pypdf.PdfReader(str(path))
    if reader.is_encrypted:
        # An owner password alone (printing or copying restricted) opens with "".
        try:
            opened = reader.decrypt("")
        except Exception as exc:
            raise Unreadable("encrypted", "encrypted PDF") from exc
        if not opened:
            raise Unreadable("encrypted", "encrypted PDF")
    pages = []
    for number, page in enumerate(reader.pages, 1):
        text = (page.extract_text() or "").strip()
        if text:
            pages.append(f"## Page {number}\n\n{text}")
    if not pages:
        raise Unreadable("no_text", f"PDF of {len(reader.pages)} pages without text")
    return "\n\n".join(pages)


def _docx(path: Path) -> str:
    docx = _extra("docx", "python-docx")
    document = docx.Document(str(path))
    parts: list[str] = []
    body = document.element.body
    # Paragraphs and tables in document order (document.paragraphs skips tables).
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = docx.text.paragraph.Paragraph(child, document)
            text = paragraph.text.strip()
            if not text:
                continue
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            if style.startswith("Heading") and style[-1:].isdigit():
                text = "#" * min(int(style[-1]), 6) + " " + text
            elif style == "Title":
                text = "# " + text
            parts.append(text)
        elif tag == "tbl":
            table = docx.table.Table(child, document)
            parts.append(markdown_table([cell.text for cell in row.cells] for row in table.rows))
    return "\n\n".join(p for p in parts if p)


def _xlsx(path: Path) -> str:
    openpyxl = _extra("openpyxl")
    book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    try:
        parts = []
        for sheet in book.worksheets:
            table = markdown_table(sheet.iter_rows(values_only=True))
            if table:
                parts.append(f"## {sheet.title}\n\n{table}")
        return "\n\n".join(parts)
    finally:
        book.close()


def _pptx(path: Path) -> str:
    pptx = _extra("pptx", "python-pptx")
    presentation = pptx.Presentation(str(path))
    parts = []
    for number, slide in enumerate(presentation.slides, 1):
        texts = []
        for shape in slide.shapes:
            if shape.has_text_frame and shape.text_frame.text.strip():
                texts.append(shape.text_frame.text.strip())
            elif getattr(shape, "has_table", False) and shape.has_table:
                rows = shape.table.rows
                texts.append(markdown_table([c.text for c in row.cells] for row in rows))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                texts.append(f"Notes: {notes}")
        if texts:
            parts.append(f"## Slide {number}\n\n" + "\n\n".join(texts))
    return "\n\n".join(parts)


class _HtmlText(HTMLParser):
    """The visible text of an HTML page: scripts and styles dropped, blocks on
    lines of their own, headings and list items marked as in Markdown."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "head", "svg"})
    _BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "tr",
            "table",
            "section",
            "article",
            "header",
            "footer",
            "blockquote",
            "pre",
            "ul",
            "ol",
            "dl",
            "dt",
            "dd",
            "hr",
            "main",
            "nav",
            "form",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS or (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The visible text of ``html`` (see `_HtmlText`), blank runs squeezed."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _html(path: Path) -> str:
    return html_to_text(_decode(path.read_bytes()))


def _json(path: Path) -> str:
    text = _decode(path.read_bytes())
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text  # JSON Lines, or not JSON after all: as it is


def _extra(module: str, package: str | None = None) -> Any:
    """Import a converter of the ``files`` extra; `Unreadable` ("no_extra") without it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unreadable(
            "no_extra", f"{package or module} is not installed (pip install 'agent-bridge[files]')"
        ) from exc


_READERS: dict[str, Callable[[Path], str]] = {
    "pdf": _pdf,
    "docx": _docx,
    "xlsx": _xlsx,
    "pptx": _pptx,
    "csv": _csv,
    "tsv": lambda path: _csv(path, "\t"),
    "html": _html,
    "htm": _html,
    "xhtml": _html,
    "json": _json,
    "txt": _plain,
}
