"""`raylight ingest`, `raylight search` and `raylight eval`: on the local embedded store under --data-dir
(through the running platform's store actor while `raylight up` runs), or, for `ingest --plan`, what the
operator's ingestion run executes on a cluster. Every ingestion goes through `raylight_pipelines.ingest.runner.run`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from raylight.api.connections import IngestionPlan
from raylight.api.manifests import Manifest
from raylight.api.types import ModelDeployment, Pipeline, PipelineSpec
from raylight.cli.output import fail, load_manifests, print_counts, quiet_logging
from raylight.local import state as st
from raylight.local.console import progress
from raylight.local.plan import local_ingestion_plan

log = logging.getLogger("raylight.ingest")


def _models(manifests: list[Manifest]) -> dict[str, ModelDeployment]:
    return {m.resource.metadata.name: m.resource for m in manifests if isinstance(m.resource, ModelDeployment)}


def _platform(data_dir: Path) -> dict[str, Any] | None:
    """The running platform's state (joined as a Ray driver, so its store actor answers), or None."""
    from raylight.local import procs

    state = st.read_state(data_dir)
    if not procs.platform_running(state):
        return None
    assert state is not None
    st.join_ray(state["ray_address"])
    return state


def ingest_command(args: argparse.Namespace) -> int:
    quiet_logging()
    if args.plan:
        return _ingest_plan(args)
    if not args.files:
        return fail("give manifests with -f FILE|DIR (or an ingestion plan with --plan FILE)")
    manifests, rc = load_manifests(args.files)
    if rc:
        return rc
    pipelines = [m for m in manifests if isinstance(m.resource, Pipeline)
                 and (not args.pipeline or m.resource.metadata.name == args.pipeline)]
    if not pipelines:
        return fail(f"no Pipeline{' named ' + repr(args.pipeline) if args.pipeline else ''} in the manifests")
    models = _models(manifests)

    from raylight_pipelines.embed.embedders import Embedder, EmbedderError, from_connection
    from raylight_pipelines.ingest import runner as ingestion
    from raylight_pipelines.ingest.chunking import TokenizerError
    from raylight_pipelines.ingest.sync import SyncReport
    from raylight_pipelines.store.qdrant import StoreUnavailable
    from raylight_pipelines.weights import WeightsError

    state = _platform(args.data_dir)
    total = SyncReport()
    per: dict[str, dict[str, Any]] = {}
    embedders: dict[str, Embedder] = {}
    for m in pipelines:
        pipeline = m.resource
        assert isinstance(pipeline, Pipeline)
        name = pipeline.metadata.name
        plan = local_ingestion_plan(pipeline, models.get(pipeline.spec.embedder.model_deployment), args.data_dir,
                                    state)
        base_dir = m.file.parent.resolve()
        try:
            if plan.embedder.model not in embedders:  # one model load per embedder, in this process
                embedders[plan.embedder.model] = from_connection(plan.embedder, local=True)
            update, close = progress(name, "document" if ingestion.on_ray_data(plan) else "chunk")
            try:
                report = ingestion.run(plan, base_dir, embedders[plan.embedder.model], progress=update)
            finally:
                close()
            st.save_pipeline_info(args.data_dir, plan, base_dir)
        except (WeightsError, EmbedderError, StoreUnavailable, TokenizerError) as exc:
            return fail(f"{name}: {exc}")
        except RuntimeError as exc:
            if "already accessed by another instance" in str(exc):
                return fail(f"{name}: the store at {args.data_dir} is in use by another process "
                            "(is `raylight up` running with another --data-dir state?)")
            raise
        counts = report.counts()
        per[name] = counts
        total.merge(report)
        if not args.json:
            print_counts(counts, name if len(pipelines) > 1 else None)
    if args.json:
        out = total.counts()
        if len(per) > 1:
            out["pipelines"] = per
        print(json.dumps(out))
    return 0


def _ingest_plan(args: argparse.Namespace) -> int:
    """What the operator's ingestion run executes: the plan says where the embedder and the store are. With
    RAY_ADDRESS set (a Ray cluster's head), embedding runs there on Ray Data, sized by the plan."""
    from raylight_pipelines.embed.embedders import EmbedderError
    from raylight_pipelines.ingest import runner as ingestion
    from raylight_pipelines.ingest.chunking import TokenizerError
    from raylight_pipelines.store.qdrant import StoreUnavailable
    from raylight_pipelines.weights import WeightsError

    try:
        plan = IngestionPlan.model_validate_json(args.plan.read_text())
    except (OSError, ValueError) as exc:
        return fail(f"{args.plan}: not a valid ingestion plan: {exc}")
    if os.environ.get("RAY_ADDRESS") and plan.ray_data is not None:
        import ray

        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    try:
        report = ingestion.run(plan, Path.cwd())
    except (EmbedderError, StoreUnavailable, TokenizerError, WeightsError) as exc:
        if args.json:  # the last line is the run's report: the RayJob's submitter keeps it for the operator
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:3000]}), flush=True)
        return fail(f"{plan.pipeline}: {exc}")
    if args.json:  # one line of at most 4096 bytes: a Kubernetes termination message holds no more
        print(json.dumps(report.summary()), flush=True)
    else:
        print_counts(report.counts())
    return 0


def _search_served(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """Ranked chunks from the running platform's search route (its embedder replica is warm: no model load
    here), or None when no platform from --data-dir serves this Pipeline. Raises RuntimeError with the reason."""
    import httpx

    from raylight.local import procs
    from raylight.local.platform import bearer

    state = st.read_state(args.data_dir)
    if not procs.platform_running(state) or st.resource_key("Pipeline", args.pipeline) not in (
            (state or {}).get("resources") or {}):
        return None
    assert state is not None
    body: dict[str, Any] = {"query": args.query, **({"top_k": args.top_k} if args.top_k else {})}
    try:
        resp = httpx.post(f"{state['url']}/v1/pipelines/{args.pipeline}/search", json=body, headers=bearer(state),
                          timeout=120)
        answer = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RuntimeError(f"the platform on {state['url']} did not answer: {exc}") from None
    if resp.status_code != 200:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else None
        raise RuntimeError(f"search refused (HTTP {resp.status_code}): {message or answer}")
    return [{"source": r["source"], "title": r["title"], "heading": r["metadata"].get("heading"), "text": r["text"],
             "score": r["score"], "page": r["metadata"].get("page"), "start": r["metadata"].get("start"),
             "end": r["metadata"].get("end"), "id": r["id"]} for r in answer["results"]]


def _search_here(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ranked chunks from the store under --data-dir with the embedder loaded in this process. Raises
    ValueError (bad input) or the data plane's errors."""
    from raylight_pipelines.embed.embedders import from_connection
    from raylight_pipelines.retrieval.retriever import Retriever
    from raylight_pipelines.store.qdrant import connect

    if args.files:
        manifests, rc = load_manifests(args.files)
        if rc:
            raise ValueError("the manifests are not valid (see above)")
        found = [m.resource for m in manifests
                 if isinstance(m.resource, Pipeline) and m.resource.metadata.name == args.pipeline]
        if not found:
            raise ValueError(f"no Pipeline named {args.pipeline!r} in the manifests")
        pipeline = found[0]
        assert isinstance(pipeline, Pipeline)
        plan = local_ingestion_plan(pipeline, _models(manifests).get(pipeline.spec.embedder.model_deployment),
                                    args.data_dir, None)
    else:
        kept = st.pipeline_info(args.data_dir, args.pipeline)
        if kept is None:
            raise ValueError(f"pipeline {args.pipeline!r} was never ingested with --data-dir {args.data_dir}; "
                             "run `raylight ingest -f ...` first or pass -f")
        plan = kept
    if plan.embedder.source is None:
        raise ValueError(f"{args.pipeline}: the embedder has no model source")
    store = st.store_connection(args.data_dir, plan.store.collection, _platform(args.data_dir))
    retriever = Retriever(connect(store), store.collection, from_connection(plan.embedder, local=True),
                          plan.spec.retrieval, pipeline=args.pipeline)
    ok, why = retriever.ready()
    if not ok:
        raise ValueError(f"{args.pipeline}: {why}")
    return [{"source": h.source, "title": h.title, "heading": h.heading, "text": h.text, "score": h.score,
             "page": h.page, "start": h.start, "end": h.end, "id": h.id}
            for h in retriever.search(args.query, top_k=args.top_k)]


def _data_plane_errors() -> tuple[type[Exception], ...]:
    from raylight_pipelines.embed.embedders import EmbedderError
    from raylight_pipelines.store.qdrant import StoreUnavailable
    from raylight_pipelines.weights import WeightsError

    return WeightsError, EmbedderError, StoreUnavailable


def search_command(args: argparse.Namespace) -> int:
    """Ranked chunks for a query: through the running platform when it serves the Pipeline (and no -f is
    given), else from the store under --data-dir with the embedder in this process."""
    try:
        served = None if args.files else _search_served(args)
        if served is None:
            quiet_logging()  # the model libraries load only on this path
        hits = served if served is not None else _search_here(args)
    except Exception as exc:
        if not isinstance(exc, (ValueError, RuntimeError, *_data_plane_errors())):
            raise
        message = str(exc)
        return fail(message if message.startswith(args.pipeline) else f"{args.pipeline}: {message}")
    if args.json:
        print(json.dumps(hits))
        return 0
    for rank, h in enumerate(hits, 1):
        where = h["source"] + (f" p.{h['page']}" if h["page"] else "") + (f" § {h['heading']}" if h["heading"] else "")
        snippet = " ".join(h["text"].split())
        print(f"{rank}. [{h['score']:.3f}] {where}\n   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")
    if not hits:
        print("no results", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- eval


def _thresholds(args: argparse.Namespace) -> dict[str, float]:
    wanted = {f"recall@{args.k}": args.min_recall, "mrr@10": args.min_mrr, "ndcg@10": args.min_ndcg,
              "facts_present": args.min_facts, "abstention_recall": getattr(args, "min_abstention", None),
              "supported_sentences": getattr(args, "min_supported", None)}
    return {metric: value for metric, value in wanted.items() if value is not None}


def _local_retriever(args: argparse.Namespace, dataset: Any) -> tuple[Any, PipelineSpec]:
    """The Pipeline's Retriever from the manifests, on an embedded store in a temporary folder (removed with
    the store, which the retriever holds) filled with its sources (or the dataset's corpus), its
    embedder and reranker in this process."""
    import shutil
    import tempfile
    import weakref

    from raylight_pipelines.embed.embedders import from_connection
    from raylight_pipelines.ingest import runner as ingestion
    from raylight_pipelines.retrieval.rerankers import LocalReranker
    from raylight_pipelines.retrieval.retriever import Retriever
    from raylight_pipelines.store.edge import EdgeStore

    from raylight.api.types import InlineDocument, Source

    manifests, rc = load_manifests(args.files)
    if rc:
        raise ValueError("the manifests are not valid (see above)")
    found = [m for m in manifests if isinstance(m.resource, Pipeline) and m.resource.metadata.name == args.pipeline]
    if not found:
        raise ValueError(f"no Pipeline named {args.pipeline!r} in the manifests")
    pipeline = found[0].resource
    assert isinstance(pipeline, Pipeline)
    models = _models(manifests)
    if dataset.corpus is not None:
        docs = [InlineDocument(id=d["id"], text=d["text"], title=d["title"] or None) for d in dataset.corpus]
        pipeline = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(
            update={"sources": [Source(documents=docs)]})})
    spec = pipeline.spec
    plan = local_ingestion_plan(pipeline, models.get(spec.embedder.model_deployment), args.data_dir, None)
    embedder = from_connection(plan.embedder, local=True)
    folder = tempfile.mkdtemp(prefix="raylight-eval-")
    store = EdgeStore(folder)
    weakref.finalize(store, shutil.rmtree, folder, ignore_errors=True)  # the retriever holds the store
    ingestion.run(plan, found[0].file.parent.resolve(), embedder, store=store)
    rerank = spec.retrieval.rerank
    rerank_source = models[rerank.model_deployment].spec.resolved().model if rerank else None
    reranker = LocalReranker(rerank_source) if rerank_source else None
    retriever = Retriever(store, plan.store.collection, embedder, spec.retrieval, pipeline=args.pipeline,
                          reranker=reranker)
    return retriever, spec


def _local_search(args: argparse.Namespace, dataset: Any) -> tuple[Any, PipelineSpec]:
    """search over `_local_retriever`."""
    from raylight_pipelines.retrieval.retriever import standalone_query

    retriever, spec = _local_retriever(args, dataset)

    def search(case: Any, options: dict[str, bool], k: int) -> list[str]:
        query = standalone_query(case.question, case.history)
        return [h.source for h in retriever.search(query, top_k=k, hybrid=options["hybrid"],
                                                   rerank=options["rerank"])]

    return search, spec


def _endpoint(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """Base URL and headers: --url (token from $RAYLIGHT_AGENT_TOKEN), else the local platform's."""
    token = os.environ.get("RAYLIGHT_AGENT_TOKEN")
    if args.url:
        url = args.url.rstrip("/")
    else:
        state = st.read_state(args.data_dir)
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
    from raylight_pipelines.evaluation.beir import Answer

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
                      (time.perf_counter() - started) * 1000, list(out.get("support") or []))

    settings = post("/search", {"query": "probe", "top_k": 1})["retrieval"]
    models = http.get(f"{url}/v1/models").json().get("data", [])
    settings["answers"] = any(m.get("id") == args.pipeline and not m.get("search_only") for m in models)
    return search, ask, settings


def eval_command(args: argparse.Namespace) -> int:
    """`raylight eval PIPELINE --dataset PATH`: retrieval (dense, hybrid, hybrid + rerank) and answer
    measures; exit 1 when a --min-* threshold is missed."""
    quiet_logging()
    from raylight_pipelines.evaluation.beir import DatasetError, check_thresholds, evaluate, format_table, load_dataset

    try:
        dataset = load_dataset(args.dataset)
    except (DatasetError, OSError) as exc:
        return fail(str(exc))
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
        return fail(f"eval of {args.pipeline} failed: {type(exc).__name__}: {exc}")
    configured = "hybrid+rerank" if reranks else "hybrid" if hybrid else "dense"
    report.update(pipeline=args.pipeline, configured=configured)
    missed = check_thresholds(report, configured, _thresholds(args))
    report["thresholds"] = {"missed": missed, "ok": not missed}
    print(json.dumps(report) if args.json else format_table(report))
    for line in missed:
        print(f"threshold missed: {line}", file=sys.stderr)
    return 1 if missed else 0
