"""ONNX Runtime under a SentenceTransformer (`engineArgs.backend: onnx` on the sentence-transformers runtime).

sentence-transformers' own `backend="onnx"` goes through optimum-onnx, whose only release pins
transformers < 4.58 (this project runs 5.x), so Raylight exports the model's transformer itself, once, with
`torch.onnx.export`, and runs it in an `onnxruntime.InferenceSession`. Only the first module's forward pass
moves: tokenization, pooling, normalisation and every later module stay sentence-transformers' own, so the
vectors are the same model's (the load checks this on a probe text and refuses to serve otherwise). On the
2-core test machine one short query encodes in about 8 ms instead of 17-20 (bench/retrieval.py; 4 instead of
13 in an otherwise idle process).

The exported graph is cached by the weights' content (`cache_root`), so a replica restart skips the export
(about 8 s for MiniLM on 2 cores).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

PROBE = "Raylight checks that ONNX Runtime and PyTorch give this sentence the same vector."
MIN_PROBE_COSINE = 0.9999  # float32 kernels differ in rounding only
OPSET = 17


class OnnxBackendError(RuntimeError):
    """The model cannot run on ONNX Runtime (or its vectors differ from PyTorch's); the message says why."""


def cache_root() -> Path:
    """Where exported graphs are kept: `$RAYLIGHT_CACHE_DIR/onnx` (default `~/.cache/raylight/onnx`), or the
    temporary directory where that cannot be written (the graph is then exported again after a restart)."""
    root = Path(os.environ.get("RAYLIGHT_CACHE_DIR") or Path.home() / ".cache" / "raylight") / "onnx"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / "raylight-onnx"


def _fingerprint(path: Path) -> str:
    """The weights' identity: sha256 over every weight and config file's name and bytes."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
            digest.update(str(file.relative_to(path) if file != path else file.name).encode())
            with file.open("rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
    return digest.hexdigest()[:32]


def _export(auto_model: Any, inputs: dict[str, Any], target: Path) -> None:
    """`auto_model` (a transformers encoder) -> an ONNX graph at `target` (last hidden state, dynamic batch
    and sequence axes), written atomically so concurrent replicas never read half a file."""
    import torch

    names = list(inputs)

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = auto_model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        # The tracer's warnings (branches on shapes fixed by the probe) do not apply to an encoder whose
        # attention mask is always given; the probe check below is what proves the graph.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHiddenState().eval(), tuple(inputs[n] for n in names), str(staged),
                              input_names=names, output_names=["token_embeddings"], opset_version=OPSET,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]},
                              dynamo=False)
        os.replace(staged, target)


def _session(target: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: on a few cores they would take them from the other
    # replicas (and from whoever else shares the node).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No memory arena: it keeps the peak of the largest batch for the life of the replica (MiniLM after
    # 32 long chunks: 1.5 GiB resident with it, 1.0 without; a query costs about 1 ms more).
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])


def use_onnx_runtime(model: Any, path: Path, threads: int) -> Path:
    """Run `model`'s (a SentenceTransformer loaded from `path`) transformer on ONNX Runtime with `threads`
    intra-op threads; returns the ONNX file. A cached graph whose probe vector differs from PyTorch's (a
    damaged cache) is exported again. Raises OnnxBackendError when the model's first module is not a
    transformers encoder, the export fails, or a fresh export's probe vector still differs."""
    import torch
    from sentence_transformers.models import Transformer

    transformer = model[0]
    if not isinstance(transformer, Transformer):
        raise OnnxBackendError(f"engineArgs.backend onnx: the model's first module is {type(transformer).__name__}, "
                               "not a transformers encoder")
    expected = model.encode([PROBE], convert_to_numpy=True, show_progress_bar=False)[0]
    features = getattr(transformer, "preprocess", transformer.tokenize)([PROBE])
    signature = inspect.signature(transformer.auto_model.forward).parameters
    inputs = {k: v for k, v in features.items() if isinstance(v, torch.Tensor) and k in signature}
    target = cache_root() / _fingerprint(path) / "model.onnx"
    cosine = 0.0
    for fresh in (not target.is_file(), True):
        try:
            if fresh:
                _export(transformer.auto_model, inputs, target)
            session = _session(target, threads)
        except Exception as exc:
            raise OnnxBackendError(f"engineArgs.backend onnx: cannot export or load {path.name} for ONNX Runtime: "
                                   f"{type(exc).__name__}: {exc}") from exc
        wanted = [i.name for i in session.get_inputs()]

        def forward(features: dict[str, Any], session: Any = session, wanted: list[str] = wanted,
                    **_: Any) -> dict[str, Any]:
            feeds = {name: features[name].cpu().numpy().astype(np.int64) for name in wanted}
            features["token_embeddings"] = torch.from_numpy(session.run(None, feeds)[0])
            return features

        transformer.forward = forward  # the instance's: tokenization and the later modules stay as loaded
        got = model.encode([PROBE], convert_to_numpy=True, show_progress_bar=False)[0]
        cosine = float(np.dot(got, expected) / (np.linalg.norm(got) * np.linalg.norm(expected)))
        if cosine >= MIN_PROBE_COSINE:
            return target
        del transformer.forward  # back to PyTorch's for the next try
        if fresh:
            break
    raise OnnxBackendError(f"engineArgs.backend onnx: ONNX Runtime's vector for a probe differs from PyTorch's "
                           f"(cosine {cosine:.6f} < {MIN_PROBE_COSINE}); serve {path.name} with backend torch")
