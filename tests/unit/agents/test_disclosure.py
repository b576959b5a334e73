"""Nothing disclosed without credentials: a protected pipeline's metrics series are left out of the merged
anonymous scrape, outage errors carry no Ray actor ids, addresses or DSNs (an error id instead, the cause
in the log), and a cluster agent's Serve application (what Ray's `/-/routes` tells anyone) names no
Pipeline."""

from __future__ import annotations

import logging

import pytest
import yaml
from raylight.api.types import Pipeline
from raylight.desired.kubernetes import get_agent_rayservice
from raylight.settings import Settings
from raylight_agents import errors
from raylight_agents.agent import Agent
from raylight_pipelines import telemetry

ACTOR_DIED = ("store actor 'raylight-store' is not running: ActorDiedError: The actor died unexpectedly. "
              "actor_id=5b2a0f9c3d1e4a7b8c9d0e1f2a3b4c5d6e7f8091, pid=48213, ip=10.12.0.7, "
              "node 9f8e7d6c5b4a39281706f5e4d3c2b1a0 at 10.12.0.7:6379")


def test_an_anonymous_merged_scrape_names_no_protected_pipeline() -> None:
    agent = ('# HELP raylight_agent_auth_failures_total x\n# TYPE raylight_agent_auth_failures_total counter\n'
             'raylight_agent_auth_failures_total{pipeline="sec"} 148.0\n'
             'raylight_agent_auth_failures_total{pipeline="handbook"} 2.0\n')
    model = ('# HELP raylight_model_requests_total x\n# TYPE raylight_model_requests_total counter\n'
             'raylight_model_requests_total{model="minilm",route="embed",status="200"} 3.0\n')
    anonymous = telemetry.merge([agent, model], hide={"pipeline": {"sec", "oidc"}})
    assert "sec" not in anonymous and 'pipeline="handbook"' in anonymous and 'model="minilm"' in anonymous
    assert 'pipeline="sec"' in telemetry.merge([agent, model], hide={"pipeline": set()})


@pytest.mark.parametrize("cause", [errors.StoreUnavailable(ACTOR_DIED), ConnectionError(ACTOR_DIED)])
def test_a_store_outage_answer_carries_no_internal_id(cause: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        error = Agent._map(cause) if isinstance(cause, errors.StoreUnavailable) else errors.outage(
            "threads", "the thread store", cause)
    assert error.status == 503 and error.code in ("store_unavailable", "threads_unavailable")
    for internal in ("5b2a0f9c", "9f8e7d6c", "10.12.0.7", "48213", "raylight-store"):
        assert internal not in error.message, error.message
    ident = error.message.split("error id ")[1][:12]
    assert any(ident in r.getMessage() and "5b2a0f9c" in r.getMessage() for r in caplog.records)


def test_redact_removes_ray_ids_addresses_and_pids() -> None:
    text = errors.redact(ACTOR_DIED)
    for internal in ("5b2a0f9c", "9f8e7d6c", "10.12.0.7", "48213"):
        assert internal not in text
    assert errors.redact("the model at http://[fd00::5]:8000/v1 did not answer") == \
        "the model at http://<redacted>/v1 did not answer"
    assert errors.unavailable("model", ACTOR_DIED).message == text


def test_a_cluster_agents_serve_application_names_no_pipeline() -> None:
    pipeline = Pipeline.model_validate({
        "apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "merger-vault"},
        "spec": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                 "agent": {"auth": {"secret": "vault-token"}}}})
    rs = get_agent_rayservice(pipeline, "default", Settings())
    (app,) = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    assert app["name"] == "agent" and app["route_prefix"] == "/"
    assert app["args"]["name"] == "merger-vault"  # the agent still knows which pipeline it serves
