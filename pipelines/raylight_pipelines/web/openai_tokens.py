"""Token-array input on `/v1/embeddings`: OpenAI's own token ids, turned back into text.

The OpenAI API lets `input` be token ids (one array, or an array of arrays) in *its* tokenizer, cl100k_base
for its embedding models, and that is what clients send: LangChain's `OpenAIEmbeddings` (with its default
`check_embedding_ctx_length=True`) splits texts with tiktoken's cl100k_base and posts the ids. Those ids mean
nothing to this model's tokenizer (vLLM reads them as the served model's ids and silently embeds other
words), so the server decodes them with cl100k_base and embeds the text with the model's own tokenizer.

cl100k_base's table comes from tiktoken's cache; where that is empty and offline, it is seeded from the copy
the `bpe-openai` package ships (byte-identical: tiktoken checks its sha256 before use).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from raylight_pipelines.web.errors import ApiError

ENCODING = "cl100k_base"
_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"  # tiktoken's cache key


def seed_tiktoken_cache() -> Path:
    """Put bpe-openai's cl100k_base table where tiktoken looks before downloading (TIKTOKEN_CACHE_DIR, set
    to the default when unset); returns that folder. tiktoken verifies the table's hash when it reads it."""
    folder = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))
    target = folder / hashlib.sha1(_URL.encode()).hexdigest()
    if not target.exists():
        data = gzip.decompress((resources.files("bpe_openai") / "data" / "cl100k_base.tiktoken.gz").read_bytes())
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)
    return folder


@functools.cache
def cl100k() -> Any:
    """tiktoken's cl100k_base Encoding (cached); raises ApiError 400 naming `input` when it cannot be had."""
    import tiktoken

    try:
        seed_tiktoken_cache()
        return tiktoken.get_encoding(ENCODING)
    except Exception as exc:
        raise ApiError(400, f"input: token-id input is OpenAI's {ENCODING} ids and this server cannot load that "
                       f"table ({type(exc).__name__}: {exc}); send text instead (LangChain: "
                       "OpenAIEmbeddings(check_embedding_ctx_length=False))", param="input",
                       code="unsupported_input") from None


def is_token_input(value: Any) -> bool:
    """Whether an embeddings `input` is token ids: a list of integers, or a list of lists of integers."""
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return True
    return all(isinstance(row, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in row)
               for row in value)


def token_texts(value: list[Any], encoding: Any | None = None) -> list[str]:
    """The texts that token-id `input` stands for (one per array); 400 naming `input` for an id outside the
    encoding's vocabulary or an empty array."""
    enc = encoding if encoding is not None else cl100k()
    rows: list[list[int]] = [value] if all(isinstance(x, int) for x in value) else value
    texts = []
    for i, row in enumerate(rows):
        if not row:
            raise ApiError(400, f"input[{i}]: an empty token array", param="input", code="invalid_value")
        outside = [t for t in row if not 0 <= t < enc.n_vocab]
        if outside:
            raise ApiError(400, f"input[{i}]: token {outside[0]} is not a {enc.name} id (0..{enc.n_vocab - 1}); "
                           "token-id input is OpenAI's tokenizer's ids", param="input", code="invalid_value")
        texts.append(enc.decode(row))
    return texts
