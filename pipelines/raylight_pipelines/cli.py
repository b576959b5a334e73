"""`raylight ingest` and `raylight search` (local embedded store under --data-dir, or an operator's plan)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylight.api.manifests import Manifest, load
from raylight.api.types import ModelDeployment, Pipeline, PipelineSpec
from raylight.api.validate import check_set
from raylight.desired.pipeline import embedder_model
from raylight.settings import Settings

log = logging.getLogger("raylight.ingest")


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def load_manifests(files: list[Path]) -> tuple[list[Manifest], int]:
    """Parse and check; problems printed as `FILE: KIND/NAME: FIELD: message` (exit code 1)."""
    result = load(files)
    problems = result.problems or check_set(result.manifests, Settings.from_env().license_policy)
    for problem in problems:
        print(problem, file=sys.stderr)
    return result.manifests, 1 if problems else 0


def _progress(label: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=label, unit="chunk", file=sys.stderr)
        bar["bar"].n = done
        bar["bar"].refresh()

    return update, lambda: bar["bar"].close() if "bar" in bar else None


def _print_counts(counts: dict[str, Any], as_json: bool, name: str | None = None) -> None:
    if as_json:
        return
    keys = ("added", "updated", "unchanged", "deleted", "failed")
    line = ", ".join(f"{counts[k]} {k}" for k in keys)
    print(f"{name + ': ' if name else ''}{line} ({counts['chunks_embedded']} chunks embedded, "
          f"{counts['points']} in the collection)")
    for f in counts.get("failures", []):
        print(f"  failed {f['source']}: {f['reason']}", file=sys.stderr)


def ingest_command(args: argparse.Namespace) -> int:
    _setup_logging()
    if args.plan:
        return _ingest_plan(args)
    if not args.files:
        return _fail("give manifests with -f FILE|DIR (or an ingestion plan with --plan FILE)")
    manifests, rc = load_manifests(args.files)
    if rc:
        return rc
    pipelines = [m for m in manifests if isinstance(m.resource, Pipeline)
                 and (not args.pipeline or m.resource.metadata.name == args.pipeline)]
    if not pipelines:
        return _fail(f"no Pipeline{' named ' + repr(args.pipeline) if args.pipeline else ''} in the manifests")
    models = {m.resource.metadata.name: m.resource for m in manifests if isinstance(m.resource, ModelDeployment)}

    from raylight_pipelines.embedders import EmbedderError, LocalEmbedder
    from raylight_pipelines.ingest import local_store_conn, run_ingestion, save_pipeline_info, tokenizer_for
    from raylight_pipelines.store import StoreUnavailable
    from raylight_pipelines.sync import SyncReport
    from raylight_pipelines.weights import WeightsError

    total = SyncReport()
    per: dict[str, dict[str, Any]] = {}
    embedders: dict[str, LocalEmbedder] = {}
    for m in pipelines:
        pipeline = m.resource
        assert isinstance(pipeline, Pipeline)
        name = pipeline.metadata.name
        md = models[pipeline.spec.embedder.model_deployment]
        source = embedder_model(md)
        try:
            if md.metadata.name not in embedders:
                embedders[md.metadata.name] = LocalEmbedder.from_source(source or {})
            embedder = embedders[md.metadata.name]
            base_dir = m.file.parent.resolve()
            conn = local_store_conn(args.data_dir, pipeline)
            update, close = _progress(name)
            try:
                report = run_ingestion(name, pipeline.spec, base_dir, conn, embedder,
                                       tokenizer_for(embedder, source), progress=update)
            finally:
                close()
            save_pipeline_info(args.data_dir, pipeline, md, base_dir)
        except (WeightsError, EmbedderError, StoreUnavailable) as exc:
            return _fail(f"{name}: {exc}")
        except RuntimeError as exc:
            if "already accessed by another instance" in str(exc):
                return _fail(f"{name}: the store at {args.data_dir} is in use by another process "
                             "(is `raylight up` running with another --data-dir state?)")
            raise
        counts = report.counts()
        per[name] = counts
        total.merge(report)
        _print_counts(counts, args.json, name if len(pipelines) > 1 else None)
    if args.json:
        out = total.counts()
        if len(per) > 1:
            out["pipelines"] = per
        print(json.dumps(out))
    return 0


def _ingest_plan(args: argparse.Namespace) -> int:
    """What the operator's Job runs: the plan says where the embedder (HTTP) and the store are. With
    RAY_ADDRESS set, embedding runs on that Ray cluster through Ray Data instead."""
    from raylight_pipelines.chunking import load_tokenizer
    from raylight_pipelines.embedders import EmbedderError, HttpEmbedder
    from raylight_pipelines.ingest import run_ingestion
    from raylight_pipelines.store import StoreUnavailable

    try:
        plan = json.loads(args.plan.read_text())
        spec = PipelineSpec.model_validate(plan["spec"])
    except (OSError, ValueError, KeyError) as exc:
        return _fail(f"{args.plan}: not a valid ingestion plan: {exc}")
    emb = plan["embedder"]
    embedder = HttpEmbedder(emb["base_url"], emb["model"], emb.get("dimensions"))
    vectorize = None
    if os.environ.get("RAY_ADDRESS") and emb.get("source"):
        import ray

        from raylight_pipelines.ingest_ray import ray_vectorize

        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        deployment = emb.get("deployment") or {}
        vectorize = ray_vectorize(emb["source"], concurrency=deployment.get("replicas", 1),
                                  num_gpus=deployment.get("gpus", 0), num_cpus=deployment.get("cpus", 1))
    try:
        report = run_ingestion(plan["pipeline"], spec, Path.cwd(), plan["store"], embedder,
                               load_tokenizer(emb.get("source")), namespace=plan.get("namespace", "default"),
                               vectorize=vectorize)
    except (EmbedderError, StoreUnavailable) as exc:
        return _fail(f"{plan['pipeline']}: {exc}")
    counts = report.counts()
    _print_counts(counts, args.json)
    if args.json:
        print(json.dumps(counts))
    return 0


def search_command(args: argparse.Namespace) -> int:
    _setup_logging()
    from raylight_pipelines.embedders import EmbedderError, LocalEmbedder
    from raylight_pipelines.ingest import local_store_conn, pipeline_info
    from raylight_pipelines.retrieval import Retriever
    from raylight_pipelines.store import StoreUnavailable, connect
    from raylight_pipelines.weights import WeightsError

    pipeline: Pipeline | str = args.pipeline
    if args.files:
        manifests, rc = load_manifests(args.files)
        if rc:
            return rc
        found = [m.resource for m in manifests
                 if isinstance(m.resource, Pipeline) and m.resource.metadata.name == args.pipeline]
        if not found:
            return _fail(f"no Pipeline named {args.pipeline!r} in the manifests")
        pipeline = found[0]
        assert isinstance(pipeline, Pipeline)
        models = {m.resource.metadata.name: m.resource for m in manifests
                  if isinstance(m.resource, ModelDeployment)}
        spec, source = pipeline.spec, embedder_model(models[pipeline.spec.embedder.model_deployment])
    else:
        info = pipeline_info(args.data_dir, args.pipeline)
        if info is None:
            return _fail(f"pipeline {args.pipeline!r} was never ingested with --data-dir {args.data_dir}; "
                         "run `raylight ingest -f ...` first or pass -f")
        spec, source = PipelineSpec.model_validate(info["spec"]), info["embedder"]["source"]
    conn = local_store_conn(args.data_dir, pipeline)
    try:
        if not source:
            return _fail(f"{args.pipeline}: the embedder has no model source")
        embedder = LocalEmbedder.from_source(source)
        client = connect(conn)
        retriever = Retriever(client, conn["collection"], embedder, spec.retrieval,
                              pipeline=args.pipeline)
        ok, why = retriever.ready()
        if not ok:
            return _fail(f"{args.pipeline}: {why}")
        hits = retriever.search(args.query, top_k=args.top_k)
    except (WeightsError, EmbedderError, StoreUnavailable) as exc:
        return _fail(f"{args.pipeline}: {exc}")
    if args.json:
        print(json.dumps([{"source": h.source, "title": h.title, "heading": h.heading, "text": h.text,
                           "score": h.score, "page": h.page, "start": h.start, "end": h.end, "id": h.id}
                          for h in hits]))
        return 0
    for rank, h in enumerate(hits, 1):
        where = h.source + (f" p.{h.page}" if h.page else "") + (f" § {h.heading}" if h.heading else "")
        snippet = " ".join(h.text.split())
        print(f"{rank}. [{h.score:.3f}] {where}\n   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")
    if not hits:
        print("no results", file=sys.stderr)
    return 0
