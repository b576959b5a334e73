"""`raylight ingest --plan` (what the operator's Job runs) and `raylight_pipelines.ingest.runner.run` under it: HTTP
embedder + the store named in the plan, the summary written to the plan's report_path."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from raylight.api.connections import IngestionPlan
from raylight.api.manifests import load
from raylight.api.types import ModelDeployment, Pipeline
from raylight.cli import main as raylight
from raylight.desired.pipeline import get_ingestion_plan
from raylight.settings import Settings
from raylight_pipelines.ingest import runner as ingest
from raylight_pipelines.store.edge import EdgeStore

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


class Embeddings(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/embeddings; `vectors` makes the vectors (here: 8 numbers from a hash)."""

    def vectors(self, texts: list[str]) -> list[list[float]]:
        return [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(self.vectors(body["input"]))]
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


def quickstart_plan(tmp_path: Path, embedder_url: str) -> IngestionPlan:
    """The quickstart's cluster plan, pointed at the fake embedder, an embedded store and a report file."""
    manifests = load([QUICKSTART]).manifests
    pipeline = next(m.resource for m in manifests if isinstance(m.resource, Pipeline))
    md = next(m.resource for m in manifests if isinstance(m.resource, ModelDeployment)
              and m.resource.metadata.name == "minilm")
    assert isinstance(pipeline, Pipeline) and isinstance(md, ModelDeployment)
    plan = get_ingestion_plan(pipeline, "default", Settings(), md)
    return plan.model_copy(update={
        "embedder": plan.embedder.model_copy(update={"base_url": embedder_url, "dimensions": 8}),
        "store": plan.store.model_copy(update={"url": None, "path": str(tmp_path / "qdrant")}),
        "report_path": str(tmp_path / "report.json"),
    })


def test_plan_ingests_through_the_http_embedder(tmp_path, embedder_url, capsys, monkeypatch):
    plan = quickstart_plan(tmp_path, embedder_url)
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_wire()))
    monkeypatch.chdir(QUICKSTART)  # the Job's working directory: source paths resolve against it
    assert raylight(["ingest", "--plan", str(tmp_path / "plan.json"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["added"] == len(list((QUICKSTART / "docs").glob("*.md"))) and counts["failed"] == 0
    client = EdgeStore(tmp_path / "qdrant")
    assert client.count("handbook") == counts["points"]
    client.close()
    assert json.loads((tmp_path / "report.json").read_text())["points"] == counts["points"]


def test_run_takes_the_plan_and_writes_its_summary(tmp_path, embedder_url, caplog):
    plan = quickstart_plan(tmp_path, embedder_url)
    assert plan.ray_data is not None  # asked for, but this process is on no Ray cluster: embeds over HTTP
    client = EdgeStore(tmp_path / "store")
    report = ingest.run(plan, QUICKSTART, store=client)
    assert report.added == len(list((QUICKSTART / "docs").glob("*.md"))) and report.failed == 0
    assert client.count(plan.store.collection) == report.points  # the client passed in stays open
    assert json.loads((tmp_path / "report.json").read_text()) == report.summary()
    again = ingest.run(plan.model_copy(update={"report_path": str(tmp_path / "no-such-dir" / "r.json")}),
                       QUICKSTART, store=client)  # an unwritable report is a warning, never a failure
    assert again.unchanged == report.added and "cannot write the ingestion summary" in caplog.text
    client.close()


def test_a_broken_plan_fails_with_one_sentence(tmp_path, capsys):
    (tmp_path / "plan.json").write_text("{not json")
    assert raylight(["ingest", "--plan", str(tmp_path / "plan.json")]) == 1
    assert "not a valid ingestion plan" in capsys.readouterr().err


def test_a_failed_run_s_last_line_says_why_for_the_operator(tmp_path, capsys, monkeypatch):
    """The RayJob's submitter keeps the run's last JSON line as its termination message: on failure, the error."""
    plan = quickstart_plan(tmp_path, "http://127.0.0.1:9/v1")  # nothing listens: the embedder is unreachable
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_wire()))
    monkeypatch.chdir(QUICKSTART)
    assert raylight(["ingest", "--plan", str(tmp_path / "plan.json"), "--json"]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"error"} and "127.0.0.1:9" in last["error"]


def test_switching_between_the_embedder_service_and_the_model_in_process_re_embeds_nothing(tmp_path):
    """`raylight up` embeds through the embedder's service, `raylight ingest -f` in process, the cluster's run on
    Ray Data: the points name the model by its weights' source on every path, so a switch keeps every chunk."""
    from raylight_pipelines.embed.embedders import LocalEmbedder

    plan = quickstart_plan(tmp_path, "http://unused/v1")
    assert plan.embedder.source is not None
    model = LocalEmbedder.from_source(plan.embedder.source)

    class RealEmbeddings(Embeddings):
        def vectors(self, texts: list[str]) -> list[list[float]]:
            return model.embed(texts)

    server = ThreadingHTTPServer(("127.0.0.1", 0), RealEmbeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        service = plan.model_copy(update={"embedder": plan.embedder.model_copy(
            update={"base_url": url, "dimensions": None}), "report_path": None})
        first = ingest.run(service, QUICKSTART).counts()
        in_process = service.model_copy(update={"embedder": service.embedder.model_copy(update={"base_url": None})})
        again = ingest.run(in_process, QUICKSTART, model).counts()
    finally:
        server.shutdown()
    assert first["chunks_embedded"] > 0 and first["added"] > 0
    assert (again["chunks_embedded"], again["updated"], again["unchanged"]) == (0, 0, first["added"])
