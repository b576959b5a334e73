"""Loaders: formats, globs, odd encodings, broken and binary files (reported, never fatal)."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import httpx
from raylight.api.types import Source
from raylight_pipelines.documents import glob_regex, load_sources
from raylight_pipelines.extract import decode, extract


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


def load_dir(tmp_path: Path, files: dict[str, bytes], **source: object):
    root = tmp_path / "docs"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return load_sources([Source(path="docs", **source)], tmp_path)


def test_directory_loads_markdown_text_html_and_pdf(tmp_path):
    html = (b"<html><head><title>Ops page</title><script>var x = 'never indexed';</script></head><body>"
            b"<nav>menu</nav><h1>Operations</h1><p>Restart the <b>operator</b> pod.</p><h2>Ports</h2>"
            b"<p>The API listens on 8000.</p></body></html>")
    loaded = load_dir(tmp_path, {
        "guide.md": b"---\ntitle: The Guide\n---\n# Ignored\n\nBody.",
        "notes.txt": b"plain notes",
        "ops.html": html,
        "manual.pdf": make_pdf(["First page text", "Second page text"]),
    })
    assert not loaded.failures
    docs = {d.source_id: d for d in loaded.documents}
    assert set(docs) == {"path:docs/guide.md", "path:docs/notes.txt", "path:docs/ops.html", "path:docs/manual.pdf"}
    assert docs["path:docs/guide.md"].title == "The Guide"
    ops = docs["path:docs/ops.html"]
    assert ops.title == "Ops page" and "# Operations" in ops.text and "## Ports" in ops.text
    assert "never indexed" not in ops.text and "menu" not in ops.text
    assert "Restart the operator pod." in ops.text
    pdf = docs["path:docs/manual.pdf"]
    assert "First page text" in pdf.text and "Second page text" in pdf.text
    assert pdf.title == "Handbook"
    assert pdf.page_at(pdf.text.index("Second")) == 2 and pdf.page_at(0) == 1


def test_broken_and_binary_files_are_reported_and_skipped(tmp_path):
    loaded = load_dir(tmp_path, {
        "good.md": b"# Good\n\nfine",
        "broken.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog garbage",
        "fake.md": b"\x00\x01\x02\x03binary\x00payload" * 20,
        "image.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
    })
    assert [d.source_id for d in loaded.documents] == ["path:docs/good.md"]
    reasons = {f.source_id: f.reason for f in loaded.failures}
    assert set(reasons) == {"path:docs/broken.pdf", "path:docs/fake.md"}
    assert "binary" in reasons["path:docs/fake.md"] and "PDF" in reasons["path:docs/broken.pdf"]
    assert [s.source_id for s in loaded.skipped] == ["path:docs/image.png"]  # unsupported type
    assert loaded.complete == {"path:docs"}


def test_odd_encodings_decode(tmp_path):
    loaded = load_dir(tmp_path, {
        "latin1.txt": "Café crème à la française, naïve façade — déjà vu.".encode("cp1252"),
        "utf16.txt": "Grüße aus Köln".encode("utf-16"),
        "bom.md": "\ufeff# Überschrift\r\n\r\nText".encode(),
        "sjis.txt": ("日本語のテキストです。" * 5).encode("shift_jis"),
    })
    assert not loaded.failures
    docs = {d.source_id.rsplit("/", 1)[-1]: d for d in loaded.documents}
    assert "Café crème" in docs["latin1.txt"].text and "déjà vu" in docs["latin1.txt"].text
    assert docs["utf16.txt"].text == "Grüße aus Köln"
    assert docs["bom.md"].text == "# Überschrift\n\nText" and docs["bom.md"].title == "Überschrift"
    assert "日本語のテキストです" in docs["sjis.txt"].text


def test_include_exclude_globs_are_relative_to_the_source(tmp_path):
    loaded = load_dir(tmp_path, {"a.md": b"a", "x/b.md": b"b", "x/drafts/c.md": b"c", "d.txt": b"d"},
                      include=["**/*.md"], exclude=["**/drafts/**"])
    assert sorted(d.source_id for d in loaded.documents) == ["path:docs/a.md", "path:docs/x/b.md"]
    assert glob_regex("*.md").match("a.md") and not glob_regex("*.md").match("x/a.md")
    assert glob_regex("**/*.md").match("a.md") and glob_regex("**/*.md").match("x/y/a.md")


def test_paths_resolve_against_the_manifest_directory_and_missing_ones_fail(tmp_path):
    (tmp_path / "m" / "docs").mkdir(parents=True)
    (tmp_path / "m" / "docs" / "a.md").write_text("# A")
    loaded = load_sources([Source(path="./docs"), Source(path="nope")], tmp_path / "m")
    assert [d.source_id for d in loaded.documents] == ["path:docs/a.md"]
    assert len(loaded.failures) == 1 and "no such file" in loaded.failures[0].reason
    assert loaded.complete == {"path:./docs"} and "path:nope" in loaded.keys


def test_inline_documents_and_access(tmp_path):
    src = Source(documents=[{"id": "faq", "text": "# FAQ\n\nAnswers."}], access={"tenant": "t1", "groups": ["b", "a"]})
    (doc,) = load_sources([src], tmp_path).documents
    assert (doc.source_id, doc.title, doc.tenant, doc.groups) == ("inline:faq", "FAQ", "t1", ("a", "b"))


def test_configmap_keys_become_documents(tmp_path):
    cm = SimpleNamespace(data={"intro.md": "# Intro\n\nHello", "notes.txt": "plain"},
                         binary_data={"manual.pdf": base64.b64encode(make_pdf(["From a ConfigMap"])).decode()})
    api = SimpleNamespace(read_namespaced_config_map=lambda name, ns: cm if (name, ns) == ("kb", "team") else None)
    loaded = load_sources([Source(config_map={"name": "kb"})], tmp_path, namespace="team", k8s_api=api)
    assert sorted(d.source_id for d in loaded.documents) == [
        "configmap:team/kb/intro.md", "configmap:team/kb/manual.pdf", "configmap:team/kb/notes.txt"]
    assert not loaded.failures


def test_mounted_configmap_is_read_as_files_without_api_access(tmp_path, monkeypatch):
    # The ingestion Job mounts ConfigMap sources like a kubelet does: a file per key plus hidden ..data links.
    mounted = tmp_path / "mnt" / "kb"
    (mounted / "..2026_11_23").mkdir(parents=True)
    (mounted / "intro.md").write_text("# Intro\n\nHello")
    (mounted / "..data").symlink_to(mounted / "..2026_11_23")
    monkeypatch.setattr("raylight_pipelines.documents.CONFIGMAP_MOUNT_ROOT", str(tmp_path / "mnt"))
    loaded = load_sources([Source(config_map={"name": "kb"})], tmp_path, namespace="team")
    assert [d.source_id for d in loaded.documents] == ["configmap:team/kb/intro.md"]
    assert not loaded.failures


def test_urls_fetch_html_and_report_http_errors(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok":
            return httpx.Response(200, html="<h1>Remote</h1><p>Fetched over HTTP.</p>")
        return httpx.Response(404, text="missing")

    http = httpx.Client(transport=httpx.MockTransport(handler))
    loaded = load_sources([Source(urls=["https://docs.example.com/ok", "https://docs.example.com/gone"])],
                          tmp_path, http=http)
    (doc,) = loaded.documents
    assert doc.source_id == "url:https://docs.example.com/ok" and "Fetched over HTTP." in doc.text
    assert [f.source_id for f in loaded.failures] == ["url:https://docs.example.com/gone"]


def test_decode_normalises_line_ends_and_nuls():
    assert decode(b"a\r\nb\rc\x00d") == "a\nb\ncd"


def test_very_long_line_loads(tmp_path):
    assert len(extract(b"word" * 500_000, "text", "long.txt").text) == 2_000_000
