"""Structure-aware chunking sized in tokens of the embedder's own tokenizer, within the embedder's window.

A document is cut into sections at the headings its parser found (and at PDF pages and slides); each
section is cut into windows of at most `size` tokens, ending at the strongest boundary available in the
window's second half: paragraph, line, sentence, word, and only then any token. Neighbouring windows
share about `overlap` tokens. Every chunk is an exact slice `doc.text[start:end]`, so offsets can be
cited; what the embedder sees (the passage: title and heading path, then the chunk) always fits its
window, special tokens included: each passage is counted again with the real tokenizer and cut further
if needed. There is no approximate tokenizer: without the embedder's own, ingestion stops with
TokenizerError.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from raylight.api.types import ModelCache, ModelSource

from raylight_pipelines.ingest.documents import Document

LONG_TOKEN = 64  # characters; longer single tokens are counted as several, so chunks stay bounded


class TokenizerError(RuntimeError):
    """The embedder's tokenizer or window cannot be had; the message says from where it was tried."""


class Tokenizer(Protocol):
    name: str
    max_tokens: int  # the embedder's input window in tokens, special tokens included

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of text (no special tokens)."""
        ...

    def count(self, text: str) -> int:
        """Tokens the embedder sees for text, special tokens included, nothing truncated."""
        ...


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer (the embedder's own) and the embedder's window."""

    def __init__(self, backend: Any, max_tokens: int, name: str = "") -> None:
        # a private copy with truncation and padding off (the model's copy truncates at its window)
        self.backend = backend.__class__.from_str(backend.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.max_tokens = int(max_tokens)
        self.name = name

    @classmethod
    def from_transformers(cls, tokenizer: Any, max_tokens: int, name: str = "") -> HFTokenizer:
        """From a transformers fast tokenizer (e.g. SentenceTransformer.tokenizer)."""
        return cls(tokenizer.backend_tokenizer, max_tokens, name)

    @classmethod
    def from_json(cls, data: str, max_tokens: int, name: str = "") -> HFTokenizer:
        """From the text of a tokenizer.json."""
        from tokenizers import Tokenizer as Backend

        return cls(Backend.from_str(data), max_tokens, name)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for a, b in self.backend.encode(text, add_special_tokens=False).offsets:
            if b - a > LONG_TOKEN:  # e.g. a 10 kB "word" that WordPiece maps to one [UNK]
                spans += [(i, min(i + LONG_TOKEN, b)) for i in range(a, b, LONG_TOKEN)]
            elif b > a:
                spans.append((a, b))
        return spans

    def count(self, text: str) -> int:
        return len(self.backend.encode(text, add_special_tokens=True).ids)


def load_tokenizer(source: ModelSource | None, cache: ModelCache | None = None) -> HFTokenizer:
    """The tokenizer and window of the embedder's model source, found through
    raylight_pipelines.weights.resolve (with `cache`, the embedder's spec.cache: from its checked entry only).
    Raises TokenizerError saying why it cannot."""
    if source is None:
        raise TokenizerError("the embedder has no model source to load its tokenizer from")
    from raylight_pipelines.weights import WeightsError, resolve

    try:
        path = Path(resolve(source, cache=cache).path)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
    except (WeightsError, OSError, ValueError) as exc:
        raise TokenizerError(f"cannot load the tokenizer of {source.source}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"{source.source} has no fast (Rust) tokenizer, which chunking needs for offsets")
    return HFTokenizer.from_transformers(tok, model_window(path, tok), name=source.source)


def model_window(path: Path, tokenizer: Any = None) -> int:
    """The embedder's input window in tokens: sentence-transformers' max_seq_length, else the
    tokenizer's model_max_length. Raises TokenizerError when neither says."""
    try:
        return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        pass
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    raise TokenizerError(f"{path}: the model's input window is unknown (no sentence_bert_config.json "
                         "max_seq_length, no tokenizer model_max_length)")


def tokenizer_from_service(base_url: str, model: str, http: Any = None, name: str | None = None) -> HFTokenizer:
    """The tokenizer and window an embedder service reports (GET {base_url}/tokenizer?model=...;
    raylight's Serve app answers it for embedding models), named `name` (default: the model). Raises
    TokenizerError."""
    import httpx

    url = f"{base_url.rstrip('/')}/tokenizer"
    client = http or httpx.Client(timeout=60.0)
    try:
        response = client.get(url, params={"model": model})
        if response.is_error:
            try:
                why = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                why = response.text[:200]
            raise TokenizerError(f"cannot get the tokenizer of {model} from {url}: {response.status_code} {why}")
        body = response.json()
        return HFTokenizer.from_json(json.dumps(body["tokenizer"]), int(body["max_tokens"]), name=name or model)
    except TokenizerError:
        raise
    except Exception as exc:  # HTTP, JSON or tokenizers errors: all mean no tokenizer
        raise TokenizerError(f"cannot get the tokenizer of {model} from {url}: {exc}") from exc
    finally:
        if http is None:
            client.close()


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str  # doc.text[start:end]
    start: int
    end: int
    heading: str | None  # heading path, "Top > Sub"
    page: int | None
    tokens: int  # tokens of the passage, special tokens included
    passage: str  # what the embedder sees: "title > heading path\n" + text (or the text alone)


def sections(doc: Document) -> list[tuple[int, int, str | None]]:
    """(start, end, heading path) of each section: cut at the document's headings and page starts."""
    text = doc.text
    levels = {offset: (level, title) for offset, level, title in doc.headings}
    page_starts = {start for _, start in doc.pages if start > 0}
    bounds = sorted({0, *levels, *page_starts, len(text)})
    out: list[tuple[int, int, str | None]] = []
    path: list[tuple[int, str]] = []
    for start, end in itertools.pairwise(bounds):
        if start in levels:
            level, title = levels[start]
            path = [p for p in path if p[0] < level] + [(level, title)]
        if text[start:end].strip():
            out.append((start, end, " > ".join(t for _, t in path) or None))
    return out


_FULL_STOPS = ("\u3002", "\uff01", "\uff1f")  # ideographic full stop, fullwidth ! and ?
_CLOSERS = "\"')]\u300d\u300f\uff09"  # and CJK closing brackets


def _strength(gap: str, prev_token: str) -> int:
    """How good a cut between two tokens is: 4 paragraph, 3 line, 2 sentence, 1 word, 0 inside a word.
    CJK full stops end sentences without a space after them."""
    if "\n\n" in gap or "\n \n" in gap:
        return 4
    if "\n" in gap:
        return 3
    if prev_token.rstrip(_CLOSERS).endswith(_FULL_STOPS) or (
            gap and prev_token.rstrip("\"')]").endswith((".", "!", "?"))):
        return 2
    return 1 if gap else 0


def split_section(text: str, start: int, end: int, tok: Tokenizer, size: int,
                  overlap: int) -> list[tuple[int, int]]:
    """(start, end) windows of at most `size` tokens over text[start:end]."""
    spans = [(a + start, b + start) for a, b in tok.offsets(text[start:end])]
    if not spans:
        return []
    n = len(spans)
    strength = [4] + [_strength(text[spans[i - 1][1]:spans[i][0]], text[spans[i - 1][0]:spans[i - 1][1]])
                      for i in range(1, n)]
    out: list[tuple[int, int]] = []
    s = 0
    while s < n:
        e = min(s + size, n)
        if e < n:  # prefer the strongest cut in the window's second half, the latest of that strength
            lo = s + max(1, size // 2)
            e = max(range(lo, e + 1), key=lambda i: (strength[i], i))
        out.append((spans[s][0], spans[e - 1][1]))
        if e >= n:
            break
        # the next window starts `overlap` tokens back, at a word boundary in that stretch if there is one
        back = max(e - overlap, s + 1)
        s = max(range(back, e + 1), key=lambda i: (strength[i] >= 1, -i)) if back < e else e
    return out


def _passage(prefix: str, text: str) -> str:
    return f"{prefix}\n{text}" if prefix else text


def chunk_document(doc: Document, tok: Tokenizer, size: int, overlap: int) -> list[Chunk]:
    """The document's chunks of at most `size` tokens (less where the window and the heading path leave
    less), neighbours sharing about `overlap` tokens; every passage fits the embedder's window
    (tok.max_tokens, special tokens included)."""
    specials = tok.count("")
    chunks: list[Chunk] = []
    for start, end, heading in sections(doc):
        prefix = f"{doc.title or ''} > {heading}" if heading else ""
        window = tok.max_tokens - specials
        budget = window - (tok.count(prefix + "\n") - specials if prefix else 0)
        if budget < window // 2:  # a heading path never takes more than half the window: left out
            prefix, budget = "", window

        def fit(a0: int, b0: int, limit: int, prefix: str = prefix) -> list[tuple[int, int, int, str]]:
            out = []
            for a, b in split_section(doc.text, a0, b0, tok, limit, min(overlap, limit // 2)):
                passage = _passage(prefix, doc.text[a:b])
                tokens = tok.count(passage)
                if tokens <= tok.max_tokens:
                    out.append((a, b, tokens, passage))
                elif limit > 1:  # re-tokenised on its own it came out longer: cut smaller
                    out += fit(a, b, max(1, limit * tok.max_tokens // tokens - 1))
                else:
                    raise TokenizerError(f"{doc.source_id}: one token exceeds the window of {tok.name}")
            return out

        for a, b, tokens, passage in fit(start, end, min(size, budget)):
            chunks.append(Chunk(len(chunks), doc.text[a:b], a, b, heading, doc.page_at(a), tokens, passage))
    return chunks
