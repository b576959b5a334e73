"""Loaders: formats, globs, odd encodings, broken and binary files (reported, never fatal)."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import httpx
from raylight.api.types import Source
from raylight_pipelines.ingest.documents import glob_regex, load_sources
from raylight_pipelines.ingest.extract import decode, extract
from sample_files import make_pdf


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
    monkeypatch.setattr("raylight_pipelines.ingest.documents.CONFIGMAP_MOUNT_ROOT", str(tmp_path / "mnt"))
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


def test_issue_secrets_and_hidden_files_are_skipped_and_listed(tmp_path):
    # Issue #14, input 1: docs/.env and docs/.git/config were ingested, and the .env was the top hit.
    loaded = load_dir(tmp_path, {
        "handbook.md": b"# Handbook\n\nAsk the platform team for an API key.",
        ".env": b"API_KEY=sk-example-not-real\n",
        ".git/config": b'[remote "origin"]\n\turl = https://ghp_exampletoken@github.com/acme/docs.git\n',
    })
    assert [d.source_id for d in loaded.documents] == ["path:docs/handbook.md"]
    assert {s.source_id: s.reason.split(" (")[0] for s in loaded.skipped} == {
        "path:docs/.env": "may hold secrets", "path:docs/.git/": "version-control metadata"}
    assert not any("sk-example" in d.text or "ghp_" in d.text for d in loaded.documents)


def test_issue_html_tables_and_definition_lists_keep_cells_apart():
    # Issue #14, input 2: cells ran together ("PlanPrice", "Basic10", "Regioneu-west").
    html = (b"<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Basic</td><td>10</td></tr>"
            b"<tr><td>Pro</td><td>20</td></tr></table><dl><dt>Region</dt><dd>eu-west</dd></dl>")
    text = extract(html, "html", "plans.html").text
    assert text == ("| Plan | Price |\n| --- | --- |\n| Basic | 10 |\n| Pro | 20 |\n\n"
                    "Region\n:   eu-west")


def test_issue_cp1252_text_is_not_misread():
    # Issue #14, input 3: cp1252 bytes decoded as cp1250 ("ńandú", "je suis ŕ").
    for text in ("ñandú, ándale", "je suis à", "Ça coûte 10 €", "naïve façade — déjà vu"):
        assert decode(text.encode("cp1252")) == text
    assert decode("Grüße aus Köln".encode("latin-1")) == "Grüße aus Köln"
    # other legacy encodings are still detected
    assert decode("Привет, как дела? Это текст на русском языке.".encode("cp1251")).startswith("Привет")
    assert decode("Zażółć gęślą jaźń, to jest polski tekst".encode("cp1250")).startswith("Zażółć")


def test_configmap_and_url_sources_follow_the_same_rules(tmp_path):
    cm = SimpleNamespace(data={"guide.md": "# Guide", ".env": "TOKEN=x", ".hidden.md": "# Hidden",
                               "key.pem": "-----BEGIN PRIVATE KEY-----"}, binary_data=None)
    api = SimpleNamespace(read_namespaced_config_map=lambda name, ns: cm)
    loaded = load_sources([Source(config_map={"name": "kb"})], tmp_path, k8s_api=api)
    assert [d.source_id for d in loaded.documents] == ["configmap:default/kb/guide.md"]
    assert {s.source_id.rsplit("/", 1)[1] for s in loaded.skipped} == {".env", ".hidden.md", "key.pem"}

    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        return httpx.Response(200, text="# Page\n\n-----BEGIN RSA PRIVATE KEY-----" if "key" in request.url.path
                              else "# Page", headers={"content-type": "text/plain"})

    urls = ["https://x.example/docs/page", "https://x.example/.env", "https://x.example/.git/config",
            "https://x.example/key"]
    loaded = load_sources([Source(urls=urls)], tmp_path, http=httpx.Client(transport=httpx.MockTransport(handler)))
    assert [d.source_id for d in loaded.documents] == ["url:https://x.example/docs/page"]
    assert len(loaded.skipped) == 3 and fetched == ["/docs/page", "/key"]  # never fetched: .env, .git


def test_symlinks_are_followed_only_inside_the_root(tmp_path):
    (tmp_path / "secret-notes.md").write_text("# Outside")
    (tmp_path / "docs" / "shared").mkdir(parents=True)
    (tmp_path / "docs" / "shared" / "a.md").write_text("# A")
    (tmp_path / "docs" / "out.md").symlink_to(tmp_path / "secret-notes.md")
    (tmp_path / "docs" / "outdir").symlink_to(tmp_path)
    (tmp_path / "docs" / "alias").symlink_to(tmp_path / "docs" / "shared")
    loaded = load_sources([Source(path="docs")], tmp_path)
    assert [d.source_id for d in loaded.documents] == ["path:docs/alias/a.md"]  # name order: alias first
    assert {s.source_id: s.reason for s in loaded.skipped} == {
        "path:docs/out.md": "symbolic link leads outside the source root",
        "path:docs/outdir/": "symbolic link leads outside the source root",
        "path:docs/shared/a.md": "same file as alias/a.md"}
