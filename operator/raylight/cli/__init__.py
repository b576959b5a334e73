"""The `raylight` command line. Each subcommand's work lives in its own module, imported on use so
`raylight validate` stays fast and needs none of the data-plane packages."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from raylight import __version__

# subcommand -> "module:function"; the function takes the parsed args and returns the exit code.
HANDLERS = {
    "validate": "raylight.render:validate_command",
    "render": "raylight.render:render_command",
    "crds": "raylight.render:crds_command",
    "ingest": "raylight.cli.data:ingest_command",
    "search": "raylight.cli.data:search_command",
    "eval": "raylight.cli.data:eval_command",
    "finetune": "raylight.cli.training:finetune_command",
    "cache": "raylight.cli.cache:cache_command",
    "up": "raylight.cli.platform:up_command",
    "status": "raylight.cli.platform:status_command",
    "ask": "raylight.cli.platform:ask_command",
    "down": "raylight.cli.platform:down_command",
    "operator": "raylight.operator.main:operator_command",
}


def _files(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-f", "--filename", dest="files", action="append", type=Path, required=required,
                   metavar="FILE|DIR", help="manifest file or directory (repeatable)")


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="local state: embedded store, threads, the running platform (default: $RAYLIGHT_DATA_DIR, "
                        "else ./.raylight when a platform runs from it, else the one platform running on this "
                        "machine)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON document on stdout, logs on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylight", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raylight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check manifests; one line per problem")
    _files(p)
    p.add_argument("--namespace", default="default")
    p.add_argument("--cluster", action="store_true", help="check for a cluster (as render and the operator do): "
                   "also refuse file:// outputs, datasets and adapters, which live on one machine")

    p = sub.add_parser("render", help="print the Kubernetes objects for manifests as a YAML stream")
    _files(p)
    p.add_argument("--namespace", default="default")

    p = sub.add_parser("crds", help="print the CustomResourceDefinitions (or write the chart's copy)")
    p.add_argument("--chart", type=Path, help="write templated CRDs into this chart directory")

    p = sub.add_parser("ingest", help="sync a Pipeline's sources into its vector store")
    _files(p, required=False)
    p.add_argument("--pipeline", help="only this Pipeline (default: every Pipeline in the manifests)")
    p.add_argument("--plan", type=Path, help="an ingestion plan JSON (what the operator's Job runs)")
    _data_dir(p)
    _json(p)

    p = sub.add_parser("finetune", help="train a FineTune's LoRA adapter on Ray Train")
    _files(p, required=False)
    p.add_argument("--name", help="only this FineTune (default: every FineTune in the manifests)")
    p.add_argument("--plan", type=Path, help="a training plan JSON (what the operator's RayJob runs)")
    _json(p)

    p = sub.add_parser("cache", help="the weight cache (spec.cache): pull, list or prune its entries")
    p.add_argument("action", choices=["pull", "list", "prune"])
    _files(p, required=False)
    p.add_argument("--root", help="the cache folder (default: $RAYLIGHT_MODEL_CACHE, else ~/.cache/raylight/models)")
    p.add_argument("--plan-json", help="pull: one cache plan as JSON (what the operator's prefetch Job runs)")
    p.add_argument("--report", help="pull: also write the summary line to this file (a Job's termination log)")
    p.add_argument("--dry-run", action="store_true", help="prune: say what would be removed, remove nothing")
    _json(p)

    p = sub.add_parser("search", help="ranked chunks for a query")
    p.add_argument("pipeline")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=None)
    _files(p, required=False)
    _data_dir(p)
    _json(p)

    p = sub.add_parser("eval", help="measure a Pipeline's retrieval and answers on a labelled set")
    p.add_argument("pipeline")
    p.add_argument("--dataset", type=Path, required=True,
                   help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv) or a JSONL of "
                        "{question, expected_sources?, expected_facts?, history?, answerable?, contradictions?}")
    _files(p, required=False)  # given: evaluate in this process on an in-memory store
    p.add_argument("--url", help="a running Pipeline's base URL (default: the local platform's)")
    p.add_argument("--k", type=int, default=5, help="recall@k (default 5)")
    p.add_argument("--no-answers", action="store_true", help="measure retrieval only")
    for metric in ("recall", "mrr", "ndcg", "facts"):
        p.add_argument(f"--min-{metric}", type=float, default=None, metavar="X",
                       help=f"exit 1 when the configured retrieval's {metric} is below X" if metric != "facts"
                       else "exit 1 when the share of answers with every expected fact is below X")
    p.add_argument("--min-abstention", type=float, default=None, metavar="X",
                   help="exit 1 when the share of unanswerable questions the agent abstains on is below X")
    p.add_argument("--min-supported", type=float, default=None, metavar="X",
                   help="exit 1 when the share of answer sentences a source supports is below X")
    _data_dir(p)
    _json(p)

    p = sub.add_parser("up", help="run manifests on this machine (local Ray, embedded Qdrant)")
    _files(p)
    _data_dir(p)
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("status", help="resources, readiness and endpoints of the local platform")
    _data_dir(p)
    _json(p)

    p = sub.add_parser("ask", help="ask a Pipeline's agent a question")
    p.add_argument("pipeline")
    p.add_argument("question")
    p.add_argument("--thread", help="continue this thread id")
    _data_dir(p)
    _json(p)

    p = sub.add_parser("down", help="stop the local platform (keeps the data directory)")
    _data_dir(p)

    p = sub.add_parser("operator", help="run the Kubernetes operator")
    p.add_argument("--namespace", action="append", dest="namespaces", help="watch only these (repeatable)")
    p.add_argument("--standalone", action="store_true", help="no peering with other operator instances")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    p.add_argument("--webhook-port", type=int, default=None, help="serve the validating webhook on this port")
    return parser


def resolve(spec: str) -> Callable[[argparse.Namespace], int]:
    module, _, func = spec.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return handler


def _choose_data_dir(args: argparse.Namespace) -> int:
    """Set `args.data_dir` for a command that has one (`raylight.local.registry.choose`); 1 when ambiguous."""
    if not hasattr(args, "data_dir"):
        return 0
    from raylight.local.registry import AmbiguousPlatform, choose

    try:
        choice = choose(args.data_dir, args.command)
    except AmbiguousPlatform as exc:
        print(exc, file=sys.stderr)
        return 1
    if choice.reason:
        print(f"using the platform in {choice.data_dir} ({choice.reason})", file=sys.stderr)
    args.data_dir = choice.data_dir
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _choose_data_dir(args) or resolve(HANDLERS[args.command])(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
