"""Measuring a Pipeline against a labelled set: the datasets, the metrics and the report `raylight eval`
prints (the I/O that asks a Pipeline lives in `raylight.cli.data`).

Datasets:
  BEIR layout (a folder): corpus.jsonl ({"_id", "title"?, "text"}), queries.jsonl ({"_id", "text"}) and
  qrels/*.tsv (query-id, corpus-id, score; a header line is skipped; graded scores are kept).
  Simple JSONL (a file): one case per line, {"question", "expected_sources"?: [str],
  "expected_facts"?: [str], "history"?: [str]} (history: the earlier user turns of a conversation).

A retrieved chunk counts for an expected id when its source, without the kind prefix ("path:", "inline:",
...), equals the id or ends with "/" + id; metrics are per document (a document's first chunk counts).

Retrieval metrics: recall@k (share of the relevant documents in the first k), MRR@10 (1 / rank of the first
relevant one), nDCG@10 (graded gains, log2 discount), each the mean over the cases that have relevant
documents. Answer metrics (docs/grounding.md): facts present (answerable cases whose answer states every
expected fact, case-insensitive, without abstaining), abstention precision (abstentions on unanswerable cases
/ all abstentions) and recall (/ unanswerable cases), supported sentences (share of the answers' sentences a
source supports, from the response's `support`), contradictions (answers with a sentence matching a case's
`contradictions`), cited relevant (share of citations pointing at an expected source), "I don't know" rate,
latency p50/p95 in ms. JSONL cases may also set "answerable": false (the corpus does not hold the answer;
no expected facts or sources then) and "contradictions": [regex].
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, bool]] = {  # name -> the search options that give it
    "dense": {"hybrid": False, "rerank": False},
    "hybrid": {"hybrid": True, "rerank": False},
    "hybrid+rerank": {"hybrid": True, "rerank": True},
}
CUTOFF = 10  # MRR@10, nDCG@10
NO_HISTORY = "hybrid, no history"  # the report's row for follow-ups searched without their conversation


class DatasetError(ValueError):
    """The labelled set cannot be read; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Case:
    id: str
    question: str
    relevant: dict[str, int] = field(default_factory=dict)  # expected id -> graded relevance (> 0)
    facts: tuple[str, ...] = ()
    history: tuple[str, ...] = ()  # earlier user turns, oldest first
    answerable: bool = True  # False: the corpus does not hold the answer; the agent should abstain
    contradictions: tuple[str, ...] = ()  # regular expressions: an answer sentence matching one states the opposite


@dataclass
class Dataset:
    name: str
    cases: list[Case]
    corpus: list[dict[str, str]] | None = None  # BEIR: {"id", "title", "text"} to ingest


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: each line must be a JSON object")
        rows.append((number, row))
    return rows


def _text_list(row: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = row.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DatasetError(f"{where}: {key}: must be a list of non-empty strings")
    return tuple(value)


def load_jsonl(path: Path) -> Dataset:
    cases = []
    for number, row in _jsonl(path):
        where = f"{path}:{number}"
        unknown = set(row) - {"id", "question", "expected_sources", "expected_facts", "history", "answerable",
                              "contradictions"}
        if unknown:
            raise DatasetError(f"{where}: {sorted(unknown)[0]}: unknown field")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{where}: question: must be a non-empty string")
        sources = _text_list(row, "expected_sources", where)
        answerable = row.get("answerable", True)
        if not isinstance(answerable, bool):
            raise DatasetError(f"{where}: answerable: must be true or false")
        facts = _text_list(row, "expected_facts", where)
        if not answerable and (facts or sources):
            raise DatasetError(f"{where}: answerable: an unanswerable case has no expected_facts or expected_sources")
        contradictions = _text_list(row, "contradictions", where)
        for pattern in contradictions:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise DatasetError(f"{where}: contradictions: {pattern!r} is not a regular expression ({exc})") \
                    from None
        cases.append(Case(str(row.get("id", number)), question, {s: 1 for s in sources}, facts,
                          _text_list(row, "history", where), answerable, contradictions))
    if not cases:
        raise DatasetError(f"{path}: no cases")
    return Dataset(path.stem, cases)


def load_beir(folder: Path) -> Dataset:
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise DatasetError(f"{folder}: {name} is missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/*.tsv)")
    qrel_files = sorted((folder / "qrels").glob("*.tsv"))
    if not qrel_files:
        raise DatasetError(f"{folder}/qrels: no .tsv file")
    corpus = []
    for number, row in _jsonl(folder / "corpus.jsonl"):
        if not row.get("_id") or not isinstance(row.get("text"), str):
            raise DatasetError(f"{folder / 'corpus.jsonl'}:{number}: needs _id and text")
        corpus.append({"id": str(row["_id"]), "title": str(row.get("title") or ""), "text": row["text"]})
    qrels: dict[str, dict[str, int]] = {}
    for qrel in qrel_files:
        with qrel.open(encoding="utf-8", newline="") as fh:
            for number, cells in enumerate(csv.reader(fh, delimiter="\t"), 1):
                if not cells or (number == 1 and cells[-1:] == ["score"]):
                    continue
                try:
                    query, doc, score = cells[0], cells[1], int(cells[2])
                except (IndexError, ValueError):
                    raise DatasetError(f"{qrel}:{number}: needs query-id, corpus-id and an integer score") from None
                if score > 0:
                    qrels.setdefault(query, {})[doc] = score
    cases = [Case(str(row["_id"]), str(row.get("text", "")), qrels[str(row["_id"])])
             for _, row in _jsonl(folder / "queries.jsonl") if str(row.get("_id")) in qrels]
    if not cases:
        raise DatasetError(f"{folder}: no query has a relevant document in qrels")
    return Dataset(folder.name, cases, corpus)


def load_dataset(path: Path) -> Dataset:
    """A BEIR folder or a JSONL file; raises DatasetError."""
    if path.is_dir():
        return load_beir(path)
    if path.is_file():
        return load_jsonl(path)
    raise DatasetError(f"{path}: no such file or folder")


# ---------------------------------------------------------------- metrics (pure)


def matches(source: str, expected: str) -> bool:
    """Whether a chunk's source id (e.g. "path:docs/pipeline.md", "inline:doc-7") is the expected one."""
    bare = source.split(":", 1)[1] if ":" in source.split("/", 1)[0] else source
    return bare == expected or bare.endswith("/" + expected)


def ranked_documents(sources: Sequence[str], expected: Sequence[str]) -> list[str]:
    """Retrieved chunks' sources -> documents in rank order, each once, named by the expected id they match."""
    out: list[str] = []
    for source in sources:
        doc = next((e for e in expected if matches(source, e)), source)
        if doc not in out:
            out.append(doc)
    return out


def retrieval_scores(sources: Sequence[str], relevant: dict[str, int], k: int) -> dict[str, float]:
    """recall@k, MRR@10 and nDCG@10 of one ranked list."""
    docs = ranked_documents(sources, list(relevant))
    hits = [relevant.get(d, 0) for d in docs]
    first = next((i for i, gain in enumerate(hits[:CUTOFF]) if gain > 0), None)
    dcg = sum(gain / math.log2(i + 2) for i, gain in enumerate(hits[:CUTOFF]))
    ideal = sum(gain / math.log2(i + 2) for i, gain in enumerate(sorted(relevant.values(), reverse=True)[:CUTOFF]))
    return {f"recall@{k}": sum(1 for gain in hits[:k] if gain > 0) / len(relevant),
            f"mrr@{CUTOFF}": 0.0 if first is None else 1 / (first + 1),
            f"ndcg@{CUTOFF}": dcg / ideal if ideal else 0.0}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass
class Answer:
    text: str
    citations: list[str]  # cited sources
    dont_know: bool  # the agent abstained (grounding "none")
    latency_ms: float
    support: list[dict[str, Any]] = field(default_factory=list)  # {"text", "refs", "supported"} per sentence


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def contradicts(case: Case, answer: Answer) -> bool:
    """Whether a sentence of the answer matches one of the case's `contradictions` (states the opposite of
    its source)."""
    return any(re.search(p, s, re.I) for p in case.contradictions for s in _sentences(answer.text))


def answer_scores(cases: Sequence[Case], answers: Sequence[Answer]) -> dict[str, Any]:
    """Answer measures (see the module docstring); each is None when no case measures it."""
    pairs = list(zip(cases, answers, strict=True))
    with_facts = [(c, a) for c, a in pairs if c.answerable and c.facts]
    cited = [(c, a) for c, a in pairs if c.relevant and a.citations and not a.dont_know]
    abstained = [c for c, a in pairs if a.dont_know]
    unanswerable = [c for c in cases if not c.answerable]
    sentences = [s for _, a in pairs if not a.dont_know for s in a.support]

    def ratio(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "cases": len(answers),
        "answerable": len(with_facts),
        "unanswerable": len(unanswerable),
        "facts_present": ratio(sum(all(f.lower() in a.text.lower() for f in c.facts) and not a.dont_know
                                   for c, a in with_facts), len(with_facts)),
        "abstention_precision": ratio(sum(not c.answerable for c in abstained), len(abstained)),
        "abstention_recall": ratio(sum(not c.answerable for c in abstained), len(unanswerable)),
        "supported_sentences": ratio(sum(bool(s.get("supported")) for s in sentences), len(sentences)),
        "contradictions": sum(contradicts(c, a) for c, a in pairs),
        "cited_relevant": mean([mean([float(any(matches(s, e) for e in c.relevant)) for s in a.citations])
                                for c, a in cited]),
        "dont_know_rate": mean([float(a.dont_know) for a in answers]),
        "latency_ms": {"p50": round(statistics.median([a.latency_ms for a in answers]), 1),
                       "p95": round(percentile([a.latency_ms for a in answers], 0.95), 1)},
    }


# ---------------------------------------------------------------- a run

Search = Callable[[Case, dict[str, bool], int], list[str]]  # case, variant options, top k -> sources
Ask = Callable[[Case], Answer]


def evaluate(dataset: Dataset, search: Search, variants: Sequence[str], k: int = 5,
             ask: Ask | None = None) -> dict[str, Any]:
    """The report: {"dataset", "cases", "k", "retrieval": {variant: {metric: mean}}, "answers": {...} | None};
    with multi-turn cases, retrieval also has NO_HISTORY (hybrid, every question searched on its own)."""
    labelled = [c for c in dataset.cases if c.relevant]
    retrieval: dict[str, dict[str, float]] = {}

    def measure(cases: Sequence[Case], options: dict[str, bool]) -> dict[str, float]:
        rows = [retrieval_scores(search(c, options, max(k, CUTOFF)), c.relevant, k) for c in cases]
        return {m: round(mean([r[m] for r in rows]), 4) for m in rows[0]} if rows else {}

    for variant in variants:
        retrieval[variant] = measure(labelled, VARIANTS[variant])
    if any(c.history for c in labelled):  # what conversational retrieval buys: follow-ups searched alone
        retrieval[NO_HISTORY] = measure([dataclasses.replace(c, history=()) for c in labelled], VARIANTS["hybrid"])
    replies = [ask(c) for c in dataset.cases] if ask else []
    answers = answer_scores(dataset.cases, replies) if ask else None
    report: dict[str, Any] = {"dataset": dataset.name, "cases": len(dataset.cases), "k": k, "retrieval": retrieval,
                              "answers": answers}
    if ask:
        report["replies"] = [{"id": c.id, "question": c.question, "answerable": c.answerable, "answer": a.text,
                              "abstained": a.dont_know,
                              "facts_present": bool(c.facts) and all(f.lower() in a.text.lower() for f in c.facts),
                              "contradicts": contradicts(c, a)} for c, a in zip(dataset.cases, replies, strict=True)]
    return report


def check_thresholds(report: dict[str, Any], variant: str, minimums: dict[str, float]) -> list[str]:
    """Each missed minimum as one sentence (metric names as in the report: recall@5, facts_present, ...)."""
    values = {**report["retrieval"].get(variant, {}), **(report.get("answers") or {})}
    missed = []
    for metric, minimum in minimums.items():
        value = values.get(metric)
        if not isinstance(value, int | float):
            missed.append(f"{metric}: not measured in this run (minimum {minimum})")
        elif value < minimum:
            missed.append(f"{metric} of {variant} is {value:.3f}, below the minimum {minimum}")
    return missed


def format_table(report: dict[str, Any]) -> str:
    """The human table: one row per retrieval variant, then the answer measures."""
    lines = [f"{report['dataset']}: {report['cases']} cases"]
    metrics = next((list(v) for v in report["retrieval"].values() if v), [])
    if metrics:
        lines.append(f"{'retrieval':<20}" + "".join(f"{m:>11}" for m in metrics))
        for variant, values in report["retrieval"].items():
            lines.append(f"{variant:<20}" + "".join(f"{values[m]:>11.3f}" for m in metrics))
    answers = report.get("answers")
    if answers:
        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        lines.append(f"answers ({answers['cases']}): facts present {show(answers['facts_present'])} of "
                     f"{answers['answerable']} answerable, abstention precision "
                     f"{show(answers['abstention_precision'])} recall {show(answers['abstention_recall'])} on "
                     f"{answers['unanswerable']} unanswerable, supported sentences "
                     f"{show(answers['supported_sentences'])}, contradictions {answers['contradictions']}, cited "
                     f"relevant {answers['cited_relevant']:.3f}, \"I don't know\" {answers['dont_know_rate']:.3f}, "
                     f"latency p50 {answers['latency_ms']['p50']} ms, p95 {answers['latency_ms']['p95']} ms")
    return "\n".join(lines)
