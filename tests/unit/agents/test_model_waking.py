"""The agent's calls to a model that scales to zero (LLMConnection.wake_timeout_seconds): the gateway's 503
`model_waking` reaches the caller as the agent's own 503 `model_waking` with Retry-After; a call that gets no answer
within the wake deadline plus its timeout is `model_waking` too (not a 504); and the agent's readiness never asks
such a model (a probe would wake it, or keep its last replica from going idle)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from raylight.api.connections import LLMConnection
from raylight_agents.agent import Agent
from raylight_agents.llm import LLM, ModelTimeout, ModelWaking

ASK = [{"role": "user", "content": "hi"}]


def llm(handler: Any, wake: int | None, timeout: float = 5.0) -> LLM:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return LLM("smollm", "http://gateway/v1", timeout_seconds=timeout, http_client=client,
               wake_timeout_seconds=wake)


def test_the_gateway_s_model_waking_becomes_the_agent_s_503_with_retry_after() -> None:
    def waking(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "7"}, json={"error": {
            "message": "model smollm was scaled to zero and is still starting after 30 s", "type":
            "service_unavailable", "param": None, "code": "model_waking"}})

    with pytest.raises(ModelWaking) as exc:
        asyncio.run(llm(waking, wake=30).complete(ASK))
    assert exc.value.retry_after == 7
    error = Agent._map(exc.value)
    assert (error.status, error.code, error.headers()) == (503, "model_waking", {"Retry-After": "7"})
    assert "scaled to zero" in error.message


def test_no_answer_within_wake_plus_timeout_is_model_waking_and_not_retried() -> None:
    calls = []

    def silent(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(ModelWaking) as exc:
        asyncio.run(llm(silent, wake=2).complete(ASK))
    assert len(calls) == 1  # one wait, not one per retry
    assert "wakeTimeoutSeconds: 2" in str(exc.value)


def test_a_model_that_keeps_a_replica_still_times_out_as_504() -> None:
    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(ModelTimeout) as exc:
        asyncio.run(llm(silent, wake=None).complete(ASK))
    assert not isinstance(exc.value, ModelWaking)
    assert Agent._map(exc.value).status == 504


def test_the_client_waits_the_wake_deadline_on_top_of_its_timeout() -> None:
    client = LLM.from_connection(LLMConnection(model="m", base_url="http://x/v1", timeout_seconds=60,
                                               wake_timeout_seconds=300)).client
    assert client.timeout == 360 and client.max_retries == 0


def test_readiness_does_not_ask_a_model_that_scales_to_zero() -> None:
    asked = []

    def models(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"object": "list", "data": []})

    ok, detail = asyncio.run(llm(models, wake=30).ready())
    assert ok and "scales to zero" in detail and asked == []
    assert asyncio.run(llm(models, wake=None).ready())[0] and asked == ["/v1/models"]
