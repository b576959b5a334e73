"""sentence-transformers embedder: normalised vectors, token counts for usage."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import numpy as np
from raylight.api.serve import DEFAULT_EMBED_BACKEND, EMBED_BACKENDS


def limit_threads(threads: int) -> None:
    """Size torch's and the BLAS pools to the replica's CPUs: oversubscribed pools are slower on few cores."""
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it only torch is sized
        pass


class SentenceTransformerEmbedder:
    def __init__(self, path: Path, threads: int, engine_args: dict[str, Any]) -> None:
        from sentence_transformers import SentenceTransformer

        limit_threads(threads)
        self.batch_size = int(engine_args.get("batch_size", 32))
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True,
                                         trust_remote_code=bool(engine_args.get("trust_remote_code", False)))
        if "max_seq_length" in engine_args:
            self.model.max_seq_length = int(engine_args["max_seq_length"])
        self.backend = str(engine_args.get("backend", DEFAULT_EMBED_BACKEND))
        if self.backend not in EMBED_BACKENDS:
            raise ValueError(f"engineArgs.backend: {self.backend!r}; one of {', '.join(EMBED_BACKENDS)}")
        if self.backend == "onnx":
            from raylight_pipelines.serving.runtimes.onnx import use_onnx_runtime

            use_onnx_runtime(self.model, path, threads)
        self.max_tokens = int(self.model.max_seq_length or 512)
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self._counter = copy.deepcopy(self.model.tokenizer)  # window checks run beside embedding, in threads
        self._counting = threading.Lock()
        # Shorter sizes the model was trained to keep meaning in (Matryoshka); none unless the manifest says.
        self.matryoshka_dimensions = tuple(sorted(int(d) for d in engine_args.get("matryoshka_dimensions", ())))
        bad = [d for d in self.matryoshka_dimensions if not 0 < d < self.dimension]
        if bad:
            raise ValueError(f"engineArgs.matryoshka_dimensions: {bad[0]} is not below the model's "
                             f"{self.dimension} dimensions")

    def window_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text needs whole (special tokens in, nothing truncated): over max_tokens is over the
        model's window."""
        with self._counting:  # its own tokenizer: a fast tokenizer is not safe across threads
            ids = self._counter(texts, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text costs (what the model sees: special tokens in, truncation applied)."""
        ids = self.model.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        return [len(x) for x in ids]

    def tokenizer_json(self) -> str:
        return str(self.model.tokenizer.backend_tokenizer.to_str())

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32), self.token_counts(texts)
