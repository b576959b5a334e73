"""Ingestion on Ray Data, end to end, for a run connected to a Ray cluster (a KubeRay RayJob's driver on
Kubernetes, the local platform's Ray on one machine). The driver only lists the sources, scans the
collection's state payloads once, and applies the final stamps and deletes; everything per document runs
on the cluster:

    listed inputs ─▶ read + parse + chunk (tasks)  ─▶ embed (actor pool: RayDataOptions)  ─▶ upsert (tasks)
                     plan_document: unchanged?            one model copy per actor             to Qdrant, from
                     reuse old vectors, ids                (GPUs where asked)                   the workers

sync's guarantees hold because the same per-document step (`sync.plan_document`) decides, on the same
content-hash ids: upserts are idempotent (a retried task writes the same points), the kept points are
restamped and stale and vanished ones deleted only after every upsert has landed (`sync.finish`), and a
document counts as unchanged only when all its points carry its new doc_hash. So a run killed anywhere
(a worker, an actor, the whole job) and run again converges to exactly the clean run's points, and a
re-run of an unchanged corpus embeds nothing and writes nothing.

Workers reach the store themselves: a Qdrant server by URL (a cluster), or the Ray actor that owns the
embedded folder (one machine). An embedded folder this process owns cannot be shared, so that case stays
on the in-process path (`ingest.run` decides).
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from raylight.api.connections import IngestionPlan, RayDataOptions, StoreConnection
from raylight.api.types import ModelCache, ModelSource

from raylight_pipelines.embed import bm25
from raylight_pipelines.embed.embedders import Embedder
from raylight_pipelines.ingest.chunking import Tokenizer
from raylight_pipelines.ingest.documents import Document, Failure, Skipped, Unit, http_client, list_sources, load_unit
from raylight_pipelines.ingest.sync import (
    DocPlan,
    PendingPoint,
    SyncReport,
    Vectorize,
    finish,
    plan_document,
    scan,
)
from raylight_pipelines.store.qdrant import ChunkPoint, StoreUnavailable, connect

log = logging.getLogger(__name__)

# Every row between stages has these string columns (one Arrow schema for every block):
#   kind: "embed" (a point to embed), "reused" (a point whose old vector is reused), "doc" (one document's
#   outcome), "written" (what one upsert task wrote); id, passage, payload (JSON), vector (JSON or "").
COLUMNS = ("kind", "id", "passage", "payload", "vector")


@dataclass(frozen=True)
class _Context:
    """What every task needs, shipped once (picklable: the tokenizer included)."""

    pipeline: str
    collection: str
    store: StoreConnection
    tokenizer: Tokenizer
    size: int
    overlap: int
    model: str
    tok_name: str


_clients: dict[str, Any] = {}  # one store client per worker process and store


def _client(store: StoreConnection) -> Any:
    key = store.model_dump_json()
    if key not in _clients:
        _clients[key] = connect(store)
    return _clients[key]


def _rows() -> dict[str, list[str]]:
    return {c: [] for c in COLUMNS}


def _add(rows: dict[str, list[str]], kind: str, id: str = "", passage: str = "", payload: str = "",
         vector: str = "") -> None:
    for column, value in zip(COLUMNS, (kind, id, passage, payload, vector), strict=True):
        rows[column].append(value)


def _doc_row(plan: DocPlan, read: bool) -> str:
    return json.dumps({"source": plan.source_id, "outcome": plan.outcome, "reason": plan.reason, "read": read,
                       "restamp": plan.restamp, "stale": plan.stale})


def read_parse_chunk(batch: dict[str, np.ndarray], ctx: _Context) -> dict[str, list[str]]:
    """Ray Data task: read and parse each listed input, chunk it with the embedder's tokenizer and plan
    its points against what the collection holds (`present`), reusing old vectors of unchanged text."""
    rows = _rows()
    client = _client(ctx.store)
    http = None
    try:
        for raw, present_json in zip(batch["unit"], batch["present"], strict=True):
            unit: Unit = pickle.loads(raw)
            if unit.url is not None and http is None:
                http = http_client()
            item = load_unit(unit, http)
            if not isinstance(item, Document):
                outcome = "skipped" if isinstance(item, Skipped) else "failed"
                _add(rows, "doc", payload=_doc_row(DocPlan(item.source_id, outcome, item.reason), read=False))
                continue
            present = [(pid, p) for pid, p in json.loads(present_json)]
            plan = plan_document(client, ctx.collection, item, present, ctx.pipeline, ctx.tokenizer, ctx.size,
                                 ctx.overlap, ctx.model, ctx.tok_name)
            for p in plan.new:
                _add(rows, "reused" if p.vector is not None else "embed", p.id, p.passage, json.dumps(p.payload),
                     json.dumps(p.vector) if p.vector is not None else "")
            _add(rows, "doc", payload=_doc_row(plan, read=True))
    finally:
        if http is not None:
            http.close()
    return rows


# The embedding stage hands an actor this many encode batches at once. sentence-transformers encodes a call's
# passages shortest first, so a batch pads to the length of passages like its own, not to the longest of the
# documents that happen to come together. On bench/ingest_ray.py's corpus (chunks of 13-234 tokens) one thread
# encoded 0.85x as fast in document-order batches of 32 as in one sorted encode, 0.98x with 512 passages sorted
# at once (8 batches of the default 64); a 1-CPU actor spends 98% of its time in the model's forward pass
# (py-spy), so this is its rate.
SORT_WINDOW_BATCHES = 8


class EmbedPassages:
    """Ray Data actor: loads the embedder once, embeds the passages of the "embed" rows of each batch
    (`batch_size` passages per forward pass, shortest first)."""

    def __init__(self, source: ModelSource, *, batch_size: int, device: str = "cpu",
                 cache: ModelCache | None = None) -> None:
        self.source, self.device, self.batch_size = source, device, batch_size
        self.cache = cache  # the embedder's spec.cache, if any
        self.embedder: Any = None  # loaded with the first passage to embed: an unchanged corpus loads no model

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        kinds = batch["kind"]
        todo = [i for i, k in enumerate(kinds) if k == "embed"]
        vectors = list(batch["vector"])
        if todo:
            if self.embedder is None:
                from raylight_pipelines.embed.embedders import LocalEmbedder

                self.embedder = LocalEmbedder.from_source(self.source, device=self.device, batch_size=self.batch_size,
                                                          cache=self.cache)
            for i, v in zip(todo, self.embedder.embed([str(batch["passage"][i]) for i in todo]), strict=True):
                vectors[i] = json.dumps([float(x) for x in v])
        return {**{c: list(batch[c]) for c in COLUMNS if c != "vector"}, "vector": vectors}


def upsert(batch: dict[str, np.ndarray], ctx: _Context) -> dict[str, list[str]]:
    """Ray Data task: upsert this batch's points (dense + BM25 sparse) and pass the documents' outcomes on,
    with one "written" row saying how many points landed."""
    rows = _rows()
    points, embedded, reused = [], 0, 0
    for kind, pid, passage, payload, vector in zip(*(batch[c] for c in COLUMNS), strict=True):
        if kind in ("embed", "reused"):
            points.append(ChunkPoint(id=str(pid), payload=json.loads(payload), dense=json.loads(vector),
                                     sparse=bm25.document_vector(str(passage))))
            embedded += kind == "embed"
            reused += kind == "reused"
        else:
            _add(rows, str(kind), str(pid), "", str(payload), "")
    if points:
        _client(ctx.store).upsert(ctx.collection, points)
    _add(rows, "written", payload=json.dumps({"embedded": embedded, "reused": reused}))
    return rows


def _cause(exc: BaseException) -> BaseException:
    """The error a task raised, through Ray's wrappers (RayTaskError, UserCodeException)."""
    from raylight_pipelines.embed.embedders import EmbedderError
    from raylight_pipelines.ingest.chunking import TokenizerError
    from raylight_pipelines.weights import WeightsError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (StoreUnavailable, EmbedderError, WeightsError, TokenizerError)):
            return seen
        if type(seen).__module__.startswith(("qdrant_client", "httpx", "httpcore", "grpc")):
            return StoreUnavailable(f"the vector store failed during the run: {type(seen).__name__}: {seen}"[:2000])
        cause = getattr(seen, "cause", None)
        if isinstance(cause, BaseException) and cause is not seen:
            seen = cause
            continue
        seen = seen.__cause__ or seen.__context__
    return exc


def _actor_args(source: ModelSource, options: RayDataOptions, cache: ModelCache | None) -> dict[str, Any]:
    return {"source": source, "device": "cuda" if options.num_gpus else "cpu", "batch_size": options.batch_size,
            "cache": cache}


def _pool(options: RayDataOptions) -> Any:
    """The embedding actor pool: a fixed size, or (min, max) for one that grows with the backlog."""
    import ray.data

    low, high = (options.concurrency, options.concurrency) if isinstance(options.concurrency, int) \
        else options.concurrency
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def stage_limits(cluster_cpus: float) -> int:
    """How many read/parse/chunk tasks, and how many upsert tasks, may run at once on a Ray of
    `cluster_cpus` logical CPUs: one per CPU, at least one.

    Ray Data starts as many tasks as its budget allows, and a task that claims no CPU (the local platform's,
    whose CPUs the Serve replicas hold) is bounded by nothing: 20,000 small documents started 164 worker
    processes on 2 cores. With this bound a run has at most 2 x CPUs task workers beside its embedding actors,
    whatever the corpus and whatever the tasks claim. Raises ValueError for a negative count."""
    if cluster_cpus < 0:
        raise ValueError(f"cluster_cpus: must not be negative, got {cluster_cpus}")
    return max(1, int(cluster_cpus))


def workers_of(options: RayDataOptions) -> int:
    return options.concurrency if isinstance(options.concurrency, int) else options.concurrency[1]


def ray_ingest(plan: IngestionPlan, base_dir: Any, embedder: Embedder, tokenizer: Tokenizer, client: Any,
               size: int, overlap: int, progress: Callable[[int, int], None] | None = None) -> SyncReport:
    """One ingestion run on Ray Data (this process is connected to the Ray cluster; the store is a URL or
    the store actor, which the workers reach themselves). `client` is the driver's own store client."""
    import ray.data

    assert plan.ray_data is not None and plan.embedder.source is not None
    if progress is not None:  # the caller shows its own bar: not Ray Data's bars and per-dataset log lines too
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    opts = plan.ray_data
    spec = plan.spec
    collection = plan.store.collection
    listing = list_sources(list(spec.sources), base_dir, plan.namespace)
    report = SyncReport(seen=len(listing.entries), workers=workers_of(opts))
    protected: set[str] = set()
    for entry in listing.entries:
        if isinstance(entry, Failure):
            DocPlan(entry.source_id, "skipped" if isinstance(entry, Skipped) else "failed", entry.reason).count(report)
            if not isinstance(entry, Skipped):
                protected.add(entry.source_id)
    client.ensure_collection(collection, embedder.dimensions)
    existing = scan(client, collection, plan.pipeline)
    units: list[Unit] = []
    listed: set[str] = set()
    for unit in listing.units:
        if unit.source_id in listed:
            DocPlan(unit.source_id, "skipped", "listed twice; first one kept").count(report)
            continue
        listed.add(unit.source_id)
        units.append(unit)
    ctx = _Context(plan.pipeline, collection, plan.store, tokenizer, size, overlap, embedder.model_id,
                   f"{tokenizer.name}/{tokenizer.max_tokens}")
    restamp: list[tuple[list[str], dict[str, Any]]] = []
    stale: list[str] = []
    seen: set[str] = set()
    if units:
        items = [{"unit": pickle.dumps(u), "present": json.dumps(existing.get(u.source_id, []))} for u in units]
        blocks = max(1, min(len(units) // max(opts.documents_per_task, 1) + 1, 200))
        ds: Any = ray.data.from_items(items, override_num_blocks=blocks)
        # A task that fails on the store (a Qdrant blip) is retried: its reads and upserts are idempotent.
        # Ray 2.60 names no parameter for task retries, so they go as remote args; its deprecation warning for
        # them is silenced here (it would print on every run).
        retry = {"max_retries": 3, "retry_exceptions": True}
        tasks = ray.data.TaskPoolStrategy(size=stage_limits(ray.cluster_resources().get("CPU", 1.0)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ds.map_batches(read_parse_chunk, fn_kwargs={"ctx": ctx}, batch_size=opts.documents_per_task,
                                batch_format="numpy", num_cpus=opts.task_cpus, compute=tasks, **retry)
            ds = ds.map_batches(EmbedPassages, fn_constructor_kwargs=_actor_args(plan.embedder.source, opts,
                                                                                 plan.embedder.cache),
                batch_size=opts.batch_size * SORT_WINDOW_BATCHES, batch_format="numpy", compute=_pool(opts),
                num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)
            ds = ds.map_batches(upsert, fn_kwargs={"ctx": ctx}, batch_size=max(opts.batch_size, 64),
                                batch_format="numpy", num_cpus=opts.task_cpus, compute=tasks, **retry)
        done = 0
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for kind, payload in zip(batch["kind"], batch["payload"], strict=True):
                    record = json.loads(payload)
                    if kind == "written":
                        report.chunks_embedded += record["embedded"]
                        report.chunks_reused += record["reused"]
                        report.points_upserted += record["embedded"] + record["reused"]
                        continue
                    doc = DocPlan(record["source"], record["outcome"], record["reason"],
                                  restamp=(record["restamp"][0], record["restamp"][1]) if record["restamp"] else None,
                                  stale=list(record["stale"]))
                    doc.count(report)
                    if record["read"]:
                        seen.add(doc.source_id)
                    if doc.outcome == "failed":
                        protected.add(doc.source_id)
                    if doc.restamp:
                        restamp.append(doc.restamp)
                    stale += doc.stale
                    done += 1
                    if progress:
                        progress(done, len(units))
        except Exception as exc:
            cause = _cause(exc)
            if cause is not exc:
                raise cause from None
            raise
    finish(client, collection, plan.pipeline, report, existing, restamp, stale, seen, protected, listing.complete,
           listing.keys, lambda stage: None)
    return report


def ray_vectorize(source: ModelSource, options: RayDataOptions | None = None,
                  cache: ModelCache | None = None) -> Vectorize:
    """A sync Vectorize that embeds on the Ray cluster the driver is connected to (ray.init first): the
    embedding stage alone, for a store only this process can write (an embedded folder it owns). `cache`: the
    embedder's spec.cache, whose entry the actors load."""
    opts = options or RayDataOptions()

    def run(points: Sequence[PendingPoint]) -> Iterator[tuple[Sequence[PendingPoint], list[list[float]]]]:
        if not points:
            return
        import ray.data

        items = ray.data.from_items([{"kind": "embed", "id": str(i), "passage": p.passage, "payload": "",
                                      "vector": ""} for i, p in enumerate(points)])
        ds = items.map_batches(
            EmbedPassages,
            fn_constructor_kwargs=_actor_args(source, opts, cache),
            batch_size=opts.batch_size * SORT_WINDOW_BATCHES,
            batch_format="numpy",
            compute=_pool(opts),
            num_gpus=opts.num_gpus,
            num_cpus=opts.num_cpus,
        )
        for batch in ds.iter_batches(batch_size=opts.batch_size, batch_format="numpy"):
            yield [points[int(i)] for i in batch["id"]], [json.loads(v) for v in batch["vector"]]

    return run
