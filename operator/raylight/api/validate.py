"""Checks beyond one object's schema: licence policy, GPU fit, references between resources.

Shared by `raylight validate`, `raylight render`, `raylight up` and the admission webhook.
"""

from __future__ import annotations

from collections.abc import Iterable

from raylight.api.manifests import Manifest, Problem
from raylight.api.names import (
    PLAN_CHECKSUM_CHARS,
    agent_rayservice_name,
    finetune_config_map_name,
    finetune_job_name,
    ingestion_config_map_name,
    ingestion_cron_name,
    ingestion_job_name,
    model_rayservice_name,
    serve_service_name,
)
from raylight.api.quantity import quantity_bytes
from raylight.api.serve import EMBED_BACKENDS
from raylight.api.types import FineTune, ModelDeployment, ModelDeploymentSpec, Pipeline, Resource
from raylight.governance.fit import check_fit, check_memory_fit
from raylight.governance.licenses import LicensePolicy


def check_model(md: ModelDeployment, policy: LicensePolicy) -> list[tuple[str, str]]:
    """(field, message) for each governance problem of one ModelDeployment."""
    spec = md.spec.resolved()
    assert spec.model is not None
    problems = []
    license_field = "spec.model.license" if md.spec.model else "spec.preset"
    reason = policy.check(spec.model.license, spec.model.license_accepted,
                          "model.licenseAccepted" if md.spec.model else "licenseAccepted")
    if reason:
        problems.append((license_field, reason))
    parallel = check_parallelism(spec)
    if parallel:
        problems.append(parallel)
    backend = check_backend(spec)
    if backend:
        problems.append(backend)
    fit = check_fit(spec.model.parameters, spec.engine_args, spec.resources.gpus, spec.resources.accelerator_type)
    if fit:
        problems.append(("spec.resources", fit))
    memory = check_memory_fit(spec.model.parameters, spec.engine_args, spec.resolved_runtime, spec.model.file,
                              quantity_bytes(spec.resources.memory))
    if memory:
        problems.append(("spec.resources.memory", memory))
    return problems


def check_backend(spec: ModelDeploymentSpec) -> tuple[str, str] | None:
    """`engineArgs.backend` on the sentence-transformers runtime: onnx or torch for embedders, torch (the only
    one) for rerankers."""
    if spec.resolved_runtime != "sentence-transformers" or "backend" not in spec.engine_args:
        return None
    allowed = EMBED_BACKENDS if spec.task == "embed" else ("torch",)
    backend = spec.engine_args["backend"]
    if backend not in allowed:
        return ("spec.engineArgs.backend", f"{backend!r} is not a backend of the sentence-transformers runtime for "
                f"task {spec.task}; one of {', '.join(allowed)}")
    return None


def check_finetune(ft: FineTune, models: dict[str, ModelDeployment], policy: LicensePolicy,
                   check_refs: bool = True) -> list[tuple[str, str]]:
    """(field, message) for a FineTune: its base must exist (a chat ModelDeployment) and its licence must be
    accepted and allow derivative works; the adapter inherits that licence."""
    base = ft.spec.base
    if base.model is not None:
        reason = policy.check_derivative(base.model.license, base.model.license_accepted)
        return [("spec.base.model.license", reason)] if reason else []
    md = models.get(base.model_deployment or "")
    if md is None:
        return [("spec.base.modelDeployment", f"no ModelDeployment named {base.model_deployment!r} in the same "
                 "namespace")] if check_refs else []
    if md.spec.task != "chat":
        return [("spec.base.modelDeployment", f"ModelDeployment {md.metadata.name!r} has task {md.spec.task}, "
                 "needs task chat")]
    model = md.spec.resolved().model
    assert model is not None
    reason = policy.check_derivative(model.license, model.license_accepted)
    return [("spec.base.modelDeployment", f"ModelDeployment {md.metadata.name!r}: {reason}")] if reason else []


def check_adapters(md: ModelDeployment, finetunes: dict[str, FineTune]) -> list[tuple[str, str]]:
    """An adapter naming a FineTune: that FineTune must be in the same namespace, and write where the
    transformers runtime can load it (pvc:// or file://)."""
    problems = []
    for i, a in enumerate(md.spec.adapters):
        if a.fine_tune is None:
            continue
        ft = finetunes.get(a.fine_tune)
        if ft is None:
            problems.append((f"spec.adapters[{i}].fineTune", f"no FineTune named {a.fine_tune!r} in the same "
                             "namespace"))
        elif ft.spec.output.startswith("s3://"):
            problems.append((f"spec.adapters[{i}].fineTune", f"FineTune {a.fine_tune!r} writes to "
                             f"{ft.spec.output}; the transformers runtime loads adapters from pvc:// or file://"))
    return problems


def _degree(engine_args: dict[str, object], key: str, default: int) -> int | None:
    value = engine_args.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def check_parallelism(spec: ModelDeploymentSpec) -> tuple[str, str] | None:
    """vLLM runs one replica on tensor_parallel_size x pipeline_parallel_size GPUs: that must be the
    replica's `resources.gpus`, or the replica waits for GPUs its pod does not have (more), or the weights
    are sharded over fewer GPUs than the fit check assumed (less)."""
    if spec.runtime != "vllm":
        return None
    gpus = spec.resources.gpus
    tp = _degree(spec.engine_args, "tensor_parallel_size", gpus if gpus > 1 else 1)
    pp = _degree(spec.engine_args, "pipeline_parallel_size", 1)
    if tp is None or pp is None:
        return ("spec.engineArgs", "tensor_parallel_size and pipeline_parallel_size must be whole numbers >= 1")
    if tp * pp != gpus:
        origin = "" if "tensor_parallel_size" in spec.engine_args or "pipeline_parallel_size" in spec.engine_args \
            else " (the default: resources.gpus)"
        return ("spec.resources.gpus",
                f"{gpus} GPU(s) per replica, but vLLM shards the model over tensor_parallel_size ({tp}) x "
                f"pipeline_parallel_size ({pp}) = {tp * pp} GPUs{origin}: make resources.gpus equal that product "
                "or change engineArgs")
    return None


def check_references(pipeline: Pipeline, models: dict[str, ModelDeployment],
                     unparsed: Iterable[str] = ()) -> list[tuple[str, str]]:
    """A Pipeline's embedder must be an embed ModelDeployment, its llm a chat one, its reranker a rerank one.
    A reference to a ModelDeployment in `unparsed` (present, but with problems of its own) is not reported."""
    problems = []
    refs = [("spec.embedder.modelDeployment", pipeline.spec.embedder.model_deployment, "embed")]
    if pipeline.spec.llm and pipeline.spec.llm.model_deployment:
        refs.append(("spec.llm.modelDeployment", pipeline.spec.llm.model_deployment, "chat"))
    if pipeline.spec.retrieval.rerank:
        refs.append(("spec.retrieval.rerank.modelDeployment", pipeline.spec.retrieval.rerank.model_deployment,
                     "rerank"))
    skip = set(unparsed)
    for field, name, task in refs:
        md = models.get(name)
        if md is None and name in skip:
            continue
        if md is None:
            problems.append((field, f"no ModelDeployment named {name!r} in the same namespace"))
        elif md.spec.task != task:
            problems.append((field, f"ModelDeployment {name!r} has task {md.spec.task}, needs task {task}"))
    return problems


def namespace_of(resource: Resource, default: str) -> str:
    return resource.metadata.namespace or default


# Kubernetes' limits on the names the operator derives: RayServices and RayJobs (KubeRay derives Services,
# clusters and pods from them), Services (DNS labels), RayCronJobs (36: KubeRay appends a suffix to name its
# RayJobs), ConfigMaps (DNS subdomains). Ingestion names are shortened to fit (names.ingestion_job_name).
NAME_LIMITS = {"RayService": 47, "Service": 63, "RayJob": 47, "RayCronJob": 36, "ConfigMap": 253}


def derived_names(resource: Resource) -> list[tuple[str, str]]:
    """(kind, name) of every object the operator creates (or KubeRay creates for it) for one resource.
    A RayJob's name carries its plan's checksum; it stands here with a placeholder of the same length."""
    name = resource.metadata.name
    if isinstance(resource, ModelDeployment):
        rayservice = model_rayservice_name(name)
        return [("RayService", rayservice), ("Service", serve_service_name(rayservice))]
    if isinstance(resource, FineTune):
        return [("ConfigMap", finetune_config_map_name(name)),
                ("RayJob", finetune_job_name(name, "0" * PLAN_CHECKSUM_CHARS))]
    rayservice = agent_rayservice_name(name)
    out = [("RayService", rayservice), ("Service", serve_service_name(rayservice)),
           ("ConfigMap", ingestion_config_map_name(name)),
           ("RayJob", ingestion_job_name(name, "0" * PLAN_CHECKSUM_CHARS))]
    if resource.spec.schedule:
        out.append(("RayCronJob", ingestion_cron_name(name)))
    return out


def check_names(items: list[tuple[str, Resource]]) -> list[tuple[int, str, str]]:
    """(index, field, message): derived names past Kubernetes' limits, names claimed by two resources of any
    kind in one namespace, a source ConfigMap that the operator would overwrite with a plan, and two
    Pipelines writing into one Qdrant collection. `items` are (namespace, resource)."""
    found: list[tuple[int, str, str]] = []
    owners: dict[tuple[str, str, str], str] = {}
    collections: dict[tuple[str, str], str] = {}
    for i, (ns, r) in enumerate(items):
        who = f"{r.kind} {r.metadata.name!r}"
        clashes: set[str] = set()  # one message per other resource (its Service follows its RayService)
        for kind, name in derived_names(r):
            limit = NAME_LIMITS[kind]
            if len(name) > limit:
                found.append((i, "metadata.name", f"the {kind} name {name!r} would be longer than {limit} characters"))
            other = owners.setdefault((ns, kind, name), who)
            if other != who and other not in clashes:
                clashes.add(other)
                found.append((i, "metadata.name", f"{kind} {name!r} is also derived from {other} in namespace {ns}: "
                              "rename one of them"))
        if isinstance(r, Pipeline):
            qdrant = r.spec.vector_store.qdrant
            other = collections.setdefault((qdrant.url or "", r.collection), who)
            if other != who:
                field = "spec.vectorStore.qdrant.collection" if qdrant.collection else "metadata.name"
                found.append((i, field, f"Qdrant collection {r.collection!r} is also written by {other}: "
                              "set spec.vectorStore.qdrant.collection"))
    plan_maps = {(ns, name): f"{r.kind} {r.metadata.name!r}" for ns, r in items
                 for kind, name in derived_names(r) if kind == "ConfigMap"}
    for i, (ns, r) in enumerate(items):
        if isinstance(r, Pipeline):
            for j, source in enumerate(r.spec.sources):
                if source.config_map is not None and (ns, source.config_map.name) in plan_maps:
                    found.append((i, f"spec.sources[{j}].configMap.name",
                                  f"ConfigMap {source.config_map.name!r} holds the ingestion plan of "
                                  f"{plan_maps[(ns, source.config_map.name)]}: the operator overwrites it"))
    return found


def check_set(manifests: Iterable[Manifest], policy: LicensePolicy, namespace: str = "default",
              check_refs: bool = True, unparsed: Iterable[Problem] = ()) -> list[Problem]:
    """Problems across a set of manifests applied together; `unparsed` are the problems of the documents that
    did not parse (their objects are left out, and references to them are not reported as missing)."""
    unparsed_models = {p.name for p in unparsed if p.kind == "ModelDeployment"}
    items = list(manifests)
    problems: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    models = {
        (namespace_of(m.resource, namespace), m.resource.metadata.name): m.resource
        for m in items if isinstance(m.resource, ModelDeployment)
    }
    names: dict[int, list[tuple[str, str]]] = {}
    unique = []
    for m in items:
        r = m.resource
        key = (r.kind, namespace_of(r, namespace), r.metadata.name)
        if key not in seen:
            unique.append(m)
        seen.add(key)
    for i, field, msg in check_names([(namespace_of(m.resource, namespace), m.resource) for m in unique]):
        names.setdefault(id(unique[i]), []).append((field, msg))
    seen.clear()
    for m in items:
        r = m.resource
        key = (r.kind, namespace_of(r, namespace), r.metadata.name)
        found: list[tuple[str, str]] = list(names.get(id(m), []))
        if key in seen:
            found.append(("metadata.name", f"duplicate {r.kind} named {r.metadata.name!r}"))
        seen.add(key)
        if isinstance(r, ModelDeployment):
            found += check_model(r, policy)
            if check_refs:
                ns = namespace_of(r, namespace)
                found += check_adapters(r, {m.resource.metadata.name: m.resource for m in items
                                            if isinstance(m.resource, FineTune) and namespace_of(m.resource, namespace)
                                            == ns})
        elif isinstance(r, FineTune):
            ns = namespace_of(r, namespace)
            found += check_finetune(r, {n: md for (mns, n), md in models.items() if mns == ns}, policy, check_refs)
        elif check_refs:
            ns = namespace_of(r, namespace)
            found += check_references(r, {n: md for (mns, n), md in models.items() if mns == ns}, unparsed_models)
        problems += [Problem(str(m.file), r.kind, r.metadata.name, f, msg) for f, msg in found]
    return problems
