"""`raylight ingest --plan` (what the operator's Job runs): HTTP embedder + the store named in the plan."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from raylight.api.manifests import load
from raylight.api.types import ModelDeployment, Pipeline
from raylight.cli import main as raylight
from raylight.desired.pipeline import get_ingestion_plan
from raylight.settings import Settings

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


class Embeddings(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = [{"object": "embedding", "index": i,
                 "embedding": [b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]]}
                for i, t in enumerate(body["input"])]
        out = json.dumps({"object": "list", "data": data, "model": body["model"],
                          "usage": {"prompt_tokens": 0, "total_tokens": 0}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def embedder_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_plan_ingests_through_the_http_embedder(tmp_path, embedder_url, capsys, monkeypatch):
    manifests = load([QUICKSTART]).manifests
    pipeline = next(m.resource for m in manifests if isinstance(m.resource, Pipeline))
    md = next(m.resource for m in manifests if isinstance(m.resource, ModelDeployment)
              and m.resource.metadata.name == "minilm")
    assert isinstance(pipeline, Pipeline) and isinstance(md, ModelDeployment)
    plan = get_ingestion_plan(pipeline, "default", Settings(), md)
    plan["embedder"].update(base_url=embedder_url, dimensions=8)
    plan["store"].update(url=None, path=str(tmp_path / "qdrant"))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    monkeypatch.chdir(QUICKSTART)  # the Job's working directory: source paths resolve against it
    assert raylight(["ingest", "--plan", str(tmp_path / "plan.json"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["added"] == len(list((QUICKSTART / "docs").glob("*.md"))) and counts["failed"] == 0
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    assert client.count("handbook").count == counts["points"]
    client.close()


def test_a_broken_plan_fails_with_one_sentence(tmp_path, capsys):
    (tmp_path / "plan.json").write_text("{not json")
    assert raylight(["ingest", "--plan", str(tmp_path / "plan.json")]) == 1
    assert "not a valid ingestion plan" in capsys.readouterr().err
