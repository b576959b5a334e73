"""Incremental sync: what a re-run embeds, updates and deletes, and convergence after a crash at any write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from raylight.api.types import Source
from raylight_pipelines.ingest.chunking import HFTokenizer
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import SyncReport, sync
from retrieval_fakes import CountingEmbedder

SIZE, OVERLAP = 32, 8


def section(name: str, n: int) -> str:
    return f"# {name}\n\n" + "\n\n".join(
        f"Paragraph {i} of {name} explains how the {name.lower()} component handles request number {i} "
        f"with care." for i in range(n))


def write_corpus(root: Path, files: dict[str, str]) -> None:
    for p in root.rglob("*.md"):
        p.unlink()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


CORPUS = {"a.md": section("Alpha", 6), "b.md": section("Beta", 5), "sub/c.md": section("Gamma", 4)}


def run(store: Any, root: Path, embedder: Any, tok: HFTokenizer, **kw: Any) -> SyncReport:
    loaded = load_sources([Source(path="docs", include=["**/*.md"])], root.parent)
    return sync(store, "col", "p", loaded, embedder, tok, SIZE, OVERLAP, batch_size=4, **kw)


def point_ids(store: Any) -> set[str]:
    return {p.id for p in store.points("col", with_vectors=False)}


def snapshot(store: Any) -> dict[str, tuple[Any, ...]]:
    return {p.id: (p.payload["doc_hash"], p.payload["chunk_count"], p.payload["text"],
                   tuple(round(x, 5) for x in p.dense), p.sparse) for p in store.points("col")}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write_corpus(root, CORPUS)
    return root


def test_first_run_adds_every_document_and_rerun_embeds_nothing(store, docs, embedder, tokenizer):
    first = run(store, docs, embedder, tokenizer)
    assert (first.added, first.updated, first.unchanged, first.deleted, first.failed) == (3, 0, 0, 0, 0)
    assert first.chunks_embedded == first.points > 6
    before = snapshot(store)
    embedder.texts.clear()
    second = run(store, docs, embedder, tokenizer)
    assert (second.added, second.updated, second.unchanged, second.deleted) == (0, 0, 3, 0)
    assert embedder.texts == [] and second.points_upserted == 0 and second.points_deleted == 0
    assert snapshot(store) == before


def test_edit_reembeds_only_changed_chunks_and_removes_stale_ones(store, new_store, docs, embedder, tokenizer):
    run(store, docs, embedder, tokenizer)
    before = snapshot(store)
    edited = section("Alpha", 6).replace("request number 5", "request number 5 and a brand-new topic")
    write_corpus(docs, {**CORPUS, "a.md": edited})
    embedder.texts.clear()
    report = run(store, docs, embedder, tokenizer)
    assert (report.added, report.updated, report.unchanged, report.deleted) == (0, 1, 2, 0)
    assert embedder.texts and all("Alpha" in t for t in embedder.texts)  # only a.md's chunks
    assert any("brand-new topic" in t for t in embedder.texts)
    assert len(embedder.texts) < sum(1 for v in before.values() if "Alpha" in v[2] or "alpha" in v[2])
    # the result is exactly what a fresh run on the edited corpus produces
    fresh = new_store()
    run(fresh, docs, CountingEmbedder(), tokenizer)
    assert snapshot(store) == snapshot(fresh)
    assert not any("request number 5 with care" in v[2] for v in snapshot(store).values())


def test_inserting_a_section_reuses_vectors_of_shifted_chunks(store, docs, embedder, tokenizer):
    run(store, docs, embedder, tokenizer)
    preface = "A preface paragraph that comes before everything else in the file.\n\n"
    write_corpus(docs, {**CORPUS, "b.md": preface + section("Beta", 5)})
    embedder.texts.clear()
    report = run(store, docs, embedder, tokenizer)
    assert report.updated == 1 and report.chunks_reused > 0
    assert embedder.texts == [preface.strip()]


def test_deleted_file_loses_its_chunks(store, docs, embedder, tokenizer):
    run(store, docs, embedder, tokenizer)
    write_corpus(docs, {k: v for k, v in CORPUS.items() if k != "sub/c.md"})
    report = run(store, docs, embedder, tokenizer)
    assert (report.deleted, report.unchanged, report.chunks_embedded) == (1, 2, 0)
    assert {p.payload["source_id"] for p in store.points("col")} == {"path:docs/a.md", "path:docs/b.md"}


def test_missing_source_directory_keeps_its_chunks(store, docs, embedder, tokenizer):
    run(store, docs, embedder, tokenizer)
    ids = point_ids(store)
    docs.rename(docs.parent / "moved")
    report = run(store, docs, embedder, tokenizer)
    assert report.failed == 1 and report.deleted == 0 and point_ids(store) == ids


def test_broken_file_keeps_its_last_good_chunks(store, docs, embedder, tokenizer):
    run(store, docs, embedder, tokenizer)
    ids = point_ids(store)
    (docs / "b.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00binary")
    report = run(store, docs, embedder, tokenizer)
    assert (report.failed, report.deleted, report.unchanged) == (1, 0, 2)
    assert report.failures[0]["source"] == "path:docs/b.md" and "binary" in report.failures[0]["reason"]
    assert point_ids(store) == ids


class Crash(Exception):
    pass


def crash_at(n: int) -> Any:
    calls = {"n": 0}

    def fault(stage: str) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash(stage)
    return fault


def count_writes(store: Any, docs: Path, tokenizer: HFTokenizer) -> list[str]:
    calls: list[str] = []
    run(store, docs, CountingEmbedder(), tokenizer, fault=calls.append)
    return calls


V2 = {"a.md": section("Alpha", 3), "b.md": section("Beta", 5).replace("with care", "quickly"),
      "d.md": section("Delta", 4)}


def test_crash_at_every_write_then_rerun_converges_exactly(tmp_path, new_store, tokenizer):
    """v1 ingested, then an edit/add/delete run (v2) crashes at write k (every k); the re-run must leave
    exactly the points of a clean v2 ingestion: same ids, payload and vectors, nothing extra."""
    docs = tmp_path / "docs"
    write_corpus(docs, V2)
    expected_client = new_store()
    run(expected_client, docs, CountingEmbedder(), tokenizer)
    expected = snapshot(expected_client)
    write_corpus(docs, CORPUS)
    probe = new_store()
    run(probe, docs, CountingEmbedder(), tokenizer)
    write_corpus(docs, V2)
    stages = count_writes(probe, docs, tokenizer)
    assert {"upsert", "set_payload", "delete"} <= set(stages), stages  # every kind of write is crashed
    for k in range(1, len(stages) + 1):
        store = new_store()
        write_corpus(docs, CORPUS)
        run(store, docs, CountingEmbedder(), tokenizer)
        write_corpus(docs, V2)
        with pytest.raises(Crash):
            run(store, docs, CountingEmbedder(), tokenizer, fault=crash_at(k))
        again = run(store, docs, CountingEmbedder(), tokenizer)
        assert again.failed == 0
        assert snapshot(store) == expected, f"diverged after a crash at write {k}"
        final = run(store, docs, CountingEmbedder(), tokenizer)
        assert final.unchanged == 3 and final.chunks_embedded == 0, f"not stable after crash at {k}"


def test_crash_during_first_ingestion_then_rerun_converges(tmp_path, new_store, tokenizer):
    docs = tmp_path / "docs"
    write_corpus(docs, CORPUS)
    expected_client = new_store()
    run(expected_client, docs, CountingEmbedder(), tokenizer)
    for k in (1, 2, 3):
        store = new_store()
        with pytest.raises(Crash):
            run(store, docs, CountingEmbedder(), tokenizer, fault=crash_at(k))
        run(store, docs, CountingEmbedder(), tokenizer)
        assert snapshot(store) == snapshot(expected_client)


def test_changing_access_rewrites_payload(store, docs, embedder, tokenizer):
    run(store, docs, embedder, tokenizer)
    loaded = load_sources([Source(path="docs", include=["**/*.md"], access={"tenant": "acme",
                                                                           "groups": ["eng"]})], docs.parent)
    report = sync(store, "col", "p", loaded, embedder, tokenizer, SIZE, OVERLAP)
    assert report.updated == 3 and report.chunks_embedded == 0  # vectors reused, only payload changed
    assert {(p.payload["tenant"], tuple(p.payload["groups"])) for p in store.points("col")} == {("acme", ("eng",))}


def test_removed_source_deletes_its_documents(store, docs, embedder, tokenizer):
    (docs.parent / "notes").mkdir()
    (docs.parent / "notes" / "n.txt").write_text("A note about gamma rays and other things.")
    sources = [Source(path="docs", include=["**/*.md"]), Source(path="notes")]
    sync(store, "col", "p", load_sources(sources, docs.parent), embedder, tokenizer, SIZE, OVERLAP)
    report = sync(store, "col", "p", load_sources(sources[:1], docs.parent), embedder, tokenizer, SIZE, OVERLAP)
    assert report.deleted == 1 and report.unchanged == 3


def test_the_summary_fits_a_termination_message_and_says_when_it_is_cut():
    report = SyncReport(added=2, skipped=300, failed=1,
                        skips=[{"source": f"path:docs/.cache/{i}.md", "reason": "hidden"} for i in range(300)],
                        failures=[{"source": "path:docs/x.pdf", "reason": "cannot read PDF"}])
    summary = report.summary()
    assert len(json.dumps(summary).encode()) <= 4096 and summary["listed"] is False
    assert summary["failures"] and 0 < len(summary["skips"]) < 300 and summary["skipped"] == 300
    assert SyncReport(skipped=1, skips=[{"source": "a", "reason": "b"}]).summary()["listed"] is True
