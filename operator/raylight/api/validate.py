"""Checks beyond one object's schema: licence policy, GPU fit, references between resources.

Shared by `raylight validate`, `raylight render`, `raylight up` and the admission webhook.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from raylight.api.manifests import Manifest, Problem
from raylight.api.names import (
    ADAPTER_MANIFEST,
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
from raylight.api.sources import at_hand
from raylight.api.types import FineTune, ModelDeployment, ModelDeploymentSpec, ModelSource, Pipeline, Resource
from raylight.governance.architectures import check_target_modules, model_type_of
from raylight.governance.fit import check_fit, check_memory_fit, parameter_count
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


def finetune_base_model(ft: FineTune, models: dict[str, ModelDeployment]) -> ModelSource | None:
    """The base a FineTune trains on: its own model, or its ModelDeployment's (None when that is unknown)."""
    if ft.spec.base.model is not None:
        return ft.spec.base.model
    md = models.get(ft.spec.base.model_deployment or "")
    return md.spec.resolved().model if md is not None else None


def check_finetune(ft: FineTune, models: dict[str, ModelDeployment], policy: LicensePolicy,
                   check_refs: bool = True, cluster: bool = False) -> list[tuple[str, str]]:
    """(field, message) for a FineTune: its base must exist (a chat ModelDeployment) and its licence must be
    accepted and allow derivative works (the adapter inherits that licence); its target modules must be layers
    of the base's architecture (where that is known); on a cluster (`cluster`) its output and dataset must be
    somewhere that outlives the run's pods (`check_cluster_paths`)."""
    problems = check_cluster_paths(ft) if cluster else []
    base = ft.spec.base
    if base.model is not None:
        reason = policy.check_derivative(base.model.license, base.model.license_accepted)
        if reason:
            problems.append(("spec.base.model.license", reason))
    else:
        md = models.get(base.model_deployment or "")
        if md is None:
            return problems + ([("spec.base.modelDeployment", f"no ModelDeployment named {base.model_deployment!r} "
                                 "in the same namespace")] if check_refs else [])
        if md.spec.task != "chat":
            return [*problems, ("spec.base.modelDeployment", f"ModelDeployment {md.metadata.name!r} has task "
                                f"{md.spec.task}, needs task chat")]
        model = md.spec.resolved().model
        assert model is not None
        reason = policy.check_derivative(model.license, model.license_accepted)
        if reason:
            problems.append(("spec.base.modelDeployment", f"ModelDeployment {md.metadata.name!r}: {reason}"))
    model = finetune_base_model(ft, models)
    if model is not None:
        arch = model_type_of(model.source, model.file)
        targets = ft.spec.hyperparameters.target_modules
        why = check_target_modules(arch, list(targets) if targets is not None else None,
                                   f"base {model.source}{' ' + model.file if model.file else ''}")
        if why:
            problems.append(("spec.hyperparameters.targetModules", why))
    return problems


ONE_MACHINE = ("file:// is a path on one machine: on a cluster it is a Ray pod's own disk, {what}; use {instead} "
               "(file:// is for `raylight finetune` and `raylight up` on one machine)")


def check_cluster_paths(ft: FineTune) -> list[tuple[str, str]]:
    """A FineTune's file:// output and dataset cannot work on a cluster: the adapter would be written into a
    worker pod's disk and lost with the run's Ray cluster (and its file:// URI handed to a serving deployment
    that cannot read it), and a file:// dataset is not on the pods at all."""
    problems = []
    if ft.spec.output.startswith("file://"):
        problems.append(("spec.output", ONE_MACHINE.format(
            what="lost with the run's Ray cluster when the run ends", instead="pvc://CLAIM/PATH or "
            "s3://BUCKET/ROOT/NAME")))
    if (ft.spec.dataset.uri or "").startswith("file://"):
        problems.append(("spec.dataset.uri", ONE_MACHINE.format(
            what="where the dataset is not", instead="configMap, pvc or s3://BUCKET/KEY.jsonl")))
    return problems


def adapter_base_problem(trained: ModelSource, trained_on: str | None, served: ModelSource,
                         served_name: str) -> str | None:
    """Why an adapter trained on `trained` (through ModelDeployment `trained_on`, if any) cannot be served on
    `served` (ModelDeployment `served_name`), or None: the same weights (the same ModelDeployment, or the same
    source and file at the same revision), or, for another source, the same architecture and size."""
    if trained_on is not None and trained_on == served_name:
        return None

    def name(m: ModelSource) -> str:
        return m.source + (f" {m.file}" if m.file else "") + (f"@{m.revision}" if m.revision else "")
    if (trained.source, trained.file) == (served.source, served.file):
        if trained.revision and served.revision and trained.revision != served.revision:
            return f"trained on revision {trained.revision} of {trained.source}, served at revision {served.revision}"
        if trained.revision and not served.revision and served.source.startswith("hf://"):
            return (f"trained on revision {trained.revision} of {trained.source}; the served model is not pinned "
                    "(set model.revision to the same revision)")
        return None
    a, b = model_type_of(trained.source, trained.file), model_type_of(served.source, served.file)
    if a.model_type and b.model_type and a.model_type != b.model_type:
        return f"trained on {name(trained)}, a {a.model_type} model, served on {name(served)}, a {b.model_type} model"
    if trained.parameters and served.parameters and \
            parameter_count(trained.parameters) != parameter_count(served.parameters):
        return (f"trained on {name(trained)} ({trained.parameters} parameters), served on {name(served)} "
                f"({served.parameters}): a LoRA adapter fits only the layer sizes it was trained on")
    if a.model_type and a.model_type == b.model_type and trained.parameters and served.parameters:
        return None
    return (f"trained on {name(trained)}, served on {name(served)}: cannot show they share architecture and size "
            "(give both model.parameters, or serve it on the base it was trained on)")


def recorded_base(source: str) -> tuple[ModelSource, str | None] | None:
    """(the base, its ModelDeployment) recorded in the adapter manifest beside a file:// adapter, where it is
    readable here; None otherwise."""
    where = at_hand(source)
    if where is None:
        return None
    try:
        base = json.loads((where / ADAPTER_MANIFEST).read_text(encoding="utf-8"))["base"]
        return ModelSource(source=base["source"], file=base.get("file"), revision=base.get("revision"),
                           parameters=base.get("parameters")), base.get("modelDeployment")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_adapters(md: ModelDeployment, finetunes: dict[str, FineTune],
                   models: dict[str, ModelDeployment] | None = None, cluster: bool = False) -> list[tuple[str, str]]:
    """Each adapter against the base this ModelDeployment serves: an adapter naming a FineTune needs that
    FineTune in the same namespace, writing where the transformers runtime loads from (pvc:// or file://), and
    trained on a compatible base (`adapter_base_problem`); an adapter `source` with an adapter manifest at hand
    is checked against the base recorded there. On a cluster no adapter is read from file://."""
    problems = []
    served = md.spec.resolved().model
    assert served is not None
    for i, a in enumerate(md.spec.adapters):
        if a.fine_tune is None:
            assert a.source is not None
            if cluster and a.source.startswith("file://"):
                problems.append((f"spec.adapters[{i}].source", ONE_MACHINE.format(
                    what="which the serving pods do not share", instead="pvc://CLAIM/PATH or s3://ROOT/NAME")))
                continue
            recorded = recorded_base(a.source)
            why = adapter_base_problem(*recorded, served, md.metadata.name) if recorded else None
            if why:
                problems.append((f"spec.adapters[{i}].source", f"adapter {a.name} {why}"))
            continue
        ft = finetunes.get(a.fine_tune)
        if ft is None:
            problems.append((f"spec.adapters[{i}].fineTune", f"no FineTune named {a.fine_tune!r} in the same "
                             "namespace"))
            continue
        if ft.spec.output.startswith("s3://"):
            problems.append((f"spec.adapters[{i}].fineTune", f"FineTune {a.fine_tune!r} writes to "
                             f"{ft.spec.output}; the transformers runtime loads adapters from pvc:// or file://"))
        elif cluster and ft.spec.output.startswith("file://"):
            problems.append((f"spec.adapters[{i}].fineTune", f"FineTune {a.fine_tune!r} writes to {ft.spec.output}, "
                             "a path on one machine: on a cluster serve adapters from pvc:// or s3://"))
        trained = finetune_base_model(ft, models or {})
        if trained is not None:
            why = adapter_base_problem(trained, ft.spec.base.model_deployment, served, md.metadata.name)
            if why:
                problems.append((f"spec.adapters[{i}].fineTune", f"FineTune {a.fine_tune!r} {why}"))
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
              check_refs: bool = True, unparsed: Iterable[Problem] = (), cluster: bool = False) -> list[Problem]:
    """Problems across a set of manifests applied together; `unparsed` are the problems of the documents that
    did not parse (their objects are left out, and references to them are not reported as missing). With
    `cluster`, also what cannot work on a cluster (file:// outputs, datasets and adapters)."""
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
                                            == ns}, {n: md for (mns, n), md in models.items() if mns == ns}, cluster)
            elif cluster:
                found += [(f, msg) for f, msg in check_adapters(r, {}, {}, cluster) if f.endswith(".source")]
        elif isinstance(r, FineTune):
            ns = namespace_of(r, namespace)
            found += check_finetune(r, {n: md for (mns, n), md in models.items() if mns == ns}, policy, check_refs,
                                    cluster)
        elif check_refs:
            ns = namespace_of(r, namespace)
            found += check_references(r, {n: md for (mns, n), md in models.items() if mns == ns}, unparsed_models)
        problems += [Problem(str(m.file), r.kind, r.metadata.name, f, msg) for f, msg in found]
    return problems
