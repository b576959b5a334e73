"""`raylight validate`, `raylight render` and `raylight crds`: manifests in, problems or objects out."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raylight import yamlio
from raylight.api import crds
from raylight.api.manifests import LoadResult, Manifest, Problem, load
from raylight.api.types import FineTune, ModelDeployment, Pipeline
from raylight.api.validate import check_set, namespace_of
from raylight.desired.cache import get_cache_job
from raylight.desired.kubernetes import get_model_rayservice, get_pipeline_objects
from raylight.desired.placement import check_placement
from raylight.desired.training import get_finetune_objects, resolve_adapters
from raylight.settings import Settings

# Which manifest field a placement problem is about, per kind.
_PLACEMENT_FIELDS = {
    ("ModelDeployment", "resources"): "spec.resources",
    ("ModelDeployment", "replicas"): "spec.replicas.max",
    ("Pipeline", "resources"): "spec.agent",
    ("Pipeline", "replicas"): "spec.agent.replicas.max",
}


def load_valid(files: Iterable[Path], namespace: str, settings: Settings, cluster: bool = True) -> LoadResult:
    """Parse and check manifests as one set; problems carry file, kind, name and field. A set that passes
    is rendered and every RayService placed (`check_placement`): what validates can run. `cluster` (the
    default: what `render` and the operator take) also refuses what works on one machine only (file://
    outputs, datasets and adapters)."""
    result = load(files)  # every problem of every document, not only the first kind of them:
    result.problems += check_set(result.manifests, settings.license_policy, namespace, unparsed=result.problems,
                                 cluster=cluster)
    if not result.problems:
        result.problems = placement_problems(result.manifests, namespace, settings)
    return result


def _objects_of(m: Manifest, models: dict[tuple[str, str], ModelDeployment], namespace: str,
                settings: Settings, outputs: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = m.resource
    ns = namespace_of(r, namespace)
    if isinstance(r, ModelDeployment):
        job = get_cache_job(r, ns, settings)  # spec.cache: the prefetch that runs before the RayService serves
        return [*([job] if job else []), get_model_rayservice(resolve_adapters(r, outputs or {}), ns, settings)]
    if isinstance(r, FineTune):
        return get_finetune_objects(r, ns, settings, models.get((ns, r.spec.base.model_deployment or "")))
    return get_pipeline_objects(r, ns, settings, models.get((ns, r.spec.embedder.model_deployment)))


def _outputs(manifests: list[Manifest]) -> dict[str, str]:
    """FineTune name -> where it writes its adapter (what an adapter naming it is served from)."""
    return {m.resource.metadata.name: m.resource.spec.output for m in manifests if isinstance(m.resource, FineTune)}


def _models(manifests: list[Manifest], namespace: str) -> dict[tuple[str, str], ModelDeployment]:
    return {(namespace_of(m.resource, namespace), m.resource.metadata.name): m.resource
            for m in manifests if isinstance(m.resource, ModelDeployment)}


def placement_problems(manifests: list[Manifest], namespace: str, settings: Settings) -> list[Problem]:
    """A problem, naming the manifest's field, for each RayService replica that could never be placed."""
    models = _models(manifests, namespace)
    problems: list[Problem] = []
    for m in manifests:
        r = m.resource
        for obj in _objects_of(m, models, namespace, settings, _outputs(manifests)):
            if obj["kind"] != "RayService":
                continue
            for p in check_placement(obj):
                field = _PLACEMENT_FIELDS.get((r.kind, p.aspect), "")
                problems.append(Problem(str(m.file), r.kind, r.metadata.name, field, p.message))
    return problems


def render_objects(manifests: list[Manifest], namespace: str, settings: Settings) -> list[dict[str, Any]]:
    """Every Kubernetes object the operator would create for these manifests."""
    models = _models(manifests, namespace)
    objects: list[dict[str, Any]] = []
    for m in manifests:
        if isinstance(m.resource, (ModelDeployment, Pipeline, FineTune)):
            objects += _objects_of(m, models, namespace, settings, _outputs(manifests))
    return objects


def _report(result: LoadResult) -> int:
    for problem in result.problems:
        print(problem, file=sys.stderr)
    return 1 if result.problems else 0


def validate_command(args: argparse.Namespace) -> int:
    """Valid for one machine (`raylight up`, `raylight finetune`), or with `--cluster` for a cluster (what
    `render` and the operator take); a set valid on one machine only says what a cluster would refuse."""
    settings = Settings.from_env()
    result = load_valid(args.files, args.namespace, settings, cluster=args.cluster)
    if _report(result):
        return 1
    where = "for a cluster" if args.cluster else "for one machine"
    if not args.cluster:
        for problem in check_set(result.manifests, settings.license_policy, args.namespace, cluster=True):
            print(f"note: on a cluster: {problem}", file=sys.stderr)
    if result.others:
        print(f"note: not Raylight's, left to kubectl: {', '.join(result.others)}", file=sys.stderr)
    print(f"{len(result.manifests)} manifest(s) valid {where}", file=sys.stderr)
    return 0


def render_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    result = load_valid(args.files, args.namespace, settings)
    if _report(result):
        return 1
    sys.stdout.write(yamlio.dump_all(render_objects(result.manifests, args.namespace, settings)))
    return 0


def crds_command(args: argparse.Namespace) -> int:
    if args.chart:
        for path in crds.write_chart(args.chart):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    sys.stdout.write(yamlio.dump_all(crds.all_crds()))
    return 0
