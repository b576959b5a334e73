"""Train a small cross-encoder offline (bench/reranker_training.py) and measure it (run by hand, not by the tests).

    OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/train_reranker.py FOLDER [--candidates 10] [--threads 2]

Trains into FOLDER (kept; pass --reuse to measure a model trained before), then runs `raylight eval -f` in this
process on the BEIR-layout set in tests/fixtures and on the quickstart handbook questions, with MiniLM as the
embedder and the trained model as the rerank ModelDeployment, and prints each table (dense, hybrid,
hybrid + rerank) and the training time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from reranker_training import MINILM, train_cross_encoder

ROOT = Path(__file__).resolve().parents[1]

BEIR = ROOT / "tests" / "fixtures" / "beir-raylight"
QUICKSTART = ROOT / "examples" / "quickstart"


def models(reranker: Path) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "minilm"},
         "spec": {"task": "embed", "model": {"source": MINILM, "license": "apache-2.0"}}},
        {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "xenc"},
         "spec": {"task": "rerank", "model": {"source": f"file://{reranker}", "license": "apache-2.0"}}},
    ]


def pipelines(candidates: int) -> dict[str, dict[str, Any]]:
    """name -> Pipeline manifest: the BEIR set's (its corpus replaces the sources) and the handbook's (as in
    examples/quickstart, without its LLM: only retrieval is measured), both reranking `candidates`."""
    rerank = {"modelDeployment": "xenc", "candidates": candidates}
    handbook = yaml.safe_load((QUICKSTART / "pipeline.yaml").read_text())
    spec = handbook["spec"]
    spec.pop("llm")
    spec.pop("agent", None)
    spec["sources"][0]["path"] = str(QUICKSTART / "docs")
    spec["retrieval"]["rerank"] = rerank
    errors = {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "errors"},
              "spec": {"embedder": {"modelDeployment": "minilm"}, "retrieval": {"topK": 5, "rerank": rerank}}}
    return {"errors": errors, "handbook": handbook}


def evaluate(reranker: Path, candidates: int) -> list[dict[str, Any]]:
    from raylight.cli import main as raylight
    from raylight_pipelines.evaluation.beir import format_table

    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for (name, pipeline), dataset in zip(pipelines(candidates).items(), (BEIR, QUICKSTART / "eval.jsonl"),
                                             strict=True):
            manifest = Path(tmp) / f"{name}.yaml"
            manifest.write_text(yaml.safe_dump_all([*models(reranker), pipeline]))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = raylight(["eval", name, "--dataset", str(dataset), "-f", str(manifest), "--json",
                               "--data-dir", str(Path(tmp) / "data")])
            if rc:
                raise SystemExit(f"raylight eval {name} failed (exit {rc})")
            report = json.loads(out.getvalue())
            print(format_table(report), flush=True)
            reports.append(report)
    return reports


def meets_target(report: dict[str, Any]) -> bool:
    """hybrid + rerank at least as good as hybrid on every measure."""
    hybrid, reranked = report["retrieval"]["hybrid"], report["retrieval"]["hybrid+rerank"]
    return all(reranked[m] >= hybrid[m] for m in hybrid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the model is written")
    parser.add_argument("--candidates", type=int, default=10, help="fused candidates the reranker rescores")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and scoring")
    parser.add_argument("--reuse", action="store_true", help="measure the model already in FOLDER")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    folder = args.folder.resolve()
    started = time.perf_counter()
    if not args.reuse:
        train_cross_encoder(folder)
        print(f"trained in {time.perf_counter() - started:.0f} s on {args.threads} thread(s): {folder}", flush=True)
    reports = evaluate(folder, args.candidates)
    at_least = all(meets_target(r) for r in reports)
    better = any(r["retrieval"]["hybrid+rerank"][m] > r["retrieval"]["hybrid"][m]
                 for r in reports for m in r["retrieval"]["hybrid"])
    print(f"target (hybrid + rerank >= hybrid on every measure of both sets, > on one): "
          f"{'met' if at_least and better else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
