"""Both backends of the store facade give the same answers (a Hypothesis property).

For a generated corpus (several pipelines, tenants, groups; dense vectors and sparse term vectors) written
through the facade into the embedded engine (EdgeStore, qdrant-edge-py) and into the server backend
(ServerStore), dense, sparse and hybrid queries under a generated caller's access scope return the same
top-k: the same ids in the same order, up to ties (equal scores may come in either order, and a tie at the
cut may keep either point).

The server backend runs on qdrant-client's local mode here: no Qdrant server binary can be had on these
machines (none on PyPI or in Debian's archive); ServerStore sends a server exactly the same calls.
"""

from __future__ import annotations

import itertools
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient
from raylight_pipelines.store.base import ChunkPoint, Hit, Scope, SearchQuery, Store
from raylight_pipelines.store.edge import EdgeStore
from raylight_pipelines.store.server import ServerStore

DIM = 6
PIPELINES = ["p1", "p2", "p3"]
TENANTS = [None, "acme", "globex"]
GROUPS = ["hr", "eng", "board"]
TOL = 1e-4
VOCAB = 14

# Vectors come from a generated seed (continuous values: ties are as rare as in real embeddings, and a tie
# inside one branch would make the fused RRF scores differ legitimately); everything else is generated.
attributes = st.tuples(st.sampled_from(PIPELINES), st.sampled_from(TENANTS), st.sets(st.sampled_from(GROUPS),
                                                                                    max_size=2), st.integers(0, 5))
corpora = st.tuples(st.integers(0, 2**32 - 1), st.lists(attributes, min_size=1, max_size=60))
scopes = st.builds(Scope, pipeline=st.sampled_from([*PIPELINES, None]), tenant=st.sampled_from(TENANTS),
                   groups=st.lists(st.sampled_from(GROUPS), max_size=2, unique=True).map(tuple))
queries = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(["dense", "sparse", "hybrid"]), st.integers(1, 12))


def vectors(seed: int) -> tuple[list[float], tuple[list[int], list[float]]]:
    rng = np.random.default_rng(seed)
    terms = sorted(rng.choice(VOCAB, size=int(rng.integers(1, 6)), replace=False).tolist())
    return rng.normal(size=DIM).tolist(), (terms, rng.uniform(0.1, 4.0, size=len(terms)).tolist())


def make_corpus(seed: int, attrs: list[Any]) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [(*vectors(int(rng.integers(2**32))), {"pipeline": p, "tenant": t, "groups": sorted(g),
                                                  "source_id": f"doc{src}", "text": f"chunk of doc{src}"})
            for p, t, g, src in attrs]


@pytest.fixture(scope="module")
def folder() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="raylight-agree-") as d:
        yield d


_counter = itertools.count()


def both(folder: str, corpus: list[Any]) -> tuple[Store, Store]:
    points = [ChunkPoint(id=str(uuid.UUID(int=i + 1)), payload=payload, dense=d, sparse=s)
              for i, (d, s, payload) in enumerate(corpus)]
    stores: tuple[Store, Store] = (EdgeStore(f"{folder}/{next(_counter)}"), ServerStore(QdrantClient(":memory:")))
    for s in stores:
        assert s.ensure_collection("c", DIM) is True
        s.upsert("c", points)
        assert s.count("c") == len(points)
    return stores


def agree(a: list[Hit], b: list[Hit]) -> None:
    """Same length, same scores rank by rank; where ids differ, the two are tied (or tied at the cut)."""
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b, strict=True):
        assert abs(x.score - y.score) < TOL, (a, b)
    for mine, theirs in ((a, b), (b, a)):
        where = {h.id: h.score for h in theirs}
        for h in mine:
            if h.id in where:
                assert abs(where[h.id] - h.score) < TOL, (h, a, b)
            else:  # dropped at the cut: only a point tied with the last one may be
                assert abs(h.score - theirs[-1].score) < TOL, (h, a, b)


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(corpus=corpora, asks=st.lists(st.tuples(scopes, queries), min_size=1, max_size=8))
def test_edge_and_server_backends_return_the_same_top_k(folder: str, corpus: tuple[int, list[Any]],
                                                         asks: list[tuple[Scope, Any]]) -> None:
    edge, server = both(folder, make_corpus(*corpus))
    try:
        for scope, (seed, kind, k) in asks:
            d, s = vectors(seed)
            q = SearchQuery(dense=None if kind == "sparse" else d, sparse=None if kind == "dense" else s,
                            hybrid=kind == "hybrid", limit=k, prefetch=2 * k, scope=scope)
            got_edge, got_server = edge.search("c", q), server.search("c", q)
            agree(got_edge, got_server)
            assert all(visible(h.payload, scope) for h in got_edge)
    finally:
        edge.close()
        server.close()


def visible(payload: dict[str, Any], scope: Scope) -> bool:
    return ((scope.pipeline is None or payload["pipeline"] == scope.pipeline)
            and (payload["tenant"] is None or payload["tenant"] == scope.tenant)
            and (not payload["groups"] or bool(set(payload["groups"]) & set(scope.groups))))


def test_every_operation_agrees_on_a_small_corpus(folder: str) -> None:
    """The non-search operations: sync state, vectors, payload updates, deletes by id and by document."""
    corpus = [([1, 0, 0, 0, 0, 0.5], ([1, 2], [1.0, 2.0]), {"pipeline": "p1", "tenant": None, "groups": [],
                                                            "source_id": f"doc{i % 3}", "doc_hash": "h"})
              for i in range(9)]
    stores = both(folder, corpus)
    try:
        views = []
        for s in stores:
            assert s.ensure_collection("c", DIM) is False and s.collection_exists("c")
            s.set_payload("c", [str(uuid.UUID(int=1))], {"doc_hash": "h2"})
            s.delete("c", [str(uuid.UUID(int=2))])
            assert s.delete_document("c", "p1", "doc0") == 3  # points 0, 3, 6 (uuid ints 1, 4, 7)
            state = s.sync_state("c", "p1", ["source_id", "doc_hash"])
            vectors = s.dense_vectors("c", [str(uuid.UUID(int=5)), str(uuid.UUID(int=4)), str(uuid.UUID(int=99))])
            views.append((sorted((k, sorted(v)) for k, v in state.items()),
                          {k: [round(x, 5) for x in v] for k, v in vectors.items()}, s.count("c", "p1"),
                          s.count("c", "p2"), sorted((p.id, p.payload["doc_hash"]) for p in s.points("c"))))
        assert views[0] == views[1]
        assert views[0][2] == 5 and views[0][3] == 0 and list(views[0][1]) == [str(uuid.UUID(int=5))]
    finally:
        for s in stores:
            assert s.delete_collection("c") is True and not s.collection_exists("c")
            s.close()
