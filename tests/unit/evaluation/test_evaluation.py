"""`raylight eval`'s pure parts: reading labelled sets (BEIR layout, simple JSONL), the metrics against
hand-computed values, thresholds, and the standalone query a follow-up is searched with."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from raylight_pipelines.evaluation.beir import (
    NO_HISTORY,
    Answer,
    Case,
    Dataset,
    DatasetError,
    answer_scores,
    check_thresholds,
    evaluate,
    format_table,
    load_dataset,
    matches,
    retrieval_scores,
)
from raylight_pipelines.retrieval.retriever import standalone_query

BEIR = Path(__file__).resolve().parents[2] / "fixtures" / "beir-raylight"


def test_the_beir_set_in_tests_loads_with_its_corpus_and_qrels() -> None:
    dataset = load_dataset(BEIR)
    assert len(dataset.corpus or []) == 24 and len(dataset.cases) == 20
    assert dataset.cases[0].relevant == {"error-RLE-4021": 1}


def test_jsonl_cases_carry_sources_facts_and_history(tmp_path: Path) -> None:
    file = tmp_path / "set.jsonl"
    file.write_text(json.dumps({"question": "How much compute does it save?", "history": ["What is LoRA?"],
                                "expected_sources": ["docs/lora.md"], "expected_facts": ["90%"]}) + "\n\n")
    (case,) = load_dataset(file).cases
    assert case.relevant == {"docs/lora.md": 1} and case.facts == ("90%",) and case.history == ("What is LoRA?",)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "set.jsonl:1: not valid JSON"),
    ('{"question": ""}', "set.jsonl:1: question: must be a non-empty string"),
    ('{"question": "q", "expected_sources": "a.md"}', "set.jsonl:1: expected_sources: must be a list"),
    ('{"question": "q", "answer": "a"}', "set.jsonl:1: answer: unknown field"),
])
def test_a_bad_line_is_named_with_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "set.jsonl").write_text(line + "\n")
    with pytest.raises(DatasetError, match=message.replace(".", r"\.")):
        load_dataset(tmp_path / "set.jsonl")


def test_a_beir_folder_without_qrels_is_refused(tmp_path: Path) -> None:
    for name in ("corpus.jsonl", "queries.jsonl"):
        (tmp_path / name).write_text('{"_id": "1", "text": "x"}\n')
    with pytest.raises(DatasetError, match=r"qrels: no \.tsv file"):
        load_dataset(tmp_path)


def test_sources_match_expected_ids_without_their_kind_prefix() -> None:
    assert matches("path:docs/pipeline.md", "docs/pipeline.md") and matches("path:docs/pipeline.md", "pipeline.md")
    assert matches("inline:error-RLE-4021", "error-RLE-4021")
    assert not matches("path:docs/pipeline.md", "line.md") and not matches("inline:a-b", "b")


def test_metrics_equal_hand_computed_values() -> None:
    # chunks of d3, d1 (twice: counted once), d9, d2; relevant d1 (grade 2) and d2 (grade 1)
    scores = retrieval_scores(["inline:d3", "inline:d1", "inline:d1", "inline:d9", "inline:d2"],
                              {"d1": 2, "d2": 1}, k=2)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert scores == pytest.approx({"recall@2": 0.5, "mrr@10": 0.5, "ndcg@10": dcg / ideal})
    assert retrieval_scores([], {"d1": 1}, k=5) == {"recall@5": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}


def test_answer_measures_and_thresholds() -> None:
    cases = [Case("1", "q", {"docs/a.md": 1}, ("400 tokens",)), Case("2", "q", {"docs/b.md": 1}, ("41",))]
    answers = [Answer("The size is 400 tokens [1].", ["path:docs/a.md", "path:docs/c.md"], False, 100.0),
               Answer("I don't know.", [], True, 10.0)]
    scores = answer_scores(cases, answers)
    assert (scores["facts_present"], scores["cited_relevant"], scores["dont_know_rate"]) == (0.5, 0.5, 0.5)
    assert scores["latency_ms"] == {"p50": 55.0, "p95": 100.0}
    report = {"retrieval": {"hybrid": {"recall@5": 0.8}}, "answers": scores}
    assert check_thresholds(report, "hybrid", {"recall@5": 0.75, "facts_present": 0.5}) == []
    assert check_thresholds(report, "hybrid", {"recall@5": 0.9, "ndcg@10": 0.1}) == [
        "recall@5 of hybrid is 0.800, below the minimum 0.9", "ndcg@10: not measured in this run (minimum 0.1)"]


@pytest.mark.parametrize(("question", "history", "query"), [
    ("How much compute does it save?", ["What is LoRA?"], "What is LoRA? How much compute does it save?"),
    ("And on GPUs?", ["Which runtime serves chat?"], "Which runtime serves chat? And on GPUs?"),
    ("What is the default chunk size?", ["What is LoRA?"], "What is the default chunk size?"),
    ("How much compute does it save?", [], "How much compute does it save?"),
    ("Why is that?", ["first", "How long may a Pipeline name be?"], "How long may a Pipeline name be? Why is that?"),
])
def test_a_follow_up_is_searched_with_the_previous_turn(question: str, history: list[str], query: str) -> None:
    assert standalone_query(question, history) == query


def test_a_run_measures_each_variant_and_follow_ups_with_and_without_their_history() -> None:
    cases = [Case("1", "What is LoRA?", {"lora.md": 1}),
             Case("2", "Which runtime does it need?", {"lora.md": 1}, history=("What is LoRA?",))]
    asked: list[tuple[str, dict[str, bool]]] = []

    def search(case: Case, options: dict[str, bool], k: int) -> list[str]:
        query = standalone_query(case.question, case.history)
        asked.append((query, options))
        return ["path:docs/lora.md"] if "LoRA" in query else ["path:docs/other.md"]

    report = evaluate(Dataset("set", cases), search, ["dense", "hybrid"], k=5)
    assert report["retrieval"]["hybrid"]["recall@5"] == 1.0
    assert report["retrieval"][NO_HISTORY] == {"recall@5": 0.5, "mrr@10": 0.5, "ndcg@10": 0.5}
    assert {q for q, o in asked if not o["hybrid"]} == {"What is LoRA?", "What is LoRA? Which runtime does it need?"}
    assert [line.split()[0] for line in format_table(report).splitlines()[2:]] == ["dense", "hybrid", "hybrid,"]


def test_answer_scores_measure_facts_abstention_support_and_contradictions() -> None:
    cases = [Case("a1", "q1", {"d.md": 1}, ("400",)), Case("a2", "q2", {"d.md": 1}, ("50",)),
             Case("a3", "q3", {"d.md": 1}, ("41",), contradictions=(r"\byes\b",)),
             Case("u1", "q4", answerable=False), Case("u2", "q5", answerable=False)]
    ok = [{"text": "s", "refs": [1], "supported": True}]
    answers = [Answer("Chunks are 400 tokens [1].", ["path:d.md"], False, 10, ok),
               Answer("I don't know.", [], True, 10),  # abstained on an answerable one: a wrong abstention
               Answer("Yes. It is 41.", ["path:d.md"], False, 10, [*ok, {"text": "x", "refs": [], "supported": False}]),
               Answer("I don't know.", [], True, 10),
               Answer("It is 7.", ["path:x.md"], False, 10, ok)]
    scores = answer_scores(cases, answers)
    assert scores["facts_present"] == 0.6667  # a1 and a3 state their fact; the abstention on a2 is a miss
    assert scores["abstention_precision"] == 0.5 and scores["abstention_recall"] == 0.5
    assert scores["supported_sentences"] == 0.75 and scores["contradictions"] == 1
    assert (scores["answerable"], scores["unanswerable"]) == (3, 2)


def test_jsonl_cases_take_answerable_and_contradictions_and_name_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "q", "answerable": false}\n{"question": "r", "contradictions": ["\\\\byes"]}\n')
    first, second = load_dataset(path).cases
    assert not first.answerable and second.answerable and second.contradictions == (r"\byes",)
    for line, field in [('{"question": "q", "answerable": "no"}', "answerable"),
                        ('{"question": "q", "answerable": false, "expected_facts": ["x"]}', "answerable"),
                        ('{"question": "q", "contradictions": ["("]}', "contradictions")]:
        path.write_text(line + "\n")
        with pytest.raises(DatasetError, match=f":1: {field}:"):
            load_dataset(path)
