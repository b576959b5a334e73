"""`raylight validate`, `raylight render` and `raylight crds`: manifests in, problems or objects out."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raylight import yamlio
from raylight.api import crds
from raylight.api.manifests import LoadResult, Manifest, load
from raylight.api.types import ModelDeployment, Pipeline
from raylight.api.validate import check_set, namespace_of
from raylight.desired.kubernetes import get_model_rayservice, get_pipeline_objects
from raylight.settings import Settings


def load_valid(files: Iterable[Path], namespace: str, settings: Settings) -> LoadResult:
    """Parse and check manifests as one set; problems carry file, kind, name and field."""
    result = load(files)
    if not result.problems:
        result.problems = check_set(result.manifests, settings.license_policy, namespace)
    return result


def render_objects(manifests: list[Manifest], namespace: str, settings: Settings) -> list[dict[str, Any]]:
    """Every Kubernetes object the operator would create for these manifests."""
    models = {(namespace_of(m.resource, namespace), m.resource.metadata.name): m.resource
              for m in manifests if isinstance(m.resource, ModelDeployment)}
    objects: list[dict[str, Any]] = []
    for m in manifests:
        r = m.resource
        ns = namespace_of(r, namespace)
        if isinstance(r, ModelDeployment):
            objects.append(get_model_rayservice(r, ns, settings))
        elif isinstance(r, Pipeline):
            objects += get_pipeline_objects(r, ns, settings, models.get((ns, r.spec.embedder.model_deployment)))
    return objects


def _report(result: LoadResult) -> int:
    for problem in result.problems:
        print(problem, file=sys.stderr)
    return 1 if result.problems else 0


def validate_command(args: argparse.Namespace) -> int:
    result = load_valid(args.files, args.namespace, Settings.from_env())
    if _report(result):
        return 1
    print(f"{len(result.manifests)} manifest(s) valid", file=sys.stderr)
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
