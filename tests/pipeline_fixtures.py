"""Fixtures for the ingestion and retrieval unit tests: the fake embedder, the real MiniLM tokenizer (loads in
well under a second) and the embedded store (Qdrant's engine, qdrant-edge-py) in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from raylight_pipelines.ingest.chunking import HFTokenizer, load_tokenizer
from raylight_pipelines.store.edge import EdgeStore
from retrieval_fakes import MINILM, CountingEmbedder


@pytest.fixture
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture(scope="session")
def tokenizer() -> HFTokenizer:
    tok = load_tokenizer(MINILM)
    assert isinstance(tok, HFTokenizer), "the MiniLM tokenizer must load from its package"
    return tok


@pytest.fixture
def new_store(tmp_path: Path) -> Iterator[Callable[[], EdgeStore]]:
    """Makes a fresh embedded store in its own folder (the engine has no in-memory mode); all closed after."""
    made: list[EdgeStore] = []

    def make() -> EdgeStore:
        made.append(EdgeStore(tmp_path / f"store-{len(made)}"))
        return made[-1]
    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(new_store: Callable[[], EdgeStore]) -> EdgeStore:
    return new_store()
