"""Over-window inputs and vector sizes (issue 27 item 4): refused with 400 naming the input and the limit,
Matryoshka sizes only where the model was trained for them."""

from __future__ import annotations

import numpy as np
import pytest
from raylight_pipelines.serving.windows import embedding_size, refuse_over_window, shortened
from raylight_pipelines.web.errors import ApiError


def test_the_first_input_over_the_window_is_named_with_the_limit() -> None:
    refuse_over_window("minilm", [10, 256], 256, "input")
    with pytest.raises(ApiError) as info:
        refuse_over_window("minilm", [10, 257, 900], 256, "input")
    assert info.value.status == 400 and info.value.param == "input" and info.value.code == "context_length_exceeded"
    assert "input[1]: 257 tokens" in info.value.message and "at most 256" in info.value.message
    assert '"truncate": true' in info.value.message


def test_dimensions_is_the_models_own_or_a_trained_matryoshka_size() -> None:
    assert embedding_size("m", 384, (), None) == 384 == embedding_size("m", 384, (), 384)
    assert embedding_size("m", 768, (256, 512), 256) == 256
    for matryoshka, words in (((), "not trained for shorter ones"), ((256,), "256")):
        with pytest.raises(ApiError) as info:
            embedding_size("m", 768, matryoshka, 100)
        assert info.value.param == "dimensions" and words in info.value.message


def test_shortened_vectors_are_unit_length() -> None:
    rows = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    cut = shortened(rows, 4)
    assert cut.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(cut[0] * np.linalg.norm(rows[0, :4]), rows[0, :4], atol=1e-6)
