"""`raylight ingest` and `raylight search` on the quickstart manifests with an embedded store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from raylight.cli import main as raylight

pytestmark = pytest.mark.integration
QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"
KEYS = {"added", "updated", "unchanged", "deleted", "failed"}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    dest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, dest)
    return dest


def ingest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc = raylight(["ingest", *args, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if rc == 0 else {}


def test_ingest_then_search_with_just_the_pipeline_name(example, tmp_path, capsys):
    data = str(tmp_path / "state")
    rc, first = ingest(capsys, "-f", str(example), "--data-dir", data)
    assert rc == 0 and set(first) >= KEYS
    docs = len(list((example / "docs").glob("*.md")))
    assert (first["added"], first["failed"]) == (docs, 0) and first["points"] > docs

    (example / "docs" / "security.md").write_text("# Security\n\nAccess control is applied inside the filter.\n")
    (example / "docs" / "cluster.md").unlink()
    rc, second = ingest(capsys, "-f", str(example / "pipeline.yaml"), "-f", str(example / "models.yaml"),
                        "--pipeline", "handbook", "--data-dir", data)
    assert rc == 0
    assert (second["added"], second["updated"], second["unchanged"], second["deleted"]) == (0, 1, docs - 2, 1)

    assert raylight(["search", "handbook", "What is the default chunk size?", "--top-k", "3", "--json",
                     "--data-dir", data]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and {"source", "text", "score"} <= set(hits[0])
    assert any("400 tokens" in h["text"] for h in hits)
    assert raylight(["search", "handbook", "default port", "--data-dir", data]) == 0
    assert "1. [" in capsys.readouterr().out


def test_invalid_manifest_is_reported_by_field(example, tmp_path, capsys):
    text = (example / "pipeline.yaml").read_text().replace("size: 200, overlap: 30", "size: 20, overlap: 30")
    (example / "pipeline.yaml").write_text(text)
    assert raylight(["ingest", "-f", str(example), "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{example / 'pipeline.yaml'}: Pipeline/handbook: spec.chunking: " in err
    assert "overlap (30) must be smaller than size (20)" in err


def test_unknown_pipeline_and_search_before_ingest_fail_with_one_sentence(example, tmp_path, capsys):
    assert raylight(["ingest", "-f", str(example), "--pipeline", "nope", "--data-dir", str(tmp_path)]) == 1
    assert "no Pipeline named 'nope'" in capsys.readouterr().err
    assert raylight(["search", "handbook", "x", "--data-dir", str(tmp_path)]) == 1
    assert "never ingested" in capsys.readouterr().err


def test_ingest_json_lists_what_the_awkward_corpus_skips_and_search_never_finds_secrets(tmp_path, capsys):
    # Issue #14, input 1 end to end: `raylight search handbook "what is the API key"` returned docs/.env.
    from unit.ingest.sample_files import build_corpus

    root = build_corpus(tmp_path / "kb")
    expected = json.loads((root / "expected.json").read_text())
    (root / "docs" / "handbook.md").write_text("# Access\n\nAsk the platform team for an API key.\n")
    shutil.copy(QUICKSTART / "models.yaml", root / "models.yaml")
    (root / "pipeline.yaml").write_text(
        "apiVersion: raylight.io/v1alpha1\nkind: Pipeline\nmetadata: {name: handbook}\n"
        "spec:\n  embedder: {modelDeployment: minilm}\n  llm: {modelDeployment: smollm}\n  sources: [{path: ./docs}]\n")
    data = str(tmp_path / "state")
    rc = raylight(["ingest", "-f", str(root / "models.yaml"), "-f", str(root / "pipeline.yaml"), "--data-dir", data,
                   "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    kept = [k for k, v in expected.items() if "skipped" not in v and "failed" not in v]
    skipped = {f"path:docs/{k}": v["skipped"] for k, v in expected.items() if "skipped" in v}
    assert (report["added"], report["failed"]) == (len(kept) + 1, 2)
    assert report["skipped"] == len(skipped) == len(report["skips"])
    assert all(skipped[s["source"]] in s["reason"] for s in report["skips"])

    assert raylight(["search", "handbook", "what is the API key", "--json", "--data-dir", data]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and hits[0]["source"] == "path:docs/handbook.md"
    assert not any("sk-example" in h["text"] or ".env" in h["source"] or ".git" in h["source"] for h in hits)
