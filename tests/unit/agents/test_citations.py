"""Citation validation, streamed reference cleaning and the deterministic relevance check."""

from __future__ import annotations

import random

from raylight_agents import registry
from raylight_agents.graphs.base import Chunk, RefFilter, cite, clean_refs, relevant


def chunk(i: int, text: str = "text") -> Chunk:
    return {"id": f"c{i}", "source": f"s{i}.md", "title": None, "text": text, "score": 1.0}


def test_registry_maps_rag_and_agentic_rag_to_graph_factories() -> None:
    assert {"rag", "agentic-rag"} <= set(registry.names())
    assert callable(registry.get("rag"))


def test_unknown_graph_name_lists_the_known_ones() -> None:
    try:
        registry.get("nope")
    except KeyError as exc:
        assert "rag" in str(exc)
    else:
        raise AssertionError("expected KeyError")


def test_cite_keeps_only_references_to_sources_the_model_was_given() -> None:
    answer, citations, grounding = cite("Ray scales [1]. Qdrant stores [7]. Both [2, 9].",
                                        [chunk(1), chunk(2)], structured=False)
    assert answer == "Ray scales [1]. Qdrant stores. Both [2]."
    assert [c["id"] for c in citations] == ["c1", "c2"]
    assert [c["ref"] for c in citations] == [1, 2]
    assert grounding == "cited"


def test_cite_without_valid_references_lists_the_given_sources_as_context_not_as_cited() -> None:
    answer, citations, grounding = cite("An answer [5].", [chunk(1), chunk(2)], structured=False)
    assert answer == "An answer."
    assert grounding == "context"
    assert [c["id"] for c in citations] == ["c1", "c2"]


def test_cite_leaves_structured_answers_byte_for_byte() -> None:
    raw = '{"answer": "x [3]"}'
    answer, _, grounding = cite(raw, [chunk(1)], structured=True)
    assert answer == raw and grounding == "context"


def test_streamed_text_through_ref_filter_equals_the_cleaned_answer() -> None:
    text = "  Serve [1] scales [3] replicas [1, 4][2]. Arrays [x] and [12 stay? [2]"
    expected = clean_refs(text, 2).strip()
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), 8))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        refs = RefFilter(2)
        out = "".join(refs.feed(p) for p in pieces) + refs.flush()
        assert out.rstrip() == expected


def test_relevance_needs_a_shared_content_word_not_just_a_hit() -> None:
    chunks = [chunk(1, "Replicas scale with autoscaling."), chunk(2, "The cafeteria opens at noon.")]
    assert [c["id"] for c in relevant("How do replicas scale?", chunks)] == ["c1"]
    assert relevant("What is the capital of Mongolia?", chunks) == []
