"""BM25 sparse vectors computed here (no model download): Qdrant applies IDF (Modifier.IDF) at query time,
so a document vector carries only the BM25 term-frequency part and a query vector weight 1 per term.

Terms are lower-cased word tokens (Unicode letters and digits, with `_`, `.` and `-` kept inside a
token so identifiers like RAYLIGHT_QDRANT_API_KEY or v1alpha1 stay whole, plus their parts), hashed
with a stable 32-bit hash so every process maps a term to the same index. Scripts written without
spaces between words (Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar) are indexed as overlapping
character bigrams, as Lucene's CJK analyser does: no dictionary per language, and a query matches any
document that shares its two-character sequences.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

K1 = 1.2
B = 0.75
AVG_LEN = 150.0  # typical chunk length in terms; a constant keeps vectors independent of the corpus

_TOKEN = re.compile(r"\w+(?:[._\-/:]\w+)*", re.UNICODE)
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]+")
_STOP = ("a an and are as at be but by for from has have how i if in into is it its of on or that the their "
         "then there these this to was were what when where which who why will with you your does do can")
STOPWORDS = frozenset(_STOP.split(" "))


def terms(text: str) -> list[str]:
    out: list[str] = []
    text = text.lower()
    for m in _UNSPACED.finditer(text):
        run = m.group()
        out.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
    for m in _TOKEN.finditer(_UNSPACED.sub(" ", text)):
        token = m.group()
        parts = re.split(r"[._\-/:]", token)
        if len(parts) > 1:
            out.append(token)
        out.extend(p for p in parts if p and p not in STOPWORDS)
    return out


def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def document_vector(text: str) -> tuple[list[int], list[float]]:
    counts = Counter(term_index(t) for t in terms(text))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVG_LEN)
    indices = sorted(counts)
    return indices, [counts[i] * (K1 + 1) / (counts[i] + norm) for i in indices]


def query_vector(text: str) -> tuple[list[int], list[float]]:
    indices = sorted({term_index(t) for t in terms(text)})
    return indices, [1.0] * len(indices)
