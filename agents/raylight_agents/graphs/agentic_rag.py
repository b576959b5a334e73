"""`agentic-rag`: choose a tool -> retrieve -> grade -> (rewrite and retry | generate).

The model picks the next tool (the retriever, "search", or an allowlisted HTTP tool) and grades what
came back; every structured decision is made under a JSON schema, so a small model's output parses.
Grading keeps only sources that also pass the deterministic relevance check, and the loop stops after
spec.agent.maxIterations rewrites; with nothing relevant it says it does not know.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from raylight_agents.graphs.base import (
    MAX_SOURCE_CHARS,
    MAX_SOURCES,
    AgentState,
    Chunk,
    GraphDeps,
    RunContext,
    call_llm,
    generate,
    json_field,
    relevant,
    retrieve,
)
from raylight_agents.mcp_tools import Toolbox
from raylight_agents.registry import register
from raylight_agents.tools import ToolError

SEARCH = "search"
GRADE_CHARS = 300


def _schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@register("agentic-rag")
def build(deps: GraphDeps) -> StateGraph[Any, Any, Any, Any]:
    spec = deps.spec
    tool_names = deps.tools.names

    async def choose(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        """Pick the tool for this step; with no HTTP tools the retriever is the only choice."""
        if not tool_names:
            return {"tool_calls": [*state.get("tool_calls", []), {"tool": SEARCH, "input": state["query"]}]}
        if isinstance(deps.tools, Toolbox):
            await deps.tools.prepare()  # the MCP tools' descriptions, once (within each server's timeout)
        prompt = [
            {"role": "system", "content": "Pick the tool that best answers the question.\n"
             f"- {SEARCH}: search the documents\n{deps.tools.describe()}"},
            {"role": "user", "content": f"Question: {state['query']}"},
        ]
        fmt = _schema("tool", {"type": "object", "properties": {
            "tool": {"enum": [SEARCH, *tool_names]}, "input": {"type": "string", "maxLength": 200}},
            "required": ["tool", "input"]})
        text = await call_llm(deps, runtime.context, prompt, fmt=fmt, max_tokens=64)
        tool = json_field(text, "tool", SEARCH)
        arg = json_field(text, "input", "") or state["query"]
        if tool not in tool_names:
            tool, arg = SEARCH, state["query"]
        return {"tool_calls": [*state.get("tool_calls", []), {"tool": tool, "input": str(arg)}]}

    async def act(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        calls = list(state["tool_calls"])
        call = calls[-1] = dict(calls[-1])
        found: list[Chunk]
        if call["tool"] == SEARCH:
            found = await retrieve(deps, state["query"], runtime.context.caller)
        else:
            try:
                found = [await deps.tools.call(call["tool"], call["input"])]  # type: ignore[list-item]
            except ToolError as exc:  # a failed tool is reported in the trace; the retriever still runs
                call["error"] = str(exc)
                found = await retrieve(deps, state["query"], runtime.context.caller)
        seen = {c["id"] for c in state.get("chunks", [])}
        return {"chunks": [*state.get("chunks", []), *(c for c in found if c["id"] not in seen)],
                "queries": [*state.get("queries", []), state["query"]],
                "tool_calls": calls}

    async def grade(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        """Keep chunks that pass the relevance check (tool results always do) and that the model marks."""
        known = {c["id"] for c in state.get("context", [])}
        fresh = [c for c in state.get("chunks", []) if c["id"] not in known]
        candidates = [c for c in fresh if c["id"].startswith("tool:")] + relevant(
            state["question"] + " " + state["query"], [c for c in fresh if not c["id"].startswith("tool:")])
        candidates = candidates[:MAX_SOURCES]
        kept: list[Chunk] = []
        if candidates:
            listing = "\n".join(f"[{n}] {c['text'][:GRADE_CHARS]}" for n, c in enumerate(candidates, 1))
            prompt = [
                {"role": "system", "content": "List the numbers of the sources that help answer the question."},
                {"role": "user", "content": f"Sources:\n{listing}\n\nQuestion: {state['question']}"},
            ]
            fmt = _schema("grade", {"type": "object", "properties": {"relevant": {
                "type": "array", "items": {"enum": list(range(1, len(candidates) + 1))}}},
                "required": ["relevant"]})
            picked = json_field(await call_llm(deps, runtime.context, prompt, fmt=fmt, max_tokens=48),
                                "relevant", [])
            numbers = {n for n in picked if isinstance(n, int) and 1 <= n <= len(candidates)}
            kept = [c for n, c in enumerate(candidates, 1) if n in numbers]
        context = [*state.get("context", []), *kept][:MAX_SOURCES]
        return {"context": context, "iterations": state.get("iterations", 0) + 1}

    def next_step(state: AgentState) -> str:
        if state.get("context") or state.get("iterations", 0) > spec.agent.max_iterations:
            return "generate"
        return "rewrite"

    async def rewrite(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        tried = ", ".join(f'"{q}"' for q in state.get("queries", []))
        prompt = [
            {"role": "system", "content": "Write a better short search query for the question. "
             "Use different words from the queries already tried."},
            {"role": "user", "content": f"Question: {state['question']}\nTried: {tried}"},
        ]
        fmt = _schema("query", {"type": "object", "properties": {"query": {"type": "string", "maxLength": 120}},
                                "required": ["query"]})
        query = json_field(await call_llm(deps, runtime.context, prompt, fmt=fmt, max_tokens=48), "query", "")
        return {"query": str(query).strip()[:MAX_SOURCE_CHARS] or state["question"]}

    async def generate_node(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        return await generate(deps, state, runtime.context, runtime.stream_writer)

    graph = StateGraph(AgentState, context_schema=RunContext)
    graph.add_node("choose", choose)
    graph.add_node("act", act)
    graph.add_node("grade", grade)
    graph.add_node("rewrite", rewrite)
    graph.add_node("generate", generate_node)
    graph.add_edge(START, "choose")
    graph.add_edge("choose", "act")
    graph.add_edge("act", "grade")
    graph.add_conditional_edges("grade", next_step, {"generate": "generate", "rewrite": "rewrite"})
    graph.add_edge("rewrite", "choose")
    graph.add_edge("generate", END)
    return graph
