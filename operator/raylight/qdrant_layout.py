"""The Qdrant collection layout: one owner for the operator (which creates a Pipeline's collection on a
server) and the data plane (which creates it when it ingests and queries it)."""

from __future__ import annotations

import warnings
from typing import Any

DENSE = "dense"  # named dense vector, Cosine
SPARSE = "bm25"  # sparse BM25 term frequencies; Qdrant applies IDF
# Every payload field a filter uses (the access filter, the pipeline, the sync's per-document reads and the
# search API's metadata filters) -> index kind ("tenant" is Qdrant's tenant-optimised keyword index).
PAYLOAD_INDEXES = {"tenant": "tenant", "groups": "keyword", "source_id": "keyword", "pipeline": "keyword",
                   "title": "keyword", "heading": "keyword", "page": "integer"}


class CollectionMismatch(ValueError):
    """The collection exists with another dense vector size than the embedder makes."""


def ensure_collection(client: Any, collection: str, dimensions: int, sparse: bool = True) -> bool:
    """Create the collection (named dense vector, Cosine; sparse BM25 with IDF) and its payload indexes;
    True when it was created now. An existing collection with another vector size is a CollectionMismatch."""
    from qdrant_client import models as qm

    if client.collection_exists(collection):
        vectors = client.get_collection(collection).config.params.vectors
        size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
        if size != dimensions:
            raise CollectionMismatch(f"collection {collection!r} has dense vectors of size {size}, the embedder "
                                     f"makes {dimensions}; use another collection or delete it")
        return False
    client.create_collection(
        collection,
        vectors_config={DENSE: qm.VectorParams(size=dimensions, distance=qm.Distance.COSINE)},
        sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)} if sparse else None,
    )
    with warnings.catch_warnings():  # an embedded store ignores payload indexes and says so
        warnings.simplefilter("ignore")
        for field, kind in PAYLOAD_INDEXES.items():
            schema: Any = (qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True)
                           if kind == "tenant" else qm.PayloadSchemaType.INTEGER if kind == "integer"
                           else qm.PayloadSchemaType.KEYWORD)
            client.create_payload_index(collection, field, field_schema=schema)
    return True
