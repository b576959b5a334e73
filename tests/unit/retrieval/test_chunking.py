"""Chunking in the embedder's tokens: sizes, overlap, structure-first cuts, metadata and exact offsets."""

from __future__ import annotations

import itertools

from raylight_pipelines.chunking import RegexTokenizer, chunk_document, sections
from raylight_pipelines.documents import Document


def doc(text: str, pages: tuple[tuple[int, int], ...] = ()) -> Document:
    return Document(source_id="t", source_key="k", text=text, title="T", pages=pages)


MD = """# Guide

Intro paragraph one. It has two sentences.

## Install

Run pip install raylight. Then run raylight up.

```bash
# not a heading
echo hi
```

### Offline

Set HF_HUB_OFFLINE=1 before starting.

# Reference

The default port is 8000.
"""


def test_sections_follow_headings_not_code_comments():
    heads = [h for _, _, h in sections(doc(MD))]
    assert heads == ["Guide", "Guide > Install", "Guide > Install > Offline", "Reference"]


def test_chunks_are_exact_slices_with_heading_paths(tokenizer):
    d = doc(MD)
    chunks = chunk_document(d, tokenizer, 400, 50)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert d.text[c.start:c.end] == c.text
    offline = next(c for c in chunks if "HF_HUB_OFFLINE" in c.text)
    assert offline.heading == "Guide > Install > Offline"
    assert next(c for c in chunks if "8000" in c.text).heading == "Reference"


def test_chunk_sizes_respect_the_token_budget_and_overlap(tokenizer):
    text = "\n\n".join(
        " ".join(f"Sentence {p}.{s} talks about topic {p} in some detail." for s in range(6)) for p in range(30))
    chunks = chunk_document(doc(text), tokenizer, 64, 16)
    assert len(chunks) > 10
    for c in chunks:
        assert tokenizer.count(c.text) <= 64
        assert c.tokens <= 64
    overlapping = sum(1 for a, b in itertools.pairwise(chunks) if b.start < a.end)
    assert overlapping >= len(chunks) - 1 - 2  # neighbours share text
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())  # nothing dropped


def test_cuts_prefer_paragraphs_then_sentences(tokenizer):
    paras = ["Alpha beta gamma delta. " * 4, "Epsilon zeta eta theta. " * 4, "Iota kappa lambda mu. " * 4]
    text = "\n\n".join(p.strip() for p in paras)
    chunks = chunk_document(doc(text), tokenizer, 48, 0)
    for c in chunks[:-1]:
        following = text[c.end:c.end + 2]
        assert c.text.endswith(".") or following.startswith("\n\n"), repr(c.text[-20:])


def test_a_very_long_line_without_breaks_is_split_on_tokens(tokenizer):
    for text in ("x" * 20000 + "y" * 5000, "a,b;c:" * 5000):
        chunks = chunk_document(doc(text), tokenizer, 100, 10)
        assert len(chunks) >= 4 and all(c.tokens <= 100 and len(c.text) <= 100 * 64 for c in chunks)
        assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_pdf_pages_are_kept(tokenizer):
    text = "Page one words.\n\nPage two words."
    chunks = chunk_document(doc(text, pages=((1, 0), (2, 17))), tokenizer, 400, 0)
    assert [(c.page, c.text) for c in chunks] == [(1, "Page one words."), (2, "Page two words.")]


def test_chunk_size_is_clamped_to_the_embedder_window(tokenizer):
    assert tokenizer.max_tokens == 256
    text = " ".join(f"word{i}" for i in range(3000))
    chunks = chunk_document(doc(text), tokenizer, 400, 50)
    assert max(c.tokens for c in chunks) <= 254


def test_regex_tokenizer_fallback_chunks():
    chunks = chunk_document(doc("one two three. " * 100), RegexTokenizer(), 20, 5)
    assert all(c.tokens <= 20 for c in chunks) and len(chunks) > 10
