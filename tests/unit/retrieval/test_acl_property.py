"""The ACL at the retrieval filter, as a property (Hypothesis): for generated callers against a corpus whose
documents carry generated tenants and groups (Unicode, NUL, zero-width characters, 257-character names,
names that differ only in case or a trailing space), a caller retrieves exactly the chunks its tenant and
groups allow, never one more, through the real ingestion (`sync`), the real filter and the real search.

10,000 generated callers per CI run (`ACL_CALLERS`: examples of 10 callers each), each checked against every
chunk of the corpus."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raylight.api.types import Retrieval, Source
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.retrieval.retriever import Caller, Retriever
from raylight_pipelines.store.edge import EdgeStore
from raylight_pipelines.store.qdrant import SearchQuery
from retrieval_fakes import CountingEmbedder

ACL_CALLERS = int(os.environ.get("ACL_CALLERS", "10000"))
PER_EXAMPLE = 10
TENANTS = ["acme", "Acme", "acme ", "a\u200bcme", "ac\x00me", "ünïcødé", "x" * 257]
GROUPS = ["hr", "finance", "財務", "hr\u200b"]
NAMES = [*TENANTS, *GROUPS]


def corpus() -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(document id, tenant, groups): every tenant (or none) with no group, each single group, and two."""
    group_sets: list[tuple[str, ...]] = [(), *[(g,) for g in GROUPS], (GROUPS[0], GROUPS[2])]
    return [(f"d{i}", tenant, groups)
            for i, (tenant, groups) in enumerate(itertools.product([None, *TENANTS], group_sets))]


DOCS = corpus()


def may_see(caller: Caller, tenant: str | None, groups: tuple[str, ...]) -> bool:
    """The rule the README states: no tenant or the caller's, and no groups or one of the caller's."""
    return (tenant is None or tenant == caller.tenant) and (not groups or bool(set(groups) & set(caller.groups)))


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from raylight_pipelines.ingest.chunking import load_tokenizer
    from retrieval_fakes import MINILM

    client = EdgeStore(tmp_path_factory.mktemp("store"))
    sources = [Source(documents=[{"id": doc, "text": f"Quarterly report {doc} for the budget review."}],
                   access={"tenant": tenant, "groups": list(groups)}) for doc, tenant, groups in DOCS]
    embedder = CountingEmbedder()
    sync(client, "col", "p", load_sources(sources, tmp_path_factory.mktemp("acl")), embedder,
         load_tokenizer(MINILM), 64, 8)
    yield Retriever(client, "col", embedder, Retrieval(top_k=100), pipeline="p")
    client.close()


def source_id(point: Any) -> str:
    return str(point.payload["source_id"]).rsplit(":", 1)[-1]


names = st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=40))
callers = st.builds(Caller, user=st.none() | st.text(max_size=20), tenant=st.none() | names,
                    groups=st.lists(names, max_size=5).map(tuple))


@settings(max_examples=ACL_CALLERS // PER_EXAMPLE, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(group=st.lists(callers, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_a_caller_retrieves_exactly_the_chunks_its_tenant_and_groups_allow(retriever: Retriever,
                                                                          group: list[Caller]) -> None:
    for caller in group:
        # an exact dense search with a limit above the corpus returns every point the scope lets through
        points = retriever.store.search("col", SearchQuery(dense=[1.0] + [0.0] * 15, limit=10_000,
                                                           scope=retriever.scope(caller)))
        allowed = {doc for doc, tenant, groups in DOCS if may_see(caller, tenant, groups)}
        assert {source_id(p) for p in points} == allowed, caller


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(caller=callers, hybrid=st.booleans())
def test_search_never_returns_a_chunk_the_filter_forbids(retriever: Retriever, caller: Caller, hybrid: bool) -> None:
    hits = retriever.search("budget review report", caller, hybrid=hybrid)
    allowed = {doc for doc, tenant, groups in DOCS if may_see(caller, tenant, groups)}
    assert {h.source.rsplit(":", 1)[-1] for h in hits} <= allowed
