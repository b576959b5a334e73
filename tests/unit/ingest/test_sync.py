"""Incremental sync: what a re-run embeds, updates and deletes, and convergence after a crash at any write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
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


def run(client: Any, root: Path, embedder: Any, tok: HFTokenizer, **kw: Any) -> SyncReport:
    loaded = load_sources([Source(path="docs", include=["**/*.md"])], root.parent)
    return sync(client, "col", "p", loaded, embedder, tok, SIZE, OVERLAP, batch_size=4, **kw)


def point_ids(client: Any) -> set[str]:
    records, _ = client.scroll("col", limit=10_000, with_payload=False)
    return {str(r.id) for r in records}


def snapshot(client: Any) -> dict[str, tuple[Any, ...]]:
    records, _ = client.scroll("col", limit=10_000, with_payload=True, with_vectors=True)
    return {str(r.id): (r.payload["doc_hash"], r.payload["chunk_count"], r.payload["text"],
                        tuple(round(x, 5) for x in r.vector["dense"])) for r in records}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write_corpus(root, CORPUS)
    return root


def test_first_run_adds_every_document_and_rerun_embeds_nothing(client, docs, embedder, tokenizer):
    first = run(client, docs, embedder, tokenizer)
    assert (first.added, first.updated, first.unchanged, first.deleted, first.failed) == (3, 0, 0, 0, 0)
    assert first.chunks_embedded == first.points > 6
    before = snapshot(client)
    embedder.texts.clear()
    second = run(client, docs, embedder, tokenizer)
    assert (second.added, second.updated, second.unchanged, second.deleted) == (0, 0, 3, 0)
    assert embedder.texts == [] and second.points_upserted == 0 and second.points_deleted == 0
    assert snapshot(client) == before


def test_edit_reembeds_only_changed_chunks_and_removes_stale_ones(client, docs, embedder, tokenizer):
    run(client, docs, embedder, tokenizer)
    before = snapshot(client)
    edited = section("Alpha", 6).replace("request number 5", "request number 5 and a brand-new topic")
    write_corpus(docs, {**CORPUS, "a.md": edited})
    embedder.texts.clear()
    report = run(client, docs, embedder, tokenizer)
    assert (report.added, report.updated, report.unchanged, report.deleted) == (0, 1, 2, 0)
    assert embedder.texts and all("Alpha" in t for t in embedder.texts)  # only a.md's chunks
    assert any("brand-new topic" in t for t in embedder.texts)
    assert len(embedder.texts) < sum(1 for v in before.values() if "Alpha" in v[2] or "alpha" in v[2])
    # the result is exactly what a fresh run on the edited corpus produces
    fresh = QdrantClient(":memory:")
    run(fresh, docs, CountingEmbedder(), tokenizer)
    assert snapshot(client) == snapshot(fresh)
    assert not any("request number 5 with care" in v[2] for v in snapshot(client).values())


def test_inserting_a_section_reuses_vectors_of_shifted_chunks(client, docs, embedder, tokenizer):
    run(client, docs, embedder, tokenizer)
    preface = "A preface paragraph that comes before everything else in the file.\n\n"
    write_corpus(docs, {**CORPUS, "b.md": preface + section("Beta", 5)})
    embedder.texts.clear()
    report = run(client, docs, embedder, tokenizer)
    assert report.updated == 1 and report.chunks_reused > 0
    assert embedder.texts == [preface.strip()]


def test_deleted_file_loses_its_chunks(client, docs, embedder, tokenizer):
    run(client, docs, embedder, tokenizer)
    write_corpus(docs, {k: v for k, v in CORPUS.items() if k != "sub/c.md"})
    report = run(client, docs, embedder, tokenizer)
    assert (report.deleted, report.unchanged, report.chunks_embedded) == (1, 2, 0)
    records, _ = client.scroll("col", limit=10_000, with_payload=True)
    assert {r.payload["source_id"] for r in records} == {"path:docs/a.md", "path:docs/b.md"}


def test_missing_source_directory_keeps_its_chunks(client, docs, embedder, tokenizer):
    run(client, docs, embedder, tokenizer)
    ids = point_ids(client)
    docs.rename(docs.parent / "moved")
    report = run(client, docs, embedder, tokenizer)
    assert report.failed == 1 and report.deleted == 0 and point_ids(client) == ids


def test_broken_file_keeps_its_last_good_chunks(client, docs, embedder, tokenizer):
    run(client, docs, embedder, tokenizer)
    ids = point_ids(client)
    (docs / "b.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00binary")
    report = run(client, docs, embedder, tokenizer)
    assert (report.failed, report.deleted, report.unchanged) == (1, 0, 2)
    assert report.failures[0]["source"] == "path:docs/b.md" and "binary" in report.failures[0]["reason"]
    assert point_ids(client) == ids


class Crash(Exception):
    pass


def crash_at(n: int) -> Any:
    calls = {"n": 0}

    def fault(stage: str) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash(stage)
    return fault


def count_writes(client: Any, docs: Path, tokenizer: HFTokenizer) -> list[str]:
    calls: list[str] = []
    run(client, docs, CountingEmbedder(), tokenizer, fault=calls.append)
    return calls


V2 = {"a.md": section("Alpha", 3), "b.md": section("Beta", 5).replace("with care", "quickly"),
      "d.md": section("Delta", 4)}


def test_crash_at_every_write_then_rerun_converges_exactly(tmp_path, tokenizer):
    """v1 ingested, then an edit/add/delete run (v2) crashes at write k (every k); the re-run must leave
    exactly the points of a clean v2 ingestion: same ids, payload and vectors, nothing extra."""
    docs = tmp_path / "docs"
    write_corpus(docs, V2)
    expected_client = QdrantClient(":memory:")
    run(expected_client, docs, CountingEmbedder(), tokenizer)
    expected = snapshot(expected_client)
    write_corpus(docs, CORPUS)
    probe = QdrantClient(":memory:")
    run(probe, docs, CountingEmbedder(), tokenizer)
    write_corpus(docs, V2)
    stages = count_writes(probe, docs, tokenizer)
    assert {"upsert", "set_payload", "delete"} <= set(stages), stages  # every kind of write is crashed
    for k in range(1, len(stages) + 1):
        client = QdrantClient(":memory:")
        write_corpus(docs, CORPUS)
        run(client, docs, CountingEmbedder(), tokenizer)
        write_corpus(docs, V2)
        with pytest.raises(Crash):
            run(client, docs, CountingEmbedder(), tokenizer, fault=crash_at(k))
        again = run(client, docs, CountingEmbedder(), tokenizer)
        assert again.failed == 0
        assert snapshot(client) == expected, f"diverged after a crash at write {k}"
        final = run(client, docs, CountingEmbedder(), tokenizer)
        assert final.unchanged == 3 and final.chunks_embedded == 0, f"not stable after crash at {k}"


def test_crash_during_first_ingestion_then_rerun_converges(tmp_path, tokenizer):
    docs = tmp_path / "docs"
    write_corpus(docs, CORPUS)
    expected_client = QdrantClient(":memory:")
    run(expected_client, docs, CountingEmbedder(), tokenizer)
    for k in (1, 2, 3):
        client = QdrantClient(":memory:")
        with pytest.raises(Crash):
            run(client, docs, CountingEmbedder(), tokenizer, fault=crash_at(k))
        run(client, docs, CountingEmbedder(), tokenizer)
        assert snapshot(client) == snapshot(expected_client)


def test_changing_access_rewrites_payload(client, docs, embedder, tokenizer):
    run(client, docs, embedder, tokenizer)
    loaded = load_sources([Source(path="docs", include=["**/*.md"], access={"tenant": "acme",
                                                                           "groups": ["eng"]})], docs.parent)
    report = sync(client, "col", "p", loaded, embedder, tokenizer, SIZE, OVERLAP)
    assert report.updated == 3 and report.chunks_embedded == 0  # vectors reused, only payload changed
    records, _ = client.scroll("col", limit=10_000, with_payload=True)
    assert {(r.payload["tenant"], tuple(r.payload["groups"])) for r in records} == {("acme", ("eng",))}


def test_removed_source_deletes_its_documents(client, docs, embedder, tokenizer):
    (docs.parent / "notes").mkdir()
    (docs.parent / "notes" / "n.txt").write_text("A note about gamma rays and other things.")
    sources = [Source(path="docs", include=["**/*.md"]), Source(path="notes")]
    sync(client, "col", "p", load_sources(sources, docs.parent), embedder, tokenizer, SIZE, OVERLAP)
    report = sync(client, "col", "p", load_sources(sources[:1], docs.parent), embedder, tokenizer, SIZE, OVERLAP)
    assert report.deleted == 1 and report.unchanged == 3


def test_the_summary_fits_a_termination_message_and_says_when_it_is_cut():
    report = SyncReport(added=2, skipped=300, failed=1,
                        skips=[{"source": f"path:docs/.cache/{i}.md", "reason": "hidden"} for i in range(300)],
                        failures=[{"source": "path:docs/x.pdf", "reason": "cannot read PDF"}])
    summary = report.summary()
    assert len(json.dumps(summary).encode()) <= 4096 and summary["listed"] is False
    assert summary["failures"] and 0 < len(summary["skips"]) < 300 and summary["skipped"] == 300
    assert SyncReport(skipped=1, skips=[{"source": "a", "reason": "b"}]).summary()["listed"] is True
