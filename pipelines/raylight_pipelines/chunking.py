"""Structure-aware chunking sized in tokens of the embedder's own tokenizer.

A document is cut into sections at Markdown headings (and PDF pages); each section is cut into windows of
at most `size` tokens, ending at the strongest boundary available in the window's second half:
paragraph, line, sentence, word, and only then any token. Neighbouring windows share about `overlap`
tokens. Every chunk is an exact slice `doc.text[start:end]`, so offsets can be cited.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from raylight_pipelines.documents import Document

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of text (no special tokens)."""
        ...

    def count(self, text: str) -> int: ...


LONG_TOKEN = 64  # characters; longer single tokens are counted as several, so chunks stay bounded


class HFTokenizer:
    """A Hugging Face fast tokenizer (the embedder's own)."""

    def __init__(self, tokenizer: Any, max_tokens: int | None = None, name: str = "") -> None:
        # a private copy of the Rust tokenizer with truncation off (the model's copy truncates at its window)
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.max_tokens = max_tokens  # the embedder's input window in tokens, special tokens included
        self.name = name

    def offsets(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for a, b in self.backend.encode(text, add_special_tokens=False).offsets:
            if b - a > LONG_TOKEN:  # e.g. a 10 kB "word" that WordPiece maps to one [UNK]
                spans += [(i, min(i + LONG_TOKEN, b)) for i in range(a, b, LONG_TOKEN)]
            elif b > a:
                spans.append((a, b))
        return spans

    def count(self, text: str) -> int:
        return len(self.offsets(text))


class RegexTokenizer:
    """Fallback when the embedder's tokenizer is not available: words and punctuation marks."""

    name = "regex"
    max_tokens: int | None = None
    _TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in self._TOKEN.finditer(text))


def load_tokenizer(source: dict[str, Any] | None) -> HFTokenizer | RegexTokenizer:
    """The tokenizer from the embedder's model source (a ModelSource in wire form), found through
    raylight_pipelines.weights.resolve; RegexTokenizer (with a warning) when it cannot be loaded."""
    if not source:
        log.warning("no embedder model source: chunk sizes are approximate (word tokens)")
        return RegexTokenizer()
    from raylight.api.types import ModelSource

    from raylight_pipelines.weights import WeightsError, resolve

    try:
        path = resolve(ModelSource.model_validate(source)).path
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
    except (WeightsError, OSError, ValueError) as exc:
        log.warning("cannot load the embedder's tokenizer (%s); chunk sizes are approximate", exc)
        return RegexTokenizer()
    return HFTokenizer(tok, model_window(Path(path)), name=str(source.get("source", "")))


def model_window(path: Path) -> int | None:
    """The embedder's input window in tokens (sentence-transformers' max_seq_length), if it says."""
    config = path / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str  # doc.text[start:end]
    start: int
    end: int
    heading: str | None  # heading path, "Top > Sub"
    page: int | None
    tokens: int


_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^ {0,3}(```|~~~)", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]]*$")


def sections(doc: Document) -> list[tuple[int, int, str | None]]:
    """(start, end, heading path) of each section; headings inside fenced code are ignored; PDF pages
    start new sections too."""
    text = doc.text
    fenced: list[tuple[int, int]] = []
    marks = [m.start() for m in _FENCE.finditer(text)]
    for a, b in zip(marks[::2], marks[1::2], strict=False):
        fenced.append((a, b))
    cuts: list[tuple[int, int, str]] = []  # (offset, level, title)
    for m in _HEADING.finditer(text):
        if not any(a <= m.start() < b for a, b in fenced):
            cuts.append((m.start(), len(m.group(1)), m.group(2).strip()))
    page_starts = {start for _, start in doc.pages if start > 0}
    bounds = sorted({0, *[c[0] for c in cuts], *page_starts, len(text)})
    levels = {c[0]: (c[1], c[2]) for c in cuts}
    out: list[tuple[int, int, str | None]] = []
    path: list[tuple[int, str]] = []
    for start, end in itertools.pairwise(bounds):
        if start in levels:
            level, title = levels[start]
            path = [p for p in path if p[0] < level] + [(level, title)]
        if text[start:end].strip():
            out.append((start, end, " > ".join(t for _, t in path) or None))
    return out


def _strength(text: str, prev_end: int, next_start: int, prev_token: str) -> int:
    """How good a cut between two tokens is: 4 paragraph, 3 line, 2 sentence, 1 word, 0 inside a word."""
    gap = text[prev_end:next_start]
    if "\n\n" in gap or "\n \n" in gap:
        return 4
    if "\n" in gap:
        return 3
    if gap and _SENTENCE_END.search(prev_token):
        return 2
    return 1 if gap else 0


def split_section(text: str, start: int, end: int, tok: Tokenizer, size: int,
                  overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) windows over text[start:end]."""
    spans = [(a + start, b + start) for a, b in tok.offsets(text[start:end])]
    if not spans:
        return []
    n = len(spans)
    strength = [4] + [
        _strength(text, spans[i - 1][1], spans[i][0], text[spans[i - 1][0]:spans[i][1]][-3:])
        for i in range(1, n)
    ]
    out: list[tuple[int, int, int]] = []
    s = 0
    while s < n:
        e = min(s + size, n)
        if e < n:  # prefer the strongest cut in the window's second half, the latest of that strength
            lo = s + max(1, size // 2)
            best = max(range(lo, e + 1), key=lambda i: (strength[i], i))
            e = best
        out.append((spans[s][0], spans[e - 1][1], e - s))
        if e >= n:
            break
        # the next window starts `overlap` tokens back, at the strongest boundary in that stretch
        back = max(e - overlap, s + 1)
        if overlap:
            back = max(range(back, e + 1), key=lambda i: (strength[i] >= 1, -i)) if back < e else e
        s = back
    return out


def chunk_document(doc: Document, tok: Tokenizer, size: int, overlap: int) -> list[Chunk]:
    window = getattr(tok, "max_tokens", None)
    if window and size > window - 2:
        size = window - 2  # never let the embedder silently truncate a chunk
        overlap = min(overlap, size // 4)
    chunks: list[Chunk] = []
    for start, end, heading in sections(doc):
        for a, b, count in split_section(doc.text, start, end, tok, size, overlap):
            chunks.append(Chunk(len(chunks), doc.text[a:b], a, b, heading, doc.page_at(a), count))
    return chunks


def effective_size(tok: Tokenizer, size: int) -> int:
    window = getattr(tok, "max_tokens", None)
    return min(size, window - 2) if window else size
