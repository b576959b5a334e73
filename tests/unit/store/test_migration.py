"""A data folder written by the old store (qdrant-client's local mode) is migrated on open: every point (id,
payload, dense and sparse vectors) lands in the embedded engine, the old folder is kept aside, a re-sync of
the unchanged corpus then embeds 0 and writes 0, and an interrupted migration restarts cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from raylight.api.types import Source
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.store.base import StoreUnavailable
from raylight_pipelines.store.edge import MIGRATED_SUFFIX, MIGRATION_MARK, EdgeStore, migrate_local_mode
from raylight_pipelines.store.server import ServerStore
from retrieval_fakes import CountingEmbedder

DOCS = [{"id": f"d{i}", "text": f"Document {i} explains how part {i} of the system handles load and retries."}
        for i in range(12)]


def old_store(folder: Path, tokenizer, tmp_path: Path) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    """Fill a local-mode folder as Raylight did before the engine; returns its points."""
    server = ServerStore(QdrantClient(path=str(folder)))
    sources = [Source(documents=DOCS[:6]), Source(documents=DOCS[6:], access={"tenant": "acme", "groups": ["hr"]})]
    sync(server, "col", "p", load_sources(sources, tmp_path), CountingEmbedder(), tokenizer, 64, 8)
    points = view(server.points("col"))
    server.close()
    return points


def view(points: list) -> dict[str, tuple]:  # type: ignore[type-arg]
    """id -> (payload, dense, sparse), floats to float32 precision (the engine stores float32)."""
    return {p.id: (p.payload, [round(x, 5) for x in p.dense],
                   (list(p.sparse[0]), [round(v, 5) for v in p.sparse[1]]) if p.sparse else None) for p in points}


def test_old_local_mode_folder_is_migrated_with_every_point(tmp_path, tokenizer):
    folder = tmp_path / "qdrant"
    before = old_store(folder, tokenizer, tmp_path)
    assert len(before) == 12
    store = EdgeStore(folder)  # what `raylight up` / `raylight search` open
    try:
        after = view(store.points("col"))
        assert after == before
        assert (tmp_path / f"qdrant{MIGRATED_SUFFIX}" / "meta.json").exists() and (folder / MIGRATION_MARK).exists()
        embedder = CountingEmbedder()
        sources = [Source(documents=DOCS[:6]), Source(documents=DOCS[6:], access={"tenant": "acme",
                                                                                  "groups": ["hr"]})]
        report = sync(store, "col", "p", load_sources(sources, tmp_path), embedder, tokenizer, 64, 8)
        assert (report.unchanged, report.chunks_embedded, report.points_upserted, report.points_deleted) == \
            (12, 0, 0, 0)
        assert embedder.texts == []
    finally:
        store.close()
    assert migrate_local_mode(folder) is False  # done once; opening again changes nothing
    reopened = EdgeStore(folder)
    assert reopened.count("col") == 12
    reopened.close()


def test_interrupted_migration_starts_over_from_the_old_folder(tmp_path, tokenizer):
    folder = tmp_path / "qdrant"
    before = old_store(folder, tokenizer, tmp_path)
    folder.rename(tmp_path / f"qdrant{MIGRATED_SUFFIX}")  # as a migration killed after its first step leaves it
    (folder / "col").mkdir(parents=True)
    (folder / "col" / "junk").write_text("half-written")
    store = EdgeStore(folder)
    try:
        assert {p.id for p in store.points("col")} == set(before)
    finally:
        store.close()


def test_migration_refuses_when_both_folders_exist(tmp_path, tokenizer):
    folder = tmp_path / "qdrant"
    old_store(folder, tokenizer, tmp_path)
    (tmp_path / f"qdrant{MIGRATED_SUFFIX}").mkdir()
    with pytest.raises(StoreUnavailable, match=r"move one of them away"):
        EdgeStore(folder)
