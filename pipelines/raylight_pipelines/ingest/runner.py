"""The one ingestion entry point: one run of one Pipeline's IngestionPlan (load its sources, chunk them with
the embedder's own tokenizer, embed, sync into the collection). `raylight up`, `raylight ingest` and the
operator's ingestion run (a KubeRay RayJob's entrypoint) all call `run`; connected to a Ray cluster, the
whole run is a Ray Data pipeline (`ingest_ray.ray_ingest`), else it runs in this process (`sync.sync`).
They differ only in the plan (where the embedder and the store are)
and in what they pass in (an embedder already loaded, a progress callback, a client already open).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from raylight.api.connections import IngestionPlan
from raylight.api.types import ModelCache, ModelSource

from raylight_pipelines.embed.embedders import Embedder, HttpEmbedder, LocalEmbedder, from_connection
from raylight_pipelines.ingest.chunking import (
    HFTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    tokenizer_from_service,
)
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import SyncReport, Vectorize, sync
from raylight_pipelines.store.qdrant import Store, connect
from raylight_pipelines.weights import resolve_for

log = logging.getLogger(__name__)


def tokenizer_for(embedder: Embedder, source: ModelSource | None, cache: ModelCache | None = None) -> Tokenizer:
    """The embedder's own tokenizer and window: the in-process model's; for an embedder service, the one
    it reports (GET /v1/tokenizer), else the one of its model source. Raises TokenizerError saying what
    was tried: chunks are never sized with an approximation."""
    if isinstance(embedder, LocalEmbedder):
        if not embedder.max_tokens:
            raise TokenizerError(f"{embedder.model_id}: the model's input window is unknown")
        return HFTokenizer.from_transformers(embedder.tokenizer, embedder.max_tokens, name=embedder.model_id)
    tried = []
    if isinstance(embedder, HttpEmbedder):
        try:
            return tokenizer_from_service(embedder.base_url, embedder.model, name=embedder.model_id)
        except TokenizerError as exc:
            tried.append(str(exc))
    try:
        return load_tokenizer(source, cache)
    except TokenizerError as exc:
        raise TokenizerError("; ".join([*tried, str(exc)])) from None


def on_ray_data(plan: IngestionPlan) -> bool:
    """The whole run goes on Ray Data when the plan asks for it, this process is connected to a Ray cluster,
    the embedder's weights are known (the actors load them) and the workers can reach the store themselves
    (a Qdrant URL, or the Ray actor that owns the embedded folder)."""
    if plan.ray_data is None or plan.embedder.source is None or not (plan.store.url or plan.store.actor):
        return False
    import ray

    return bool(ray.is_initialized())


def _vectorize(plan: IngestionPlan) -> Vectorize | None:
    """Ray Data embedding when the plan asks for it, this process is connected to a Ray cluster and the
    embedder's weights are known; else None (sync embeds through the embedder)."""
    if plan.ray_data is None or plan.embedder.source is None:
        return None
    import ray

    if not ray.is_initialized():
        return None
    from raylight_pipelines.ingest.ray_data import ray_vectorize

    return ray_vectorize(plan.embedder.source, plan.ray_data, plan.embedder.cache)


def _write_report(path: str, report: SyncReport) -> None:
    try:
        Path(path).write_text(json.dumps(report.summary()))
    except OSError as exc:
        log.warning("cannot write the ingestion summary to %s: %s", path, exc)


def run(plan: IngestionPlan, base_dir: Path, embedder: Embedder | None = None,
        progress: Callable[[int, int], None] | None = None, store: Store | None = None) -> SyncReport:
    """Load the plan's sources (paths relative to base_dir) and sync them into its collection.

    progress(done, total): chunks embedded of those to embed in this process; documents done of those listed on
    Ray Data (`on_ray_data(plan)`), where the number of chunks is known only at the end.
    embedder: default from the plan (HTTP when base_url is set, else in this process from the source). store:
    default `connect(plan.store)`, closed at the end. Raises EmbedderError, WeightsError, TokenizerError or
    StoreUnavailable; a document that cannot be read is reported, not raised. With `report_path` set, the summary is
    written there too."""
    if plan.embedder.cache is not None and plan.embedder.source is not None:
        # The embedder's weights come from its spec.cache entry (the claim this run's pods mount): check the entry
        # once, before anything is read or written, so an incomplete one fails the run naming the ModelDeployment.
        resolve_for(plan.embedder.model, plan.embedder.source, plan.embedder.cache)
    embedder = embedder or from_connection(plan.embedder)
    tokenizer = tokenizer_for(embedder, plan.embedder.source, plan.embedder.cache)
    spec = plan.spec
    size, window = spec.chunking.size, tokenizer.max_tokens - tokenizer.count("")
    if size > window:
        log.warning("chunk size %d exceeds the embedder's input window; chunks get at most %d tokens",
                    size, window)
    overlap = min(spec.chunking.overlap, size // 2)
    started = time.monotonic()
    own = store is None
    client = store or connect(plan.store)
    try:
        if on_ray_data(plan):
            from raylight_pipelines.ingest.ray_data import ray_ingest

            report = ray_ingest(plan, base_dir, embedder, tokenizer, client, size, overlap, progress)
        else:
            vectorize = _vectorize(plan)
            loaded = load_sources(list(spec.sources), base_dir, plan.namespace)
            report = sync(client, plan.store.collection, plan.pipeline, loaded, embedder, tokenizer, size,
                          overlap, vectorize=vectorize, progress=progress)
    finally:
        if own:
            client.close()
    report.seconds = round(time.monotonic() - started, 3)
    if plan.report_path:
        _write_report(plan.report_path, report)
    return report
