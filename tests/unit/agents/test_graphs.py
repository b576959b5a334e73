"""The graphs and the transport-free Agent against a scripted OpenAI-compatible endpoint and an in-memory
retriever (a supplement: tests/integration/agents runs the same paths on the real models and store)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from raylight.api.connections import ThreadsConnection
from raylight.api.types import PipelineSpec
from raylight_agents.agent import Agent, Turn, User, running
from raylight_agents.graphs.base import DONT_KNOW
from raylight_agents.tools import HttpToolbox, ToolError
from raylight_pipelines.retrieval.retriever import Caller
from raylight_pipelines.web.errors import ApiError

DOCS = [
    Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md"),
    Doc("d2", "Qdrant stores the chunk vectors; hybrid search fuses dense and BM25.", "store.md"),
    Doc("d3", "Salary bands for engineers are reviewed every March.", "hr.md", groups=("hr",)),
]


def spec(graph: str = "rag", min_score: float = 0.3, **agent: Any) -> PipelineSpec:
    """The test Pipeline; minScore suits the bag-of-words embedder of the fakes (test_grounding checks it)."""
    return PipelineSpec.model_validate({
        "embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
        "retrieval": {"topK": 3, "minScore": min_score}, "agent": {"graph": graph, **agent}})


def make_agent(llm: ScriptedLLM, retriever: MemoryRetriever, s: PipelineSpec,
               threads: ThreadsConnection | None = None, tools: HttpToolbox | None = None) -> Agent:
    return Agent("handbook", s, connections(threads=threads), retriever=lambda: retriever, llm=llm.llm(),
                 tools=tools)


async def test_rag_answer_cites_only_retrieved_chunks_and_drops_invented_references() -> None:
    llm = ScriptedLLM(lambda body: "Serve scales replicas [1] between min and max [9].")
    retriever = MemoryRetriever(DOCS)
    async with running(make_agent(llm, retriever, spec())) as agent:
        out = await agent.invoke(Turn("How does Serve scale replicas?"))
    assert out["answer"] == "Serve scales replicas [1] between min and max."
    assert [c["id"] for c in out["citations"]] == ["d1"]
    assert set(c["id"] for c in out["citations"]) <= set(out["retrieved"])
    assert out["grounding"] == "cited"
    prompt = llm.answer_calls()[0]["messages"][-1]["content"]
    assert "[1] serve.md: Ray Serve scales replicas" in prompt


async def test_rag_says_it_does_not_know_without_calling_the_model_when_nothing_is_relevant() -> None:
    llm = ScriptedLLM(lambda body: "Ulaanbaatar [1].")
    async with running(make_agent(llm, MemoryRetriever(DOCS), spec())) as agent:
        out = await agent.invoke(Turn("What is the capital of Mongolia?"))
    assert out["answer"] == f"{DONT_KNOW} Closest sources: serve.md, store.md."
    assert out["grounding"] == "none" and out["support"] == []
    assert [c["source"] for c in out["citations"]] == ["serve.md", "store.md"]  # the closest, for the reader
    assert llm.requests == []


async def test_caller_groups_reach_the_retriever_and_hide_other_groups_chunks() -> None:
    llm = ScriptedLLM(lambda body: "Bands are reviewed in March [1].")
    retriever = MemoryRetriever(DOCS)
    async with running(make_agent(llm, retriever, spec())) as agent:
        outsider = await agent.invoke(Turn("When are salary bands reviewed?", user=User("bob", None, ("eng",))))
        insider = await agent.invoke(Turn("When are salary bands reviewed?", user=User("ann", "acme", ("hr",))))
    assert retriever.queries[0][1] == Caller(user="bob", tenant=None, groups=("eng",))
    assert "d3" not in outsider["retrieved"] and "d3" not in [c["id"] for c in outsider["citations"]]
    assert [c["id"] for c in insider["citations"]] == ["d3"]


async def test_streaming_and_invoke_give_the_same_answer_and_citations() -> None:
    llm = ScriptedLLM(lambda body: "Hybrid search fuses dense and BM25 [1] [4].")
    async with running(make_agent(llm, MemoryRetriever(DOCS), spec())) as agent:
        plain = await agent.invoke(Turn("How does hybrid search work?"))
        events = [e async for e in agent.events(Turn("How does hybrid search work?"))]
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "final" and "token" in kinds
    tokens = "".join(d["text"] for k, d in events if k == "token")
    final = events[-1][1]
    assert tokens.strip() == final["answer"] == plain["answer"]
    assert final["citations"] == plain["citations"]


RULES = [Doc("r1", "Each source can set access groups.\nA user outside a group never sees that group's chunks, "
                   "even when the query repeats the chunk's exact words.", "security.md"),
         Doc("r2", "Groups are listed in the source's access block.", "pipeline.md")]


async def test_a_yes_no_question_governed_by_a_restriction_is_answered_by_quoting_it_streamed_or_not() -> None:
    # The model would state the opposite of the rule; the agent quotes the rule instead of asking it.
    llm = ScriptedLLM(lambda body: "Yes, you will see them.")
    question = "If my query repeats the words of a group's chunks, will a user outside the group see them?"
    async with running(make_agent(llm, MemoryRetriever(RULES), spec())) as agent:
        plain = await agent.invoke(Turn(question))
        events = [e async for e in agent.events(Turn(question))]
    rule = "A user outside a group never sees that group's chunks, even when the query repeats the chunk's exact words."
    assert plain["answer"] == f'According to the documents: "{rule}" [1]'
    assert [c["id"] for c in plain["citations"]] == ["r1"] and plain["grounding"] == "cited"
    assert llm.requests == []
    tokens = "".join(d["text"] for k, d in events if k == "token")
    assert tokens == events[-1][1]["answer"] == plain["answer"]


async def test_other_questions_on_the_same_sources_still_ask_the_model() -> None:
    llm = ScriptedLLM(lambda body: "Groups are set in the access block [2].")
    async with running(make_agent(llm, MemoryRetriever(RULES), spec())) as agent:
        how = await agent.invoke(Turn("Where are a source's access groups listed?"))  # not a yes/no question
        unrestricted = await agent.invoke(Turn("Are groups listed in the source's access block?"))
    assert how["answer"] == unrestricted["answer"] == "Groups are set in the access block [2]."
    assert len(llm.answer_calls()) == 2


async def test_thread_sends_earlier_turns_to_the_model_and_survives_a_restart(tmp_path: Path) -> None:
    threads = ThreadsConnection(sqlite_path=str(tmp_path / "threads.sqlite"))
    llm = ScriptedLLM(lambda body: "Replicas scale between min and max [1].")
    async with running(make_agent(llm, MemoryRetriever(DOCS), spec(), threads)) as agent:
        first = await agent.invoke(Turn("How do Serve replicas scale?", user=User("ann")))
    async with running(make_agent(llm, MemoryRetriever(DOCS), spec(), threads)) as agent:  # a "restart"
        await agent.invoke(Turn("And what stores the vectors?", first["thread_id"], User("ann")))
        history = await agent.history(first["thread_id"], User("ann"))
        with pytest.raises(ApiError) as other:
            await agent.history(first["thread_id"], User("mallory"))
    sent = llm.answer_calls()[-1]["messages"]
    assert {"role": "user", "content": "How do Serve replicas scale?"} in sent
    assert {"role": "assistant", "content": first["answer"]} in sent
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
    assert other.value.status == 404


async def test_json_schema_mode_passes_response_format_and_keeps_the_json() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    llm = ScriptedLLM(lambda body: json.dumps({"answer": "autoscaling [1]"}))
    s = spec(responseFormat={"jsonSchema": {"name": "reply", "schema": schema}})
    async with running(make_agent(llm, MemoryRetriever(DOCS), s)) as agent:
        out = await agent.invoke(Turn("How do replicas scale?"))
    assert json.loads(out["answer"]) == {"answer": "autoscaling [1]"}
    fmt = llm.requests[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema


async def test_agentic_rag_rewrites_at_most_max_iterations_then_says_it_does_not_know() -> None:
    def reply(body: dict[str, Any]) -> str:
        name = body.get("response_format", {}).get("json_schema", {}).get("name")
        return {"grade": '{"relevant": []}', "query": '{"query": "replica scaling policy"}'}.get(name, "x")

    llm = ScriptedLLM(reply)
    retriever = MemoryRetriever(DOCS)
    async with running(make_agent(llm, retriever, spec("agentic-rag", maxIterations=2))) as agent:
        out = await agent.invoke(Turn("How do Serve replicas scale?"))
    names = [r["response_format"]["json_schema"]["name"] for r in llm.requests]
    assert names == ["grade", "query", "grade", "query", "grade"]  # 3 searches, 2 rewrites
    assert [q for q, _ in retriever.queries][1:] == ["replica scaling policy"] * 2
    assert out["answer"].startswith(DONT_KNOW) and out["grounding"] == "none"


async def test_agentic_rag_answers_from_graded_chunks_only() -> None:
    def reply(body: dict[str, Any]) -> str:
        name = body.get("response_format", {}).get("json_schema", {}).get("name")
        return '{"relevant": [1]}' if name == "grade" else "It autoscales [1] [2]."

    llm = ScriptedLLM(reply)
    async with running(make_agent(llm, MemoryRetriever(DOCS), spec("agentic-rag"))) as agent:
        out = await agent.invoke(Turn("How do Serve replicas scale with autoscaling?"))
    assert out["answer"] == "It autoscales [1]." and [c["id"] for c in out["citations"]] == ["d1"]


async def test_http_tools_call_only_the_allowlisted_url() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text="Oncall today: Ann (ext. 42)")

    s = spec("agentic-rag", tools=[{"name": "oncall", "description": "who is on call today",
                                    "url": "http://tools.test/oncall"}])
    tools = HttpToolbox(list(s.agent.tools), transport=httpx.MockTransport(handler))

    def reply(body: dict[str, Any]) -> str:
        name = body.get("response_format", {}).get("json_schema", {}).get("name")
        return {"tool": '{"tool": "oncall", "input": "today"}', "grade": '{"relevant": [1]}'}.get(
            name, "Ann is on call [1].")

    llm = ScriptedLLM(reply)
    async with running(make_agent(llm, MemoryRetriever(DOCS), s, tools=tools)) as agent:
        out = await agent.invoke(Turn("Who is on call today?"))
    assert seen == ["http://tools.test/oncall?q=today"]
    assert out["citations"][0]["id"] == "tool:oncall" and out["citations"][0]["source"] == "http://tools.test/oncall"
    with pytest.raises(ToolError):
        await tools.call("http://evil.test/x", "x")


async def test_model_or_store_outage_is_a_503_with_a_reason_and_recovers() -> None:
    llm = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    retriever = MemoryRetriever(DOCS)
    async with running(make_agent(llm, retriever, spec())) as agent:
        retriever.down = True
        with pytest.raises(ApiError) as store:
            await agent.invoke(Turn("How do replicas scale?"))
        retriever.down, llm.down = False, True
        with pytest.raises(ApiError) as model:
            await agent.invoke(Turn("How do replicas scale?"))
        assert (await agent.ready())["model"]["ok"] is False
        llm.down = False
        assert (await agent.invoke(Turn("How do replicas scale?")))["citations"]
        assert (await agent.ready())["ready"] is True
    assert (store.value.status, store.value.code) == (503, "store_unavailable")
    assert (model.value.status, model.value.code) == (503, "model_unavailable")
    assert "unreachable" in model.value.message


async def test_audit_line_has_ids_model_tokens_and_no_question_unless_allowed(
        caplog: pytest.LogCaptureFixture) -> None:
    llm = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    caplog.set_level(logging.INFO, logger="raylight.audit")
    for log_questions in (False, True):
        async with running(make_agent(llm, MemoryRetriever(DOCS), spec(logQuestions=log_questions))) as agent:
            await agent.invoke(Turn("How do replicas scale?", user=User("ann", "acme")))
    first, second = (json.loads(r.getMessage()) for r in caplog.records if r.name == "raylight.audit")
    assert first["pipeline"] == "handbook" and first["user"] == "ann" and first["model"] == "tiny"
    assert first["retrieved"] and first["cited"] == ["d1"] and first["tokens"]["completion_tokens"] > 0
    assert first["latency_ms"] > 0 and "question" not in first
    assert second["question"] == "How do replicas scale?"


@pytest.mark.parametrize("graph", ["rag", "agentic-rag"])
async def test_a_follow_up_in_a_thread_is_searched_with_the_previous_question(graph: str) -> None:
    llm = ScriptedLLM(lambda body: json.dumps({"relevant": [1]}) if "grade" in json.dumps(body.get(
        "response_format", {})) else "Between min and max [1].")
    retriever = MemoryRetriever(DOCS)
    async with running(make_agent(llm, retriever, spec(graph))) as agent:
        first = await agent.invoke(Turn("How does Serve scale replicas?"))
        follow = await agent.invoke(Turn("Within which limits does it do that?", first["thread_id"]))
    assert retriever.queries[-1][0] == "How does Serve scale replicas? Within which limits does it do that?"
    assert [c["id"] for c in follow["citations"]] == ["d1"]


async def test_openai_style_history_makes_the_follow_up_standalone_too() -> None:
    retriever = MemoryRetriever(DOCS)
    async with running(make_agent(ScriptedLLM(lambda body: "Yes [1]."), retriever, spec())) as agent:
        prior = [{"role": "user", "content": "Where are the chunk vectors stored?"},
                 {"role": "assistant", "content": "In Qdrant [1]."}]
        out = await agent.invoke(Turn("Does it fuse BM25?", prior=prior))
    assert retriever.queries[-1][0] == "Where are the chunk vectors stored? Does it fuse BM25?"
    assert out["citations"][0]["id"] == "d2"
