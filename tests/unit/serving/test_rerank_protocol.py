"""`POST /v1/rerank` requests (Cohere/Jina/TEI shape) and the response: indices into the request's
documents, best first, `top_n` of them (no Ray, no model)."""

from __future__ import annotations

import pytest
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import RerankRequest, parse
from raylight_pipelines.web.responses import rerank_response

BODY = {"model": "xenc", "query": "How do replicas scale?", "documents": ["a", {"text": "b"}, "c"]}


def test_documents_may_be_strings_or_objects_with_text() -> None:
    request = parse(RerankRequest, BODY, "xenc")
    assert request.texts == ["a", "b", "c"] and request.top_n is None and request.return_documents


@pytest.mark.parametrize(("patch", "param"), [
    ({"query": ""}, "query"),
    ({"documents": []}, "documents"),
    ({"top_n": 0}, "top_n"),
    ({"documents": [{"title": "no text"}]}, "documents.0"),
])
def test_bad_requests_are_400_naming_the_parameter(patch: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse(RerankRequest, {**BODY, **patch}, "xenc")
    assert info.value.status == 400 and info.value.param == param


def test_another_model_name_is_404() -> None:
    with pytest.raises(ApiError) as info:
        parse(RerankRequest, BODY, "other")
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_results_are_best_first_with_indices_into_the_request_and_top_n() -> None:
    out = rerank_response("xenc", ["a", "b", "c"], [0.1, 0.9, 0.5], top_n=2, return_documents=True, tokens=30)
    assert [(r["index"], r["relevance_score"], r["document"]["text"]) for r in out["results"]] == [
        (1, 0.9, "b"), (2, 0.5, "c")]
    assert out["model"] == "xenc" and out["usage"] == {"prompt_tokens": 30, "total_tokens": 30}
    bare = rerank_response("xenc", ["a", "b"], [0.3, 0.3], top_n=None, return_documents=False, tokens=1)
    assert bare["results"] == [{"index": 0, "relevance_score": 0.3}, {"index": 1, "relevance_score": 0.3}]
