"""Token-id input on /v1/embeddings is OpenAI's cl100k_base ids (what LangChain's OpenAIEmbeddings sends by
default), decoded to text offline from bpe-openai's copy of the table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.openai_tokens import cl100k, is_token_input, token_texts
from raylight_pipelines.web.protocol import EmbeddingsRequest


def test_cl100k_loads_offline_and_round_trips() -> None:
    enc = cl100k()
    assert enc.name == "cl100k_base" and enc.n_vocab == 100277
    assert enc.encode("hello world") == [15339, 1917]  # OpenAI's published ids
    assert token_texts([[15339, 1917], [15339]]) == ["hello world", "hello"]
    assert token_texts([15339, 1917]) == ["hello world"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4))
def test_any_text_comes_back_from_its_ids(texts: list[str]) -> None:
    enc = cl100k()
    request = EmbeddingsRequest.model_validate({"model": "m", "input": [enc.encode(t) for t in texts]})
    assert request.texts == texts


def test_token_input_shapes_and_refusals() -> None:
    assert is_token_input([1, 2]) and is_token_input([[1], [2, 3]])
    assert not is_token_input(["a"]) and not is_token_input([True]) and not is_token_input([])
    with pytest.raises(ApiError) as info:
        token_texts([[1, 200_000]])
    assert info.value.param == "input" and "200000" in info.value.message
    with pytest.raises(ApiError):
        token_texts([[]])
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        EmbeddingsRequest.model_validate({"model": "m", "input": [1, "a"]})
