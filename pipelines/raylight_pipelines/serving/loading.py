"""Loading a ModelDeployment's runtime in a replica, with failures turned into one short, readable reason.

A replica whose constructor raises is retried by Serve a few times and then marked DEPLOY_FAILED with the
exception text in its status message. `ModelLoadError` keeps that text to one sentence (raised `from None`,
no chained trace) and `load_failure_reason()` finds it again in a Serve status message, so `raylight` can
show "licence llama3.1 restricts use: ..." instead of a stack trace.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylight.api.names import ADAPTER_MANIFEST, local_path
from raylight.api.types import ModelDeploymentSpec, ModelSource
from raylight.api.validate import adapter_base_problem
from raylight.governance.architectures import config_model_type, model_type_of
from raylight.settings import Settings

from raylight_pipelines.serving.runtimes.base import ChatRuntime, Embedder, Reranker
from raylight_pipelines.weights import Weights, WeightsError, resolve

logger = logging.getLogger("ray.serve")

_REASON = re.compile(r"ModelLoadError: (.+)")


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message is the reason, meant for the user."""


def load_failure_reason(status_message: str) -> str | None:
    """The ModelLoadError reason inside a Serve application/deployment status message, if any."""
    reasons = _REASON.findall(status_message or "")
    return reasons[-1].strip() if reasons else None


@dataclass
class LoadedModel:
    runtime: Embedder | Reranker | ChatRuntime
    weights: Weights
    sha256: str
    threads: int


def thread_count(cpus: float) -> int:
    """Threads for the engine: the replica's CPU share (never more than the machine has)."""
    return max(1, min(int(cpus), os.cpu_count() or 1))


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "failed to allocate" in text


def load_model(name: str, spec: ModelDeploymentSpec, settings: Settings | None = None) -> LoadedModel:
    """Check the licence, resolve the weights, load the runtime; raises ModelLoadError with the reason."""
    assert spec.model is not None, "spec must be resolved (ModelDeploymentSpec.resolved)"
    settings = settings or Settings.from_env()
    problem = settings.license_policy.check(spec.model.license, spec.model.license_accepted)
    if problem:
        raise ModelLoadError(f"model {name}: {problem}")
    try:  # with spec.cache: the cache's checked entry or a refusal, never a download
        weights = resolve(spec.model, cache=spec.cache)
    except WeightsError as exc:
        raise ModelLoadError(f"model {name}: {exc}") from None
    runtime_name = spec.resolved_runtime
    threads = thread_count(spec.resources.cpus)
    adapters = adapter_paths(spec)
    sha256 = weights.sha256()
    for adapter, folder in adapters.items():
        why = adapter_base_problem_at_load(folder, name, spec.model, sha256)
        if why:
            raise ModelLoadError(f"model {name}: adapter {adapter} {why}")
    try:
        runtime = _load_runtime(runtime_name, spec.task, weights, threads, dict(spec.engine_args), adapters)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model {name}: {exc}") from None
    except Exception as exc:
        if _is_oom(exc):
            raise ModelLoadError(f"model {name}: out of memory loading {weights.path.name} "
                                 f"(resources.memory is {spec.resources.memory}; give the replica more "
                                 "memory or use a smaller/quantised model)") from None
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelLoadError(f"model {name}: {runtime_name} could not load {weights.path}: "
                             f"{type(exc).__name__}: {first_line}") from None
    logger.info("model %s: serving %s with %s (%d threads), weights sha256 %s", name, weights.source,
                runtime_name, threads, sha256)
    return LoadedModel(runtime=runtime, weights=weights, sha256=sha256, threads=threads)


def adapter_paths(spec: ModelDeploymentSpec) -> dict[str, Path]:
    """name -> local folder of each PEFT adapter the transformers runtime loads (pvc:// or file:// sources;
    a fineTune reference must have been resolved to its FineTune's output by whoever built the spec)."""
    if spec.resolved_runtime != "transformers":
        return {}
    out: dict[str, Path] = {}
    for a in spec.adapters:
        where = local_path(a.source) if a.source else None
        if where is None:
            raise ModelLoadError(f"adapter {a.name}: the transformers runtime needs a pvc:// or file:// source "
                                 f"(got {a.source or 'fineTune ' + str(a.fine_tune)})")
        if not (Path(where) / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter {a.name}: no PEFT adapter (adapter_config.json) in {where}")
        out[a.name] = Path(where)
    return out


def adapter_base_problem_at_load(folder: Path, name: str, served: ModelSource, served_sha256: str) -> str | None:
    """Why the PEFT adapter in `folder` does not fit the base this deployment serves (`served`, weights
    `served_sha256`), or None. The adapter's base is read from the manifest training wrote beside it
    (`raylight-adapter.json`: source, revision, size, architecture, the weights' sha256), else from PEFT's
    `adapter_config.json` (`base_model_name_or_path`, a Hub id or a folder)."""
    manifest = folder / ADAPTER_MANIFEST
    if manifest.is_file():
        try:
            base = json.loads(manifest.read_text(encoding="utf-8"))["base"]
            trained = ModelSource(source=base["source"], file=base.get("file"), revision=base.get("revision"),
                                  parameters=base.get("parameters"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"has an unreadable {ADAPTER_MANIFEST}: {exc}"
        if base.get("sha256") and base["sha256"] == served_sha256:
            return None  # the very weights it was trained on
        same = (trained.source, trained.file) == (served.source, served.file) or base.get("modelDeployment") == name
        if base.get("sha256") and same:
            return (f"was trained on {trained.source} with weights sha256 {base['sha256'][:12]}, but this deployment "
                    f"serves weights sha256 {served_sha256[:12]}: the base changed since training")
        arch, served_arch = base.get("architecture"), model_type_of(served.source, served.file).model_type
        if arch and served_arch and arch != served_arch:
            return f"was trained on {trained.source}, a {arch} model; this deployment serves a {served_arch} model"
        return adapter_base_problem(trained, None, served, name)
    try:
        recorded = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"has an unreadable adapter_config.json: {exc}"
    origin = recorded.get("base_model_name_or_path") if isinstance(recorded, dict) else None
    if not isinstance(origin, str) or not origin:
        return None
    if origin.startswith("/"):  # a folder: its config.json, where it is here, says the architecture
        arch = config_model_type(Path(origin))
        served_arch = model_type_of(served.source, served.file).model_type
        if arch and served_arch and arch != served_arch:
            return f"was trained on {origin}, a {arch} model; this deployment serves a {served_arch} model"
        return None
    if served.source.startswith("hf://") and served.source.removeprefix("hf://").strip("/") == origin:
        return None
    return adapter_base_problem(ModelSource(source=f"hf://{origin}"), None, served, name)


def _load_runtime(runtime: str, task: str, weights: Weights, threads: int,
                  engine_args: dict[str, Any], adapters: dict[str, Path] | None = None,
                  ) -> Embedder | Reranker | ChatRuntime:
    if runtime == "sentence-transformers" and task == "rerank":
        from raylight_pipelines.serving.runtimes.reranker import CrossEncoderReranker

        return CrossEncoderReranker(weights.path, threads, engine_args)
    if runtime == "sentence-transformers":
        from raylight_pipelines.serving.runtimes.embedder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(weights.path, threads, engine_args)
    if runtime == "llama-cpp":
        from raylight_pipelines.serving.runtimes.llama import LlamaCppRuntime

        if not weights.path.is_file():
            raise ModelLoadError(f"llama-cpp needs a GGUF file: set model.file inside {weights.source}")
        return LlamaCppRuntime(weights.path, threads, engine_args)
    if runtime == "transformers":
        from raylight_pipelines.serving.runtimes.hf import TransformersRuntime

        return TransformersRuntime(weights.path, threads, engine_args, adapters)
    raise ModelLoadError(f"runtime {runtime} is not served by raylight_pipelines (vLLM runs on ray.serve.llm)")
