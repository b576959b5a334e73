"""Ingestion of a corpus of small awkward documents (tests/unit/ingest/corpus): every entry gives the text
or the skip/failure reason that corpus/expected.json says, and nothing else is added or lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from raylight.api.types import Source
from raylight_pipelines.ingest.documents import Loaded, load_sources
from sample_files import CORPUS, build_corpus

EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("awkward") / "corpus")


@pytest.fixture(scope="module")
def loaded(corpus: Path) -> Loaded:
    return load_sources([Source(path="docs")], corpus)


def test_whole_corpus_loses_nothing_and_adds_nothing(loaded):
    got = {d.source_id.removeprefix("path:docs/") for d in loaded.documents}
    got |= {f.source_id.removeprefix("path:docs/") for f in loaded.failures + loaded.skipped}
    assert got == set(EXPECTED)
    assert loaded.complete == {"path:docs"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_entry_gives_its_text_or_reason(loaded, name):
    want = EXPECTED[name]
    sid = f"path:docs/{name}"
    if "skipped" in want or "failed" in want:
        kind = "skipped" if "skipped" in want else "failed"
        (reason,) = [f.reason for f in (loaded.skipped if kind == "skipped" else loaded.failures) if f.source_id == sid]
        assert want[kind] in reason
        return
    (doc,) = [d for d in loaded.documents if d.source_id == sid]
    assert doc.text == want.get("text", doc.text)
    assert all(part in doc.text for part in want.get("contains", []))
    assert len(doc.text) == want.get("length", len(doc.text))
    assert doc.title == want.get("title", doc.title)
    assert [h for _, _, h in doc.headings] == want.get("headings", [h for _, _, h in doc.headings])
    assert [n for n, _ in doc.pages] == want.get("pages", [n for n, _ in doc.pages])
    for offset, _, title in doc.headings:
        assert title in doc.text[offset:].splitlines()[0] or doc.text[offset:].startswith(title)


def test_hidden_files_are_an_explicit_opt_in_but_secrets_and_git_never(corpus):
    loaded = load_sources([Source(path="docs", hidden=True)], corpus)
    ids = {d.source_id for d in loaded.documents}
    assert "path:docs/.github/CONTRIBUTING.md" in ids
    reasons = {s.source_id: s.reason for s in loaded.skipped}
    assert "secrets" in reasons["path:docs/.env"] and "version-control" in reasons["path:docs/.git/"]
    assert not any(".env" in i or ".git/" in i for i in ids)
