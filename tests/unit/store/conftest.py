"""The store tests share the pipeline fixtures (tests/pipeline_fixtures.py)."""

from pipeline_fixtures import embedder, new_store, store, tokenizer

__all__ = ["embedder", "new_store", "store", "tokenizer"]
