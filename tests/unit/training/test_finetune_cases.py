"""Issue 31's FineTune kinds: target modules checked against the base's architecture (any architecture PEFT
knows is tunable), adapters checked against the base that serves them, and cluster outputs that outlive the
run. The handed inputs are in tests/cases/turn3/; each is a test with its right outcome."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from raylight.api.manifests import Manifest, load, parse_document
from raylight.api.names import ADAPTER_MANIFEST
from raylight.api.types import FineTune, ModelDeployment
from raylight.api.validate import check_set
from raylight.cli import main as raylight
from raylight.governance.architectures import model_type_of
from raylight.governance.architectures_table import MODULE_NAMES, PEFT_DEFAULT_TARGET_MODULES
from raylight.governance.licenses import LicensePolicy
from raylight.operator import admission

CASES = Path(__file__).parents[2] / "cases" / "turn3"
EXAMPLE = Path(__file__).parents[3] / "examples" / "finetune"


def _problems(*files: Path, cluster: bool = False) -> list[str]:
    result = load(list(files))
    assert not result.problems, result.problems
    return [f"{p.kind}/{p.name}: {p.field}: {p.message}"
            for p in check_set(result.manifests, LicensePolicy(), cluster=cluster)]


def _ft(base: dict[str, Any], targets: list[str] | None = None, output: str = "pvc://adapters/x") -> dict[str, Any]:
    spec: dict[str, Any] = {"base": {"model": {"license": "apache-2.0", **base}},
                            "dataset": {"records": [{"instruction": "Say hi.", "output": "Hi."}]}, "output": output}
    if targets is not None:
        spec["hyperparameters"] = {"targetModules": targets}
    return {"apiVersion": "raylight.io/v1alpha1", "kind": "FineTune", "metadata": {"name": "t"}, "spec": spec}


def _check(*docs: dict[str, Any], cluster: bool = False) -> list[tuple[str, str]]:
    manifests = []
    for doc in docs:
        resource, problems = parse_document(doc, "set.yaml")
        assert resource is not None, problems
        manifests.append(Manifest(resource, Path("set.yaml")))
    return [(p.field, p.message) for p in check_set(manifests, LicensePolicy(), cluster=cluster)]


# ------------------------------------------------------------ target modules vs the base's architecture


def test_f01_gpt2_with_default_target_modules_validates_as_peft_default_c_attn() -> None:
    """f01: no targetModules on GPT-2 now means PEFT's default for gpt2 (c_attn), not Llama's names."""
    assert _problems(CASES / "f01-target-modules-gpt2.yaml") == []
    assert PEFT_DEFAULT_TARGET_MODULES["gpt2"] == ("c_attn",)


def test_f01b_gpt2_attention_module_c_attn_validates() -> None:
    assert _problems(CASES / "f01b-target-modules-c_attn.yaml") == []


def test_llama_names_on_a_gpt2_base_are_refused_naming_its_layers() -> None:
    doc = yaml.safe_load((CASES / "f01-target-modules-gpt2.yaml").read_text())
    doc["spec"]["hyperparameters"] = {"targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    [(field, message)] = _check(doc)
    assert field == "spec.hyperparameters.targetModules"
    assert "q_proj, k_proj, v_proj, o_proj are not a layer of base hf://openai-community/gpt2" in message
    assert "a gpt2 model (its name)" in message and "c_attn, c_fc, c_proj" in message
    assert "PEFT's default for gpt2 is c_attn" in message


@pytest.mark.parametrize(("source", "targets"), [
    ("hf://tiiuae/falcon-7b", ["query_key_value"]),
    ("hf://mosaicml/mpt-7b", ["Wqkv"]),
    ("hf://microsoft/phi-2", ["q_proj", "k_proj", "v_proj", "dense"]),
    ("hf://microsoft/Phi-3-mini-4k-instruct", ["qkv_proj", "o_proj"]),
    ("hf://Qwen/Qwen2.5-0.5B-Instruct", ["q_proj", "v_proj", "gate_proj"]),
    ("hf://EleutherAI/pythia-160m", ["query_key_value"]),
    ("hf://bigscience/bloom-560m", ["query_key_value", "dense_h_to_4h"]),
    ("hf://meta-llama/Llama-3.2-1B", ["all-linear"]),
    ("hf://openai-community/gpt2", ["transformer.h.0.attn.c_attn"]),  # a dotted name matches by its last part
])
def test_architectures_peft_supports_are_tunable_with_their_own_layer_names(source: str,
                                                                            targets: list[str]) -> None:
    assert _check(_ft({"source": source}, targets)) == []
    if model_type_of(source).model_type in PEFT_DEFAULT_TARGET_MODULES:  # and with PEFT's default for them
        assert _check(_ft({"source": source})) == []


def test_an_architecture_without_a_peft_default_needs_target_modules() -> None:
    [(field, message)] = _check(_ft({"source": "hf://microsoft/Phi-3-mini-4k-instruct"}))
    assert field == "spec.hyperparameters.targetModules"
    assert "PEFT has no default LoRA target modules for phi3" in message and "qkv_proj" in message


def test_an_unknown_architecture_is_left_to_the_check_before_training() -> None:
    assert _check(_ft({"source": "hf://acme/house-model-7b"}, ["anything"])) == []
    assert model_type_of("hf://acme/house-model-7b").model_type is None


def test_a_config_json_at_hand_decides_over_the_name(tmp_path: Path) -> None:
    folder = tmp_path / "llama-looking-name"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    arch = model_type_of(f"file://{folder}")
    assert (arch.model_type, arch.how) == ("falcon", f"config.json at {folder}")
    [(_field, message)] = _check(_ft({"source": f"file://{folder}"}, ["q_proj"]))
    assert "a falcon model (config.json at" in message and "query_key_value" in message


@settings(max_examples=60, deadline=None)
@given(model_type=st.sampled_from(sorted(MODULE_NAMES)), data=st.data())
def test_every_known_architecture_accepts_its_layers_and_refuses_others(model_type: str, data: Any) -> None:
    """Property over the table: any subset of an architecture's own layers validates (read from a config.json
    at hand); a name it does not have is refused, naming it; no targets validate iff PEFT has a default."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps({"model_type": model_type}))
        base = {"source": f"file://{folder}"}
        layers = data.draw(st.lists(st.sampled_from(MODULE_NAMES[model_type]), min_size=1, max_size=4, unique=True))
        assert _check(_ft(base, layers)) == []
        assert (_check(_ft(base)) == []) == (model_type in PEFT_DEFAULT_TARGET_MODULES)
        problems = _check(_ft(base, [*layers, "not_a_layer_of_anything"]))
        assert len(problems) == 1 and "not_a_layer_of_anything is not a layer" in problems[0][1]


# ------------------------------------------------------------ adapters vs the serving base


def test_f04_adapter_trained_on_05b_served_on_15b_is_refused() -> None:
    problems = _problems(CASES / "f04-adapter-base-mismatch.yaml")
    assert problems == [
        "ModelDeployment/qwen-15b: spec.adapters[0].fineTune: FineTune 'tuned-05b' trained on "
        "hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775 (0.5B parameters), served on "
        "hf://Qwen/Qwen2.5-1.5B-Instruct (1.5B): a LoRA adapter fits only the layer sizes it was trained on"]


def _served(base: dict[str, Any], adapter: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "served"},
            "spec": {"task": "chat", "runtime": "transformers", "model": {"license": "apache-2.0", **base},
                     "resources": {"cpus": 4, "memory": "16Gi"},
                     "adapters": [{"name": "tuned", **adapter}]}}


QWEN05 = {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "revision": "7ae5576", "parameters": "0.5B"}


@pytest.mark.parametrize(("served", "message"), [
    (QWEN05, None),  # the very base: served
    ({**QWEN05, "revision": "aaaaaaa"}, "trained on revision 7ae5576 of hf://Qwen/Qwen2.5-0.5B-Instruct, served at "
     "revision aaaaaaa"),
    ({**QWEN05, "revision": None}, "the served model is not pinned"),
    ({"source": "hf://Qwen/Qwen2.5-0.5B", "parameters": "0.5B"}, None),  # the same architecture and size
    ({"source": "hf://meta-llama/Llama-3.2-1B", "parameters": "0.5B"}, "a qwen2 model, served on "
     "hf://meta-llama/Llama-3.2-1B, a llama model"),
    ({"source": "hf://acme/house-model"}, "cannot show they share architecture and size"),
])
def test_an_adapter_is_served_only_on_a_compatible_base(served: dict[str, Any], message: str | None) -> None:
    ft = _ft({k: v for k, v in QWEN05.items() if v is not None})
    ft["metadata"]["name"] = "tuned"
    md = _served({k: v for k, v in served.items() if v is not None}, {"fineTune": "tuned"})
    problems = _check(ft, md)
    if message is None:
        assert problems == []
    else:
        [(field, text)] = problems
        assert field == "spec.adapters[0].fineTune" and message in text, text


def test_a_finetune_of_the_serving_modeldeployment_itself_is_compatible() -> None:
    md = _served({"source": "hf://acme/house-model"}, {"fineTune": "tuned"})
    ft = copy.deepcopy(_ft({"source": "x://unused"}))
    ft["metadata"]["name"] = "tuned"
    ft["spec"]["base"] = {"modelDeployment": "served"}
    assert _check(md, ft) == []


def test_an_adapter_source_is_checked_against_the_base_its_manifest_records(tmp_path: Path) -> None:
    (tmp_path / ADAPTER_MANIFEST).write_text(json.dumps({"base": {
        "source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "parameters": "0.5B", "architecture": "qwen2"}}))
    md = _served({"source": "hf://Qwen/Qwen2.5-1.5B-Instruct", "parameters": "1.5B"},
                 {"source": f"file://{tmp_path}"})
    [(field, message)] = _check(md)
    assert field == "spec.adapters[0].source" and "(0.5B parameters)" in message and "(1.5B)" in message


# ------------------------------------------------------------ cluster outputs


def test_the_example_renders_for_a_cluster_only_with_an_output_that_outlives_the_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    """examples/finetune writes file:// (for `raylight finetune` on one machine): valid there, refused for a
    cluster (validate --cluster, render, the admission webhook), and its file:// URI never reaches serving."""
    assert raylight(["validate", "-f", str(EXAMPLE)]) == 0
    err = capsys.readouterr().err
    assert "valid for one machine" in err and "note: on a cluster:" in err and "spec.output" in err
    assert raylight(["validate", "--cluster", "-f", str(EXAMPLE)]) == 1
    assert raylight(["render", "-f", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    assert "FineTune/zorblax: spec.output: file:// is a path on one machine" in err
    assert "lost with the run's Ray cluster" in err and "pvc://CLAIM/PATH or s3://BUCKET/ROOT/NAME" in err
    ft = yaml.safe_load((EXAMPLE / "finetune.yaml").read_text())
    found = admission.problems(ft, LicensePolicy())
    assert any(f.startswith("spec.output: file:// is a path on one machine") for f in found), found
    assert admission.WEBHOOK_IDS["finetunes"] == "validate-finetunes"


def test_file_datasets_and_adapter_sources_are_refused_for_a_cluster() -> None:
    ft = _ft({"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"})
    ft["spec"]["dataset"] = {"uri": "file:///data/train.jsonl"}
    assert _check(ft) == []
    assert [f for f, _ in _check(ft, cluster=True)] == ["spec.dataset.uri"]
    md = _served({"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}, {"source": "file:///adapters/tuned"})
    assert _check(md) == []
    [(field, message)] = _check(md, cluster=True)
    assert field == "spec.adapters[0].source" and "which the serving pods do not share" in message
    assert any(p.startswith("spec.adapters[0].source: file://") for p in admission.problems(md, LicensePolicy()))


def test_handed_finetune_cases_with_file_outputs_are_one_machine_only() -> None:
    for case in ("f01-target-modules-gpt2.yaml", "f01b-target-modules-c_attn.yaml", "f08-all-masked.yaml"):
        assert _problems(CASES / case) == []
        assert [p.split(": ")[1] for p in _problems(CASES / case, cluster=True)] == ["spec.output"]


def test_parsed_cases_are_finetunes_and_modeldeployments() -> None:
    kinds = {type(m.resource) for m in load([CASES / "f04-adapter-base-mismatch.yaml"]).manifests}
    assert kinds == {FineTune, ModelDeployment}
