"""`rag`: retrieve -> generate. Answers cite numbered sources; no relevant source, no model call. A follow-up
in a conversation is searched as a standalone query (the agent sets `query` from the thread's history)."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from raylight_agents.graphs.base import AgentState, GraphDeps, RunContext, generate, relevant, retrieve
from raylight_agents.registry import register


@register("rag")
def build(deps: GraphDeps) -> StateGraph[Any, Any, Any, Any]:

    async def retrieve_node(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        query = state["query"]  # the question, made standalone when it is a follow-up
        chunks = await retrieve(deps, query, runtime.context.caller)
        return {"chunks": chunks, "queries": [query], "context": relevant(query, chunks)}

    async def generate_node(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
        return await generate(deps, state, runtime.context, runtime.stream_writer)

    graph = StateGraph(AgentState, context_schema=RunContext)
    graph.add_node("retrieve", retrieve_node)
    graph.add_node("generate", generate_node)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "generate")
    graph.add_edge("generate", END)
    return graph
