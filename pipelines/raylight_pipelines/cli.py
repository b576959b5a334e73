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
    keys = ("added", "updated", "unchanged", "deleted", "skipped", "failed")
    line = ", ".join(f"{counts[k]} {k}" for k in keys)
    print(f"{name + ': ' if name else ''}{line} ({counts['chunks_embedded']} chunks embedded, "
          f"{counts['points']} in the collection)")
    for s in counts.get("skips", []):
        print(f"  skipped {s['source']}: {s['reason']}", file=sys.stderr)
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

    from raylight_pipelines.chunking import TokenizerError
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
        except (WeightsError, EmbedderError, StoreUnavailable, TokenizerError) as exc:
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
    from raylight_pipelines.chunking import TokenizerError
    from raylight_pipelines.embedders import EmbedderError, HttpEmbedder
    from raylight_pipelines.ingest import run_ingestion, tokenizer_for
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
                               tokenizer_for(embedder, emb.get("source")), namespace=plan.get("namespace", "default"),
                               vectorize=vectorize)
    except (EmbedderError, StoreUnavailable, TokenizerError) as exc:
        return _fail(f"{plan['pipeline']}: {exc}")
    counts = report.counts()
    _print_counts(counts, args.json)
    if args.json:
        print(json.dumps(counts))
    if plan.get("report_path"):
        try:
            Path(plan["report_path"]).write_text(json.dumps(report.summary()))
        except OSError as exc:
            log.warning("cannot write the ingestion summary to %s: %s", plan["report_path"], exc)
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


# ---------------------------------------------------------------- eval


def _thresholds(args: argparse.Namespace) -> dict[str, float]:
    wanted = {f"recall@{args.k}": args.min_recall, "mrr@10": args.min_mrr, "ndcg@10": args.min_ndcg,
              "facts_present": args.min_facts}
    return {metric: value for metric, value in wanted.items() if value is not None}


def _local_search(args: argparse.Namespace, dataset: Any) -> tuple[Any, PipelineSpec]:
    """The Pipeline from the manifests, on an in-memory store filled with its sources (or the dataset's
    corpus), its embedder and reranker in this process."""
    from qdrant_client import QdrantClient
    from raylight.api.types import InlineDocument, Source

    from raylight_pipelines.embedders import LocalEmbedder
    from raylight_pipelines.ingest import run_ingestion, tokenizer_for
    from raylight_pipelines.rerankers import LocalReranker
    from raylight_pipelines.retrieval import Retriever, standalone_query

    manifests, rc = load_manifests(args.files)
    if rc:
        raise ValueError("the manifests are not valid (see above)")
    found = [m for m in manifests if isinstance(m.resource, Pipeline) and m.resource.metadata.name == args.pipeline]
    if not found:
        raise ValueError(f"no Pipeline named {args.pipeline!r} in the manifests")
    pipeline = found[0].resource
    assert isinstance(pipeline, Pipeline)
    models = {m.resource.metadata.name: m.resource for m in manifests if isinstance(m.resource, ModelDeployment)}
    spec = pipeline.spec
    if dataset.corpus is not None:
        docs = [InlineDocument(id=d["id"], text=d["text"], title=d["title"] or None) for d in dataset.corpus]
        spec = spec.model_copy(update={"sources": [Source(documents=docs)]})
    source = embedder_model(models[spec.embedder.model_deployment])
    embedder = LocalEmbedder.from_source(source or {})
    client = QdrantClient(":memory:")
    conn = {"collection": args.pipeline}
    run_ingestion(args.pipeline, spec, found[0].file.parent.resolve(), conn, embedder,
                  tokenizer_for(embedder, source), client=client)
    rerank = spec.retrieval.rerank
    reranker = LocalReranker(embedder_model(models[rerank.model_deployment]) or {}) if rerank else None
    retriever = Retriever(client, args.pipeline, embedder, spec.retrieval, pipeline=args.pipeline, reranker=reranker)

    def search(case: Any, options: dict[str, bool], k: int) -> list[str]:
        query = standalone_query(case.question, case.history)
        return [h.source for h in retriever.search(query, top_k=k, hybrid=options["hybrid"],
                                                   rerank=options["rerank"])]

    return search, spec


def _endpoint(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """Base URL and headers: --url (token from $RAYLIGHT_AGENT_TOKEN), else the local platform's."""
    from raylight_pipelines.ingest import platform_state

    token = os.environ.get("RAYLIGHT_AGENT_TOKEN")
    if args.url:
        url = args.url.rstrip("/")
    else:
        state = platform_state(args.data_dir)
        if not state:
            raise ValueError(f"no platform is running from {args.data_dir}: start one with `raylight up`, give "
                             "the manifests with -f (evaluates in this process) or a cluster endpoint with --url")
        url = state["url"]
        token_file = state.get("token_file")
        if not token and token_file and Path(token_file).exists():
            token = Path(token_file).read_text().strip()
    return url, {"Authorization": f"Bearer {token}"} if token else {}


def _remote(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """search and ask through a running Pipeline's HTTP API; also its retrieval settings."""
    import time

    import httpx

    from raylight_pipelines.evaluation import Answer

    url, headers = _endpoint(args)
    http = httpx.Client(base_url=f"{url}/v1/pipelines/{args.pipeline}", headers=headers, timeout=600)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = http.post(path, json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"{path} answered HTTP {resp.status_code}: {resp.text[:300]}")
        out: dict[str, Any] = resp.json()
        return out

    def search(case: Any, options: dict[str, bool], k: int) -> list[str]:
        body = {"query": case.question, "history": list(case.history), "top_k": k, **options}
        return [r["source"] for r in post("/search", body)["results"]]

    def ask(case: Any) -> Answer:
        thread = None
        for turn in case.history:
            thread = post("/invoke", {"input": turn, **({"thread_id": thread} if thread else {})})["thread_id"]
        started = time.perf_counter()
        out = post("/invoke", {"input": case.question, **({"thread_id": thread} if thread else {})})
        return Answer(out["answer"], [c["source"] for c in out["citations"]], out["grounding"] == "none",
                      (time.perf_counter() - started) * 1000)

    settings = post("/search", {"query": "probe", "top_k": 1})["retrieval"]
    models = http.get(f"{url}/v1/models").json().get("data", [])
    settings["answers"] = any(m.get("id") == args.pipeline and not m.get("search_only") for m in models)
    return search, ask, settings


def eval_command(args: argparse.Namespace) -> int:
    """`raylight eval PIPELINE --dataset PATH`: retrieval (dense, hybrid, hybrid + rerank) and answer
    measures; exit 1 when a --min-* threshold is missed."""
    _setup_logging()
    from raylight_pipelines.evaluation import DatasetError, check_thresholds, evaluate, format_table, load_dataset

    try:
        dataset = load_dataset(args.dataset)
    except (DatasetError, OSError) as exc:
        return _fail(str(exc))
    ask = None
    try:
        if args.files:
            search, spec = _local_search(args, dataset)
            reranks, hybrid = spec.retrieval.rerank is not None, spec.retrieval.hybrid
        else:
            search, remote_ask, settings = _remote(args)
            reranks, hybrid = settings["rerank"], settings["hybrid"]
            ask = remote_ask if settings["answers"] and dataset.corpus is None and not args.no_answers else None
        variants = ["dense", "hybrid", *(["hybrid+rerank"] if reranks else [])]
        report = evaluate(dataset, search, variants, args.k, ask)
    except Exception as exc:  # one sentence for the user, whatever failed underneath
        log.debug("eval failed", exc_info=True)
        return _fail(f"eval of {args.pipeline} failed: {type(exc).__name__}: {exc}")
    configured = "hybrid+rerank" if reranks else "hybrid" if hybrid else "dense"
    report.update(pipeline=args.pipeline, configured=configured)
    missed = check_thresholds(report, configured, _thresholds(args))
    report["thresholds"] = {"missed": missed, "ok": not missed}
    print(json.dumps(report) if args.json else format_table(report))
    for line in missed:
        print(f"threshold missed: {line}", file=sys.stderr)
    return 1 if missed else 0
