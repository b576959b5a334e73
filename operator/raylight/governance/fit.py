"""Does a model fit on the GPUs it asks for? Weights only: parameters x bytes per parameter."""

from __future__ import annotations

from typing import Any

# GiB of memory per GPU, keyed by Ray's accelerator type names (what `acceleratorType` accepts).
ACCELERATOR_MEMORY_GIB: dict[str, float] = {
    "B300": 288, "B200": 192, "GB200": 192, "GB300": 288, "H200": 141, "H100": 80, "H20": 96,
    "A100-80G": 80, "A100-40G": 40, "A100": 80, "L40S": 48, "L4": 24, "A10G": 24, "T4": 16, "V100": 16,
    "P100": 16, "RTX-PRO-6000": 96, "AMD-Instinct-MI300A": 128, "AMD-Instinct-MI250X-MI250": 128,
    "AMD-Instinct-MI210": 64,
}

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
