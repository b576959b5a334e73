"""What an embedder or reranker can take: its token window and its vector sizes (pure, no model).

An input longer than the window is refused with a 400 that names it and the limit, as OpenAI does for its
embedding models and TEI does unless the request says `truncate: true`; the caller decides, never the
server silently. `dimensions` is the model's own size or a shorter Matryoshka size it was trained for
(its first `dimensions` components, normalised again); any other size is a 400 naming `dimensions`.
"""

from __future__ import annotations

import numpy as np

from raylight_pipelines.web.errors import ApiError


def refuse_over_window(model: str, needed: list[int], window: int, param: str) -> None:
    """400 naming `param[i]` for the first input that needs more than `window` tokens."""
    for i, tokens in enumerate(needed):
        if tokens > window:
            raise ApiError(400, f"{param}[{i}]: {tokens} tokens; model '{model}' takes at most {window} tokens "
                           f"(its window). Shorten it, or send \"truncate\": true to embed its first {window} "
                           "tokens.", param=param, code="context_length_exceeded")


def embedding_size(model: str, dimension: int, matryoshka: tuple[int, ...], asked: int | None) -> int:
    """The vector size to answer with: `asked` when the model supports it, else 400 naming dimensions."""
    if asked is None or asked == dimension:
        return dimension
    if asked in matryoshka:
        return asked
    shorter = (f"or one of the Matryoshka sizes it was trained for: {', '.join(map(str, matryoshka))}"
               if matryoshka else "and was not trained for shorter ones (Matryoshka)")
    raise ApiError(400, f"dimensions: model '{model}' makes {dimension}-dimensional vectors {shorter}; "
                   f"{asked} is not supported.", param="dimensions", code="invalid_value")


def shortened(vectors: np.ndarray, size: int) -> np.ndarray:
    """The first `size` components of each row, normalised to length 1 again (Matryoshka)."""
    cut = np.asarray(vectors[:, :size], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.where(norms == 0, 1, norms)
