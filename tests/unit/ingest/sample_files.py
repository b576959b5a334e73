"""Small valid office and PDF files built in memory for the loader tests (no binaries in the repository), and
the awkward-document corpus."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"  # awkward documents; corpus/expected.json says what each gives


def make_pdf(pages: list[str], title: str = "Handbook") -> bytes:
    """A small valid PDF with one text line per page (Helvetica), built by hand."""
    objs: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                    f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objs.append(f"<< /Title ({title}) >>".encode())
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1, len(objs), xref)
    return out


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_PKG = "http://schemas.openxmlformats.org/package/2006"
_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def make_docx(paragraphs: list[tuple[str, str | None]], table: list[list[str]]) -> bytes:
    """A minimal .docx: (text, style id or None) paragraphs (style `Heading1` is "heading 1"), then a table."""
    def p(text: str, style: str | None = None) -> str:
        ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
        return f'<w:p>{ppr}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'

    rows = "".join("<w:tr>" + "".join(f"<w:tc>{p(c)}</w:tc>" for c in row) + "</w:tr>" for row in table)
    body = "".join(p(t, s) for t, s in paragraphs) + f"<w:tbl>{rows}</w:tbl>"
    parts = {
        "[Content_Types].xml": f'<Types xmlns="{_PKG}/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'wordprocessingml.document.main+xml"/></Types>',
        "_rels/.rels": f'<Relationships xmlns="{_PKG}/relationships"><Relationship Id="rId1" '
        f'Type="{_DOC}/officeDocument" Target="word/document.xml"/></Relationships>',
        "word/_rels/document.xml.rels": f'<Relationships xmlns="{_PKG}/relationships"><Relationship Id="rId1" '
        f'Type="{_DOC}/styles" Target="styles.xml"/></Relationships>',
        "word/styles.xml": f'<w:styles {W}><w:style w:type="paragraph" w:styleId="Heading1">'
        '<w:name w:val="heading 1"/></w:style></w:styles>',
        "word/document.xml": f"<w:document {W}><w:body>{body}</w:body></w:document>",
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, xml in parts.items():
            z.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + xml)
    return out.getvalue()


def make_pptx() -> bytes:
    """Two slides: a title with bullet text and speaker notes; a title with a table."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Roadmap"
    first.placeholders[1].text = "Ship the operator\nThen the chart"
    first.notes_slide.notes_text_frame.text = "Mention the beta."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Prices"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for i, row in enumerate([["Plan", "Price"], ["Pro", "20"]]):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_xlsx() -> bytes:
    """A sheet with a header, a blank row between two data rows, and an empty second sheet."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Budget"
    for row in (["Team", "Amount"], ["Ops", 1200], [], ["Dev | QA", 800]):
        sheet.append(row)
    book.create_sheet("Empty")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def build_corpus(dest: Path) -> Path:
    """The committed corpus plus what git cannot hold (a .git folder, a FIFO) or what is built (office
    files, a PDF, a 200,000-character line)."""
    shutil.copytree(CORPUS, dest, symlinks=True)
    docs = dest / "docs"
    (docs / ".git").mkdir()
    (docs / ".git" / "config").write_text('[remote "origin"]\n\turl = https://ghp_exampletoken@github.com/a/b.git\n')
    os.mkfifo(docs / "fifo")
    (docs / "long-line.txt").write_text("x" * 200_000)
    (docs / "report.docx").write_bytes(make_docx(
        [("Quarterly report", "Heading1"), ("Revenue grew in every region.", None)],
        [["Plan", "Price"], ["Basic", "10"]]))
    (docs / "deck.pptx").write_bytes(make_pptx())
    (docs / "budget.xlsx").write_bytes(make_xlsx())
    (docs / "manual.pdf").write_bytes(make_pdf(["First page text", "Second page text"]))
    return dest
