"""The retrieval tests share the pipeline fixtures (tests/pipeline_fixtures.py)."""

from pipeline_fixtures import client, embedder, tokenizer

__all__ = ["client", "embedder", "tokenizer"]
