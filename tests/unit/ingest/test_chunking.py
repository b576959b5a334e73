"""Chunking in the embedder's tokens: sizes, overlap, structure-first cuts, metadata, exact offsets, and
passages that always fit the embedder's window."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raylight.api.types import ModelSource
from raylight_pipelines.ingest.chunking import (
    HFTokenizer,
    TokenizerError,
    chunk_document,
    load_tokenizer,
    sections,
    tokenizer_from_service,
)
from raylight_pipelines.ingest.documents import Document
from raylight_pipelines.ingest.extract import parse_markdown


def doc(text: str, pages: tuple[tuple[int, int], ...] = ()) -> Document:
    parsed = parse_markdown(text)
    return Document(source_id="t", source_key="k", text=parsed.text, title="T", pages=pages,
                    headings=parsed.headings)


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
        assert len(tokenizer.offsets(c.text)) <= 64
        assert c.tokens == tokenizer.count(c.passage) <= tokenizer.max_tokens
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
        assert len(chunks) >= 4 and all(len(tokenizer.offsets(c.text)) <= 100 and len(c.text) <= 100 * 64
                                        for c in chunks)
        assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_pdf_pages_are_kept(tokenizer):
    text = "Page one words.\n\nPage two words."
    chunks = chunk_document(doc(text, pages=((1, 0), (2, 17))), tokenizer, 400, 0)
    assert [(c.page, c.text) for c in chunks] == [(1, "Page one words."), (2, "Page two words.")]


def test_chunk_size_is_clamped_to_the_embedder_window(tokenizer):
    assert tokenizer.max_tokens == 256
    text = " ".join(f"word{i}" for i in range(3000))
    chunks = chunk_document(doc(text), tokenizer, 400, 50)
    assert max(c.tokens for c in chunks) == 256  # the window, [CLS] and [SEP] included


def test_issue_japanese_chunks_fit_the_window(tokenizer):
    # Issue #14, input 5: 6,200 characters of Japanese at chunk size 400 gave chunks of up to 2,070 MiniLM
    # tokens against a 256-token window (a word-regex "tokenizer" saw each sentence as one token).
    text = ("日本語のテキストです。東京は日本の首都であり、多くの人々が住んでいます。" * 200)[:6200]
    chunks = chunk_document(doc(text), tokenizer, 400, 50)
    assert len(chunks) > 20
    assert max(tokenizer.count(c.passage) for c in chunks) <= 256
    assert "".join(c.text for c in chunks).replace("\n", "") .count("東京") >= text.count("東京")
    assert chunks[-1].end == len(text) and all(c.text.endswith("。") for c in chunks[:-1])


def test_heading_paths_count_against_the_window(tokenizer):
    small = HFTokenizer(tokenizer.backend, 32, "minilm-32")
    body = "\n\n" + "Body words follow here. " * 60
    chunks = chunk_document(doc("# A long heading\n" + body), small, 400, 0)
    assert all(small.count(c.passage) <= 32 for c in chunks) and len(chunks) > 5
    assert all(c.passage.startswith("T > A long heading\n") for c in chunks)
    # a heading path that would take more than half the window is left out of the passage
    chunks = chunk_document(doc("# " + "A very long heading " * 4 + body), small, 400, 0)
    assert all(small.count(c.passage) <= 32 and c.passage == c.text for c in chunks)


def test_issue_a_comment_in_a_nested_fence_is_not_a_heading():
    # Issue #14, input 4: a ```bash block inside a ````markdown fence; its `# install the operator`
    # became a section and the real `## Next step` was nested under it.
    text = ("# Guide\n\n````markdown\n```bash\n# install the operator\nhelm install raylight\n```\n````\n\n"
            "## Next step\n\nApply the pipeline.\n")
    assert [h for _, _, h in sections(doc(text))] == ["Guide", "Guide > Next step"]


def test_the_tokenizer_an_embedder_service_reports_is_used_as_is(tokenizer):
    body = {"model": "minilm", "max_tokens": 128, "tokenizer": json.loads(tokenizer.backend.to_str())}
    http = httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json=body) if r.url.path == "/v1/tokenizer" else httpx.Response(404)))
    remote = tokenizer_from_service("http://embedder/v1", "minilm", http=http)
    assert remote.max_tokens == 128 and remote.offsets("Qdrant stores vectors.") == tokenizer.offsets(
        "Qdrant stores vectors.")
    with pytest.raises(TokenizerError, match="http://other/v1/tokenizer"):
        tokenizer_from_service("http://other/v1", "minilm", http=httpx.Client(
            transport=httpx.MockTransport(lambda r: httpx.Response(404))))


def test_a_missing_tokenizer_is_a_clear_error():
    with pytest.raises(TokenizerError, match="no model source"):
        load_tokenizer(None)
    with pytest.raises(TokenizerError, match="hf://nobody/no-such-embedder"):
        load_tokenizer(ModelSource(source="hf://nobody/no-such-embedder"))


_TEXT = st.lists(st.sampled_from([
    "word ", "Sentence ends here. ", "\n", "\n\n", "# Heading\n", "日本語の文章です。", "中文句子。",
    "ภาษาไทยไม่มีช่องว่าง", "한국어 문장입니다. ", "مرحبا بالعالم ", "x" * 150, "🙂", "a,b;c:" * 5, "```\n# code\n```\n",
]), max_size=60).map("".join)


@settings(max_examples=25, deadline=None)
@given(text=_TEXT, size=st.integers(16, 80), overlap=st.integers(0, 15))
def test_every_passage_fits_the_window_and_chunks_are_exact_slices(tokenizer, text, size, overlap):
    small = HFTokenizer(tokenizer.backend, 48, "minilm-48")
    d = doc(text)
    chunks = chunk_document(d, small, size, overlap)
    for c in chunks:
        assert d.text[c.start:c.end] == c.text
        assert small.count(c.passage) == c.tokens <= 48
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(d.text) if not ch.isspace())
