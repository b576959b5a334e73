"""Fixtures for the ingestion and retrieval unit tests: the fake embedder, the real MiniLM tokenizer (loads in
well under a second) and an in-memory Qdrant."""

from __future__ import annotations

from typing import Any

import pytest
from qdrant_client import QdrantClient
from raylight_pipelines.ingest.chunking import HFTokenizer, load_tokenizer
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
def client() -> Any:
    c = QdrantClient(":memory:")
    yield c
    c.close()
