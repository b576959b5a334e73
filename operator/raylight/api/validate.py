"""Checks beyond one object's schema: licence policy, GPU fit, references between resources.

Shared by `raylight validate`, `raylight render`, `raylight up` and the admission webhook.
"""

from __future__ import annotations

from collections.abc import Iterable

from raylight.api.manifests import Manifest, Problem
from raylight.api.types import ModelDeployment, Pipeline, Resource
from raylight.desired.serve import resolve_spec
from raylight.governance.fit import check_fit
from raylight.governance.licenses import LicensePolicy


def check_model(md: ModelDeployment, policy: LicensePolicy) -> list[tuple[str, str]]:
    """(field, message) for each governance problem of one ModelDeployment."""
    spec = resolve_spec(md.spec)
    assert spec.model is not None
    problems = []
    license_field = "spec.model.license" if md.spec.model else "spec.preset"
    reason = policy.check(spec.model.license, spec.model.license_accepted)
    if reason:
        problems.append((license_field, reason))
    fit = check_fit(spec.model.parameters, spec.engine_args, spec.resources.gpus, spec.resources.accelerator_type)
    if fit:
        problems.append(("spec.resources", fit))
    return problems


def check_references(pipeline: Pipeline, models: dict[str, ModelDeployment]) -> list[tuple[str, str]]:
    """A Pipeline's embedder must be an embed ModelDeployment, its llm a chat one, its reranker a rerank one."""
    problems = []
    refs = [("spec.embedder.modelDeployment", pipeline.spec.embedder.model_deployment, "embed")]
    if pipeline.spec.llm and pipeline.spec.llm.model_deployment:
        refs.append(("spec.llm.modelDeployment", pipeline.spec.llm.model_deployment, "chat"))
    if pipeline.spec.retrieval.rerank:
        refs.append(("spec.retrieval.rerank.modelDeployment", pipeline.spec.retrieval.rerank.model_deployment,
                     "rerank"))
    for field, name, task in refs:
        md = models.get(name)
        if md is None:
            problems.append((field, f"no ModelDeployment named {name!r} in the same namespace"))
        elif md.spec.task != task:
            problems.append((field, f"ModelDeployment {name!r} has task {md.spec.task}, needs task {task}"))
    return problems


def namespace_of(resource: Resource, default: str) -> str:
    return resource.metadata.namespace or default


def check_set(manifests: Iterable[Manifest], policy: LicensePolicy, namespace: str = "default",
              check_refs: bool = True) -> list[Problem]:
    """Problems across a set of manifests applied together."""
    items = list(manifests)
    problems: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    models = {
        (namespace_of(m.resource, namespace), m.resource.metadata.name): m.resource
        for m in items if isinstance(m.resource, ModelDeployment)
    }
    for m in items:
        r = m.resource
        key = (r.kind, namespace_of(r, namespace), r.metadata.name)
        found: list[tuple[str, str]] = []
        if key in seen:
            found.append(("metadata.name", f"duplicate {r.kind} named {r.metadata.name!r}"))
        seen.add(key)
        if isinstance(r, ModelDeployment):
            found += check_model(r, policy)
        elif check_refs:
            ns = namespace_of(r, namespace)
            found += check_references(r, {n: md for (mns, n), md in models.items() if mns == ns})
        problems += [Problem(str(m.file), r.kind, r.metadata.name, f, msg) for f, msg in found]
    return problems
