"""Does a model fit on the GPUs, or in the memory, it asks for? Weights only: parameters x bytes per parameter."""

from __future__ import annotations

from typing import Any

from raylight.governance.accelerators import VENDOR_OF

# GiB of memory per device, keyed by Ray's accelerator type names (governance/accelerators.py holds the vendors).
ACCELERATOR_MEMORY_GIB: dict[str, float] = {t: v.memory_gib[t] for t, v in VENDOR_OF.items()}

_BYTES_PER_PARAM = {
    "float32": 4.0, "float": 4.0, "bfloat16": 2.0, "float16": 2.0, "half": 2.0, "auto": 2.0,
    "fp8": 1.0, "int8": 1.0, "awq": 0.5, "gptq": 0.5, "bitsandbytes": 0.5, "int4": 0.5,
    "q4_0": 0.5625, "q4_1": 0.625, "q8_0": 1.0625,
}

# Weights may use at most this share of GPU memory; the rest is KV cache and activations.
WEIGHT_SHARE = 0.9


def parameter_count(text: str) -> float:
    """'7.6B' -> 7.6e9, '135M' -> 1.35e8."""
    return float(text[:-1]) * (1e9 if text.endswith("B") else 1e6)


def bytes_per_parameter(engine_args: dict[str, Any]) -> float:
    for key in ("quantization", "dtype"):
        value = str(engine_args.get(key, "")).lower()
        if value in _BYTES_PER_PARAM:
            return _BYTES_PER_PARAM[value]
    return 2.0  # vLLM serves bf16/fp16 by default


def weight_gib(parameters: str, engine_args: dict[str, Any]) -> float:
    return parameter_count(parameters) * bytes_per_parameter(engine_args) / 2**30


def check_fit(parameters: str | None, engine_args: dict[str, Any], gpus: int,
              accelerator: str | None) -> str | None:
    """None when the weights fit (or nothing is known to check), else why they do not."""
    if not parameters or gpus == 0 or not accelerator:
        return None
    need = weight_gib(parameters, engine_args)
    have = ACCELERATOR_MEMORY_GIB[accelerator] * gpus * WEIGHT_SHARE
    if need > have:
        return (f"{parameters} parameters need about {need:.0f} GiB for weights, but {gpus} x {accelerator} "
                f"leaves {have:.0f} GiB ({WEIGHT_SHARE:.0%} of {ACCELERATOR_MEMORY_GIB[accelerator]:g} GiB each): "
                "add GPUs, pick a larger accelerator or quantize")
    return None


def _gguf_bytes_per_parameter(file: str) -> float:
    """From the quantisation tag in a GGUF file name (`...Q4_1.gguf` -> 0.625); 1.0 when it names none."""
    name = file.lower()
    for tag, size in sorted(_BYTES_PER_PARAM.items(), key=lambda kv: -len(kv[0])):
        if tag.startswith("q") and tag in name:
            return size
    for tag, size in (("f16", 2.0), ("bf16", 2.0), ("f32", 4.0)):
        if tag in name:
            return size
    return 1.0


def check_memory_fit(parameters: str | None, engine_args: dict[str, Any], runtime: str, file: str | None,
                     memory_bytes: int) -> str | None:
    """On the CPU runtimes the weights live in the replica's memory: None when they fit in
    WEIGHT_SHARE of `resources.memory` (or nothing is known to check), else why they do not. llama.cpp
    holds the GGUF's quantised weights; transformers loads float32 on CPU unless engine args set a dtype."""
    if not parameters or runtime not in ("llama-cpp", "transformers"):
        return None
    if runtime == "llama-cpp":
        per = _gguf_bytes_per_parameter(file or "")
    else:
        dtype = str(engine_args.get("dtype", "float32")).lower()
        per = _BYTES_PER_PARAM.get(dtype, 4.0)
    need = parameter_count(parameters) * per / 2**30
    have = memory_bytes / 2**30 * WEIGHT_SHARE
    if need > have:
        return (f"{parameters} parameters need about {need:.1f} GiB for weights on {runtime}, but resources.memory "
                f"leaves {have:.1f} GiB ({WEIGHT_SHARE:.0%} of it): raise resources.memory, pick a smaller or "
                "quantised (GGUF) model, or serve it on GPUs")
    return None
