"""Bytes of one file -> text, title, headings and pages, with well-kept parsers (no hand-written ones).

Every format becomes Markdown-flavoured text whose structure is found by one CommonMark parser
(markdown-it-py): Markdown as it is (YAML front matter parsed, not indexed), HTML through markdownify
(tables as pipe tables, definition lists as `term` / `: definition`), Word through mammoth (styles ->
semantic HTML -> the HTML path), PowerPoint through python-pptx (a page per slide), Excel through
openpyxl (a section and a pipe table per sheet), PDF through pypdf (a page per page). Legacy encodings
are detected with charset-normalizer (multi-byte) and `codepages` (8-bit code pages: one language's letters,
the common Windows code pages first).

Raises ExtractError (the message says why) for binary, broken or unsupported input.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

Format = Literal["markdown", "text", "html", "pdf", "docx", "pptx", "xlsx"]
MAX_BYTES = 50 * 1024 * 1024  # larger files are reported, not loaded
SUFFIXES: dict[str, Format] = {
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text", ".log": "text", ".csv": "text",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx",
}
CONTENT_TYPES: dict[str, Format] = {
    "text/html": "html", "application/xhtml+xml": "html", "application/pdf": "pdf",
    "text/markdown": "markdown", "text/plain": "text",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}

Heading = tuple[int, int, str]  # (char offset of the heading line, level 1-6, plain title)
Page = tuple[int, int]  # (page number from 1, char offset where it starts)


class ExtractError(Exception):
    """One input cannot be turned into text; the message says why."""


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str | None = None
    headings: tuple[Heading, ...] = ()
    pages: tuple[Page, ...] = ()


def format_of(name: str, content_type: str | None = None) -> Format | None:
    """The format a file name (or an HTTP Content-Type, which wins) says; None when neither knows it."""
    if content_type and (fmt := CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())):
        return fmt
    return SUFFIXES.get(PurePosixPath(name).suffix.lower())


# ---------------------------------------------------------------- bytes -> str


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if not head or head.startswith(_UTF16_32_BOMS):  # text with NULs
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(head) > 0.1


def decode(data: bytes) -> str:
    """Bytes in any common encoding -> str with \\n line ends and no BOM.

    UTF-8 and UTF-16/32 with a BOM are taken as they say. Otherwise charset-normalizer detects the
    encoding; when its best candidate is a multi-byte encoding (Shift-JIS, GB18030, EUC-KR, Big5) and no
    code page decodes the bytes cleanly, it is taken; else the single-byte code page is chosen by
    `codepages.best_code_page` (no control characters,
    no symbols glued to letters or case flips inside words, the letters of one language, the common
    Windows code pages first: `ñandú` stays `ñandú`, not cp1250's `ńandú` or cp775's `±and·`). Bytes no
    candidate decodes are replaced (U+FFFD), never dropped silently."""
    from charset_normalizer import from_bytes

    from raylight_pipelines.ingest.codepages import best_code_page, single_byte

    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        text = data.decode("utf-32")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            found = sorted(from_bytes(data), key=lambda m: (m.chaos, -m.coherence))
            page = best_code_page(data, tuple(m.encoding for m in found))
            if found and not single_byte(found[0].encoding) and (page is None or page[1:] != (0, 0)):
                text = str(found[0])
            else:
                text = data.decode(page[0] if page else "cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# ---------------------------------------------------------------- Markdown


@functools.cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.front_matter import front_matter_plugin

    return MarkdownIt("commonmark").use(front_matter_plugin).enable("table")


def parse_markdown(text: str) -> Extracted:
    """CommonMark structure of text: headings (ATX and setext, never inside code), YAML front matter
    parsed for `title` and cut from the text (kept as text when it is not a YAML mapping)."""
    import yaml

    tokens = _markdown().parse(text)
    title = None
    if tokens and tokens[0].type == "front_matter":
        try:
            meta = yaml.safe_load(tokens[0].content)
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict):
            if isinstance(meta.get("title"), str | int | float):
                title = str(meta["title"]).strip() or None
            end = tokens[0].map[1] if tokens[0].map else 0
            text = "".join(text.splitlines(keepends=True)[end:]).lstrip("\n")
            tokens = _markdown().parse(text)
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    headings: list[Heading] = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map and i + 1 < len(tokens):
            plain = "".join(c.content for c in tokens[i + 1].children or [] if c.type in ("text", "code_inline"))
            plain = " ".join(plain.split())
            if plain:
                headings.append((starts[token.map[0]], int(token.tag[1]), plain))
    if title is None:
        title = next((h for _, level, h in headings if level == 1), None)
    return Extracted(text, title, tuple(headings))


# ---------------------------------------------------------------- HTML and office formats

_STRIP = ["a", "img", "b", "strong", "i", "em", "u", "span", "font"]  # kept as their text, without markup
_DROP = ["script", "style", "noscript", "template", "svg", "nav", "iframe", "object", "head"]


def html_to_markdown(data: bytes | str) -> tuple[str, str | None]:
    """HTML -> Markdown text and the page's <title>: tables as pipe tables, definition lists as
    `term` and `: definition` lines; scripts, styles and <nav> (and role=navigation) dropped, links,
    images and emphasis reduced to their text."""
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(data, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(_DROP):
        tag.decompose()
    for tag in soup.select("[role=navigation]"):
        tag.decompose()
    converter = MarkdownConverter(heading_style="ATX", bullets="-", strip=_STRIP, escape_underscores=False,
                                  escape_asterisks=False, escape_misc=False, table_infer_header=True)
    text = converter.convert_soup(soup)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip(), title or None


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|") if value is not None else ""


def _pipe_table(rows: list[list[str]]) -> str:
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def docx_to_markdown(data: bytes) -> str:
    import mammoth

    try:
        html = mammoth.convert_to_html(io.BytesIO(data)).value
    except Exception as exc:  # mammoth raises zip, XML and key errors for broken files
        raise ExtractError(f"cannot read DOCX: {exc}") from exc
    return html_to_markdown(html)[0]


def pptx_to_markdown(data: bytes) -> tuple[str, tuple[Page, ...]]:
    """A `#` section per slide (its title, else `Slide N`): text frames, tables, speaker notes."""
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(data))
    except Exception as exc:
        raise ExtractError(f"cannot read PPTX: {exc}") from exc
    parts: list[str] = []
    pages: list[Page] = []
    offset = 0
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        title = " ".join((title_shape.text_frame.text if title_shape is not None else "").split())
        body: list[str] = [f"# {title or f'Slide {number}'}"]
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if shape.has_text_frame and shape.text_frame.text.strip():
                body.append("\n".join(p.strip() for p in shape.text_frame.text.splitlines() if p.strip()))
            if getattr(shape, "has_table", False):
                body.append(_pipe_table([[_cell(c.text) for c in row.cells] for row in shape.table.rows]))
        if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame.text.strip()):
            body.append(f"Notes: {notes}")
        section = "\n\n".join(body)
        pages.append((number, offset))
        parts.append(section)
        offset += len(section) + 2
    return "\n\n".join(parts), tuple(pages)


def xlsx_to_markdown(data: bytes) -> str:
    """A `#` section per sheet with its used cells as a pipe table (values, not formulas); empty rows
    and sheets left out."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise ExtractError(f"cannot read XLSX: {exc}") from exc
    parts = []
    try:
        for sheet in book.worksheets:
            rows = [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
            rows = [r for r in rows if any(r)]
            if rows:
                last = max(max((i for i, v in enumerate(r) if v), default=0) for r in rows) + 1
                parts.append(f"# {sheet.title}\n\n" + _pipe_table([r[:last] for r in rows]))
    finally:
        book.close()
    return "\n\n".join(parts)


def pdf_to_text(data: bytes) -> tuple[str, str | None, tuple[Page, ...]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt("")
        parts: list[str] = []
        pages: list[Page] = []
        offset = 0
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\r\n", "\n").replace("\x00", "").strip()
            pages.append((number, offset))
            parts.append(text)
            offset += len(text) + 2
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception as exc:  # pypdf raises many types for broken files
        raise ExtractError(f"cannot read PDF: {exc}") from exc
    text = "\n\n".join(parts)
    if not text.strip():
        raise ExtractError("PDF has no extractable text (scanned images?)")
    return text, (str(meta_title) if meta_title else None), tuple(pages)


# ---------------------------------------------------------------- one entry point


def extract(data: bytes, fmt: Format | None, name: str) -> Extracted:
    """One file's bytes -> Extracted. fmt None: sniffed (PDF by its magic, else text/Markdown).
    Raises ExtractError for binary, broken or oversized input."""
    if len(data) > MAX_BYTES:
        raise ExtractError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if fmt == "pdf" or (fmt is None and data.startswith(b"%PDF-")):
        text, title, pages = pdf_to_text(data)
        return Extracted(text, title, (), pages)
    if fmt == "docx":
        return parse_markdown(docx_to_markdown(data))
    if fmt == "pptx":
        text, pages = pptx_to_markdown(data)
        return Extracted(text, None, parse_markdown(text).headings, pages)
    if fmt == "xlsx":
        text = xlsx_to_markdown(data)
        return Extracted(text, None, parse_markdown(text).headings)
    if looks_binary(data):
        raise ExtractError("binary file" + (f" (unsupported type {PurePosixPath(name).suffix})" if fmt is None else ""))
    if fmt == "html":
        text, title = html_to_markdown(decode(data))
        parsed = parse_markdown(text)
        return Extracted(parsed.text, title or parsed.title, parsed.headings)
    text = decode(data)
    if fmt == "text":
        return Extracted(text)
    return parse_markdown(text)
