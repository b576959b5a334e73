"""Evidence scores of labelled sets, for calibrating `retrieval.minScore` (docs/grounding.md).

For every case of a JSONL set, the Pipeline's retrieval (in this process, on an in-memory store) runs on the
standalone query, and the agent's evidence score of what came back is printed with the case's label
(answerable or not); the last lines give, per threshold, how many answerable cases would be kept and how many
unanswerable ones refused.

    flock /tmp/raylight-heavy.lock python bench/grounding.py -f examples/quickstart handbook \\
        examples/quickstart/eval.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raylight.cli.data import _local_retriever
from raylight_agents.graphs.base import relevant, to_chunk
from raylight_agents.grounding import Grounder, quote_first
from raylight_pipelines.evaluation.beir import load_dataset
from raylight_pipelines.retrieval.retriever import standalone_query


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-f", dest="files", action="append", type=Path, required=True)
    parser.add_argument("pipeline")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/raylight-grounding-bench"))
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    retriever, spec = _local_retriever(args, dataset)
    grounder = Grounder(retriever.embedder.embed)
    rows = []
    found = with_facts = 0
    for case in dataset.cases:
        query = standalone_query(case.question, case.history)
        chunks = relevant(query, [to_chunk(h) for h in retriever.search(query, top_k=spec.retrieval.top_k)])
        evidence = grounder.evidence(case.question, query, chunks)
        best = evidence[0] if evidence else None
        score = max(e.score for e in evidence) if evidence else 0.0
        rows.append((case.answerable, score))
        quoted = " ".join(e.sentence for e in quote_first(evidence)).lower()
        if case.answerable and case.facts:
            found += all(f.lower() in quoted for f in case.facts)
            with_facts += 1
        label = "A" if case.answerable else "U"
        sem, lex = (best.semantic, best.lexical) if best else (0.0, 0.0)
        print(f"{label} {score:.3f} sem={sem:.2f} lex={lex:.2f} {case.question[:60]!r} -> "
              f"{best.sentence[:90] if best else '-'!r}")
    print(f"expected facts in the quoted sentences: {found}/{with_facts}")
    for threshold in [x / 100 for x in range(20, 62, 2)]:
        kept = sum(1 for a, s in rows if a and s >= threshold)
        refused = sum(1 for a, s in rows if not a and s < threshold)
        print(f"minScore {threshold:.2f}: answerable kept {kept}/{sum(a for a, _ in rows)}, "
              f"unanswerable refused {refused}/{sum(not a for a, _ in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
