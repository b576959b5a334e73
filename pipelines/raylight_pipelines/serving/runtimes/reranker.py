"""sentence-transformers CrossEncoder reranker: one relevance score per (query, document) pair."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import numpy as np

from raylight_pipelines.serving.runtimes.embedder import limit_threads


class CrossEncoderReranker:
    def __init__(self, path: Path, threads: int, engine_args: dict[str, Any]) -> None:
        from sentence_transformers import CrossEncoder

        limit_threads(threads)
        self.batch_size = int(engine_args.get("batch_size", 32))
        self.model = CrossEncoder(str(path), device="cpu", local_files_only=True,
                                  trust_remote_code=bool(engine_args.get("trust_remote_code", False)),
                                  max_length=engine_args.get("max_seq_length"))
        self.max_tokens = int(self.model.max_length or self.model.tokenizer.model_max_length)
        self._counter = copy.deepcopy(self.model.tokenizer)  # window checks run beside scoring, in threads
        self._counting = threading.Lock()

    def window_tokens(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Tokens each (query, document) pair needs whole (special tokens in, nothing truncated)."""
        with self._counting:  # its own tokenizer: a fast tokenizer is not safe across threads
            ids = self._counter([q for q, _ in pairs], [d for _, d in pairs], truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, list[int]]:
        """The model's relevance score for each (query, document) pair (higher is more relevant; the
        model's own activation, a sigmoid for one-label models) and the tokens each pair cost."""
        scores = self.model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True,
                                    show_progress_bar=False)
        ids = self.model.tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True,
                                   max_length=self.max_tokens)["input_ids"]
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs)), [len(x) for x in ids]
