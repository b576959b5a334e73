"""Fine-tuning on Ray Train: a LoRA (or, on GPUs, QLoRA) adapter for a FineTune's plan.

`raylight finetune --plan FILE` runs `run(plan)`: a `TorchTrainer` with one PEFT model per worker (data
parallel over the records; DDP over gloo on CPUs, NCCL on GPUs), the loss on the assistant turns only.
Rank 0 reports a checkpoint (the adapter, the optimizer and the step) every `checkpointEvery` steps into
`<output>/checkpoints`; a run started again with the same output (a retried RayJob, a dead worker under
`FailureConfig`) resumes from the newest one. The adapter is written with PEFT's `save_pretrained`, next
to `raylight-adapter.json`: the training config, the base model's source, revision and sha256, the
dataset's sha256 and the licence the adapter inherits from its base (with its acceptance).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylight.api.datasets import parse_jsonl, record_problem, to_messages
from raylight.api.names import ADAPTER_MANIFEST, CHECKPOINT_DIR
from raylight.api.training import FineTunePlan
from raylight.governance.architectures import ALL_LINEAR

from raylight_pipelines.weights import resolve_for

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FAILURE_FILE = "failure.json"  # the checkpoint a failed run ends with: why, and at which step


class TrainingError(RuntimeError):
    """A plan that cannot be trained (or a run that had to stop), with a reason a user can act on; `step`: the
    optimizer step it stopped at, for a run that had started."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def load_records(plan: FineTunePlan) -> list[dict[str, Any]]:
    ds = plan.dataset
    if ds.records is not None:
        records = [dict(r) for r in ds.records]
        for i, r in enumerate(records):
            problem = record_problem(r)
            if problem:
                raise TrainingError(f"dataset.records[{i}]: {problem}")
        return records
    if ds.path is not None:
        text = Path(ds.path).read_text(encoding="utf-8")
        where = ds.path
    elif ds.uri is not None and ds.uri.startswith("s3://"):
        import boto3

        bucket, _, key = ds.uri.removeprefix("s3://").partition("/")
        text = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        where = ds.uri
    else:
        raise TrainingError("the plan's dataset has no records, path or uri")
    records, problems = parse_jsonl(text)
    if problems:
        line, problem = problems[0]
        raise TrainingError(f"{where} line {line}: {problem}" + (f" (and {len(problems) - 1} more)"
                                                                 if len(problems) > 1 else ""))
    if not records:
        raise TrainingError(f"{where}: no records")
    return records


def dataset_sha256(records: list[dict[str, Any]]) -> str:
    """A digest of the records as canonical JSONL (key order does not matter)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def split(records: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict[str, Any]],
                                                                              list[dict[str, Any]]]:
    """(train, eval): a seeded shuffle, `fraction` of the records (at least one when > 0) held out."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = min(max(1, round(len(records) * fraction)), len(records) - 1)
    return [records[i] for i in order[held:]], [records[i] for i in order[:held]]


def adapter_sha256(directory: Path) -> str:
    """A digest of the adapter: its weights' bytes and its config as canonical JSON (PEFT writes
    target_modules from a set, in an order that changes from one process to the next)."""
    config = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update((directory / "adapter_model.safetensors").read_bytes())
    return digest.hexdigest()


def load_base(path: Path, quantize: bool) -> tuple[Any, Any]:
    """(tokenizer, model) of a base checkpoint directory or GGUF file (transformers de-quantises a GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf: dict[str, Any] = {}
    if path.is_file():
        gguf = {"gguf_file": path.name}
        path = path.parent
    extra: dict[str, Any] = {"dtype": torch.float32}
    if quantize:
        from transformers import BitsAndBytesConfig

        extra = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True), "dtype": torch.bfloat16}
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **gguf)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **gguf, **extra)
    return tokenizer, model


def encode(tokenizer: Any, record: dict[str, Any], max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one record in the model's chat template; only assistant turns are learned.

    A record longer than `max_len` tokens is cut from the left: it ends with its last assistant token (turns
    after the last assistant turn teach nothing) and keeps the `max_len` tokens before it, so the answer is
    learned even where a long prompt loses its beginning. Cutting from the right (the usual default) would
    drop every assistant token of a record whose prompt alone is longer than `max_len`, leaving nothing to
    learn and a loss of NaN (0/0)."""
    messages = to_messages(record)
    ids: list[int] = []
    labels: list[int] = []
    for k, message in enumerate(messages):
        full = tokenizer.apply_chat_template(messages[:k + 1], tokenize=False)
        new = tokenizer(full, add_special_tokens=False)["input_ids"][len(ids):]
        if message["role"] == "assistant":
            head = tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True) \
                if k else ""
            prompt_len = len(tokenizer(head, add_special_tokens=False)["input_ids"]) - len(ids) if head else 0
            prompt_len = max(0, min(prompt_len, len(new)))
            labels += [-100] * prompt_len + new[prompt_len:]
        else:
            labels += [-100] * len(new)
        ids += new
    learned = [i for i, label in enumerate(labels) if label != -100]
    end = learned[-1] + 1 if learned else len(ids)
    start = max(0, end - max_len)
    return ids[start:end], labels[start:end]


def supervised_tokens(labels: list[int]) -> int:
    return sum(1 for label in labels if label != -100)


def encode_all(tokenizer: Any, records: list[dict[str, Any]], max_len: int, where: str = "dataset.records",
               ) -> list[tuple[list[int], list[int]]]:
    """Every record encoded (`encode`); raises TrainingError naming the records left with no supervised token
    (an assistant turn that is empty in tokens, or a chat template that leaves no room for it in `max_len`)."""
    examples = [encode(tokenizer, r, max_len) for r in records]
    empty = [i for i, (_, labels) in enumerate(examples) if not supervised_tokens(labels)]
    if empty:
        shown = ", ".join(f"{where}[{i}]" for i in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5
                                                                  else "")
        raise TrainingError(f"{shown}: no assistant token within hyperparameters.maxSeqLength ({max_len}) tokens: "
                            "nothing to learn (the loss would be NaN); raise maxSeqLength or shorten the record")
    return examples


def nonfinite(step: int, loss: float) -> str | None:
    """Why a run must stop at `step` (1-based) with `loss`, or None when the loss is finite."""
    if math.isfinite(loss):
        return None
    return (f"training loss is {loss} at step {step}: the run stopped and wrote no adapter (lower "
            "hyperparameters.learningRate, or check the records for ones with nothing to learn)")


def check_context(model: Any, max_len: int) -> None:
    """Raises TrainingError when hyperparameters.maxSeqLength exceeds the base's context window (its
    max_position_embeddings, n_positions or seq_length): longer sequences would index past its positions."""
    config = model.config
    limit = next((int(v) for k in ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len")
                  if isinstance(v := getattr(config, k, None), int) and v > 0), None)
    if limit is not None and max_len > limit:
        raise TrainingError(f"hyperparameters.maxSeqLength: {max_len} tokens is longer than the base's context "
                            f"window ({limit} tokens, {config.model_type})")


def resolve_targets(model: Any, targets: list[str] | None) -> list[str] | str:
    """The target modules to adapt in a loaded base: PEFT's default for its architecture
    (`peft.utils.constants`) where `targets` is None, else `targets` once each is checked to name one of its
    layers (by its last dotted part, as PEFT matches); raises TrainingError naming the field."""
    import torch
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults

    model_type = str(model.config.model_type)
    if targets is None:
        default = peft_defaults.get(model_type)
        if default is None:
            raise TrainingError(f"hyperparameters.targetModules: PEFT has no default LoRA target modules for the "
                                f"base's architecture {model_type}: name its layers")
        return default if isinstance(default, str) else list(default)
    if targets == [ALL_LINEAR]:
        return ALL_LINEAR
    layers = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    missing = [t for t in targets if t.rsplit(".", 1)[-1] not in layers]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)} - {"lm_head"})
        raise TrainingError(f"hyperparameters.targetModules: {', '.join(missing)} not in the base ({model_type}); "
                            f"its linear layers: {', '.join(linear)}")
    return list(targets)


def _batches(examples: list[tuple[list[int], list[int]]], size: int, pad: int) -> list[dict[str, Any]]:
    import torch

    out = []
    for start in range(0, len(examples), size):
        chunk = examples[start:start + size]
        width = max(len(ids) for ids, _ in chunk)
        inputs = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(chunk):
            inputs[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(labs)] = torch.tensor(labs)
            mask[row, :len(ids)] = 1
        out.append({"input_ids": inputs, "labels": labels, "attention_mask": mask})
    return out


def total_steps(plan: FineTunePlan, train_records: int) -> int:
    hp = plan.hyperparameters
    if hp.max_steps:
        return hp.max_steps
    per_worker = math.ceil(train_records / plan.resources.workers)
    return hp.epochs * max(1, math.ceil(per_worker / hp.batch_size))


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker."""
    import ray.train
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    plan = FineTunePlan.model_validate(config["plan"])
    hp = plan.hyperparameters
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(hp.seed + rank)
    if not plan.resources.gpus_per_worker:
        torch.set_num_threads(max(1, int(plan.resources.cpus_per_worker)))
    quantize = plan.method == "qlora"
    tokenizer, model = load_base(Path(config["base_path"]), quantize)
    if quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    model_type = str(model.config.model_type)

    def stop(metrics: dict[str, Any]) -> None:
        """End the run as failed: rank 0 reports `metrics` (with `failure`, the reason) with a checkpoint that
        holds no adapter (Ray Train's result carries the metrics of the latest checkpoint only)."""
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / FAILURE_FILE).write_text(json.dumps(metrics), encoding="utf-8")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:  # before the first step; every worker checks every record, so all stop together
        check_context(model, hp.max_seq_length)
        targets = resolve_targets(model, hp.target_modules)
        encoded = encode_all(tokenizer, config["train"], hp.max_seq_length)
        evals = _batches(encode_all(tokenizer, config["eval"], hp.max_seq_length, "held-out records"),
                         hp.batch_size, pad) if config["eval"] else []
    except TrainingError as exc:
        stop({"step": 0, "failure": str(exc), "architecture": model_type})
        return
    examples = encoded[rank::world]
    lora = LoraConfig(r=hp.rank, lora_alpha=hp.alpha, lora_dropout=hp.dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    device = ray.train.torch.get_device()
    model.to(device)
    trained: Any = model
    if world > 1:
        trained = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.learning_rate)
    steps = int(config["total_steps"])
    step = 0
    loss = float("nan")
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # resume: the adapter, the optimizer and where it was (not a failed run's end)
        with checkpoint.as_directory() as folder:
            if not (Path(folder) / "trainer.pt").is_file():
                checkpoint = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "trainer.pt", map_location=device, weights_only=False)
            set_peft_model_state_dict(model, state["adapter"])
            optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            loss = float(state.get("loss", loss))

    def evaluate() -> float | None:
        if not evals:
            return None
        model.eval()
        with torch.no_grad():
            losses = [float(model(**{k: v.to(device) for k, v in b.items()}).loss) for b in evals]
        model.train()
        return sum(losses) / len(losses)

    def report(loss: float, final: bool) -> None:
        metrics: dict[str, Any] = {"step": step, "total_steps": steps, "train_loss": loss, "eval_loss": evaluate(),
                                   "resumed_from": resumed_from, "train_seconds": time.time() - began,
                                   "architecture": model_type, "target_modules": targets}
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                        "step": step, "loss": loss}, Path(folder) / "trainer.pt")
            if final:
                model.save_pretrained(str(Path(folder) / "adapter"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    resumed_from = step
    began = time.time()
    model.train()
    epoch = step // max(1, math.ceil(len(examples) / hp.batch_size))
    while step < steps:
        order = list(range(len(examples)))
        random.Random(hp.seed * 1000 + epoch).shuffle(order)
        batches = _batches([examples[i] for i in order], hp.batch_size, pad)
        for batch in batches:
            if step >= steps:
                break
            out = trained(**{k: v.to(device) for k, v in batch.items()})
            loss = float(out.loss.detach())
            bad = torch.tensor([0.0 if math.isfinite(loss) else 1.0], device=device)
            if world > 1:  # every worker stops at the same step, or the others wait in the next all-reduce
                torch.distributed.all_reduce(bad)
            if bad.item():
                # no checkpoint, no adapter: the driver turns this into a failed run naming the step
                stop({"step": step, "total_steps": steps, "train_loss": loss,
                      "failure": nonfinite(step + 1, loss) or nonfinite(step + 1, float("nan")),
                      "architecture": model_type})
                return
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if rank == 0:
                print(f"step {step}/{steps} loss {loss:.4f}", file=sys.stderr, flush=True)
            if step < steps and step % hp.checkpoint_every == 0:
                report(loss, final=False)
        epoch += 1
    report(loss, final=True)


def run(plan: FineTunePlan, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the plan's adapter on the Ray cluster this process is connected to (or a local one) and write
    it to the plan's output; returns the summary (the FineTune's status fields)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    say = progress or (lambda _msg: None)
    res = plan.resources
    if plan.method == "qlora" and not res.gpus_per_worker:
        raise TrainingError("method qlora needs GPUs (bitsandbytes 4-bit): set resources.gpus >= 1 or use lora")
    if plan.output.startswith("s3://"):
        out_dir = Path(tempfile.mkdtemp(prefix=f"raylight-{plan.name}-"))
    else:
        out_dir = Path(plan.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = resolve_for(plan.base_model_deployment, plan.base, plan.base_cache)  # with base_cache: its entry
    base_sha = weights.sha256()
    records = load_records(plan)
    train, held = split(records, plan.dataset.eval_fraction, plan.hyperparameters.seed)
    steps = total_steps(plan, len(train))
    say(f"fine-tuning {plan.base.source} on {len(train)} records ({len(held)} held out), {steps} steps")
    started = time.time()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    storage = (out_dir / CHECKPOINT_DIR).resolve()
    # One run per plan: a retried run of the same plan resumes from its checkpoints, a changed plan with the
    # same output starts afresh (it never resumes from another plan's adapter).
    run_name = f"{plan.name}-{hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:10]}"
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan.to_wire(), "base_path": str(weights.path), "train": train, "eval": held,
                           "total_steps": steps},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": res.cpus_per_worker,
                                                           **({"GPU": res.gpus_per_worker}
                                                              if res.gpus_per_worker else {})}),
        run_config=RunConfig(name=run_name, storage_path=str(storage), failure_config=FailureConfig(max_failures=2)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise TrainingError(f"training failed: {result.error}")
    metrics = dict(result.metrics or {})
    if metrics.get("failure"):  # refused before the first step (step 0), or a non-finite loss at a step
        step = int(metrics.get("step") or 0)
        raise TrainingError(str(metrics["failure"]), step=step + 1 if "train_loss" in metrics else None)
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as folder:
        for name in ADAPTER_FILES:
            shutil.copyfile(Path(folder) / "adapter" / name, out_dir / name)
    duration = time.time() - started
    ran = int(metrics.get("step") or 0) - int(metrics.get("resumed_from") or 0)
    sha = adapter_sha256(out_dir)
    manifest = {
        "name": plan.name, "method": plan.method,
        "hyperparameters": plan.hyperparameters.to_wire(),
        "resources": plan.resources.to_wire(),
        "base": {"source": plan.base.source, "file": plan.base.file, "revision": plan.base.revision,
                 "sha256": base_sha, "modelDeployment": plan.base_model_deployment,
                 "parameters": plan.base.parameters, "architecture": metrics.get("architecture")},
        "targetModules": metrics.get("target_modules"),
        "dataset": {"sha256": dataset_sha256(records), "records": len(records), "train": len(train),
                    "eval": len(held)},
        "license": plan.license, "licenseAccepted": plan.license_accepted,
        "adapterSha256": sha,
        "metrics": {"steps": metrics.get("step"), "trainLoss": metrics.get("train_loss"),
                    "evalLoss": metrics.get("eval_loss"), "durationSeconds": round(duration, 2)},
    }
    (out_dir / ADAPTER_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if plan.output.startswith("s3://"):
        import boto3

        bucket, _, prefix = plan.output.removeprefix("s3://").partition("/")
        client = boto3.client("s3")
        for name in (*ADAPTER_FILES, ADAPTER_MANIFEST):
            client.upload_file(str(out_dir / name), bucket, f"{prefix.rstrip('/')}/{name}")
    return {
        "phase": "Succeeded", "step": metrics.get("step"), "totalSteps": steps,
        "trainLoss": metrics.get("train_loss"), "evalLoss": metrics.get("eval_loss"),
        "adapterUri": plan.output_uri, "adapterSha256": sha, "license": plan.license,
        "durationSeconds": round(duration, 2),
        "stepsPerSecond": round(ran / float(metrics["train_seconds"]), 4) if ran and metrics.get("train_seconds")
        else None,  # None: a resumed run that had nothing left to do
        "path": str(out_dir),
    }
