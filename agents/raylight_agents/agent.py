"""A Pipeline's agent without any transport: the compiled graph, its checkpointer, its model and store.

`serve.AgentServer` puts HTTP in front of it; `bench/agent.py` calls it in-process to measure what the
endpoint adds. Every call writes one audit line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Final, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot
from raylight.api.connections import Connections
from raylight.api.types import PipelineSpec
from raylight_pipelines import telemetry
from raylight_pipelines.retrieval.retriever import standalone_query
from raylight_pipelines.web.guard import internal_error

from raylight_agents import audit, errors, registry
from raylight_agents.checkpoint import TurnLocks, checkpoint_kind, open_checkpointer
from raylight_agents.graphs.base import AgentState, GraphDeps, RunContext, turn_input
from raylight_agents.grounding import Grounder, answer_mode
from raylight_agents.llm import LLM, Message, ModelRejected, ModelTimeout, ModelUnavailable, ModelWaking
from raylight_agents.mcp_tools import McpToolbox, Toolbox
from raylight_agents.readiness import Probe
from raylight_agents.tools import HttpToolbox

log = logging.getLogger(__name__)
THREAD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# A turn's state is written to the thread store once, when the run ends (not after every node): a failed
# turn is asked again, so the intermediate checkpoints only cost writes.
DURABILITY: Final = "exit"


@dataclass(frozen=True)
class User:
    id: str | None = None
    tenant: str | None = None
    groups: tuple[str, ...] = ()


@dataclass
class Turn:
    """One question to the agent and what it needs to know about the caller."""

    question: str
    thread_id: str | None = None
    user: User = field(default_factory=User)
    prior: list[Message] = field(default_factory=list)  # OpenAI-style callers send the history themselves


class LazyRetriever:
    """Opens the pipeline's retriever on first use and again after a store outage, so a replica that
    started while the store was down recovers by itself."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._retriever: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._retriever is None:
                try:
                    self._retriever = self._opener()
                except errors.ApiError:
                    raise
                except Exception as exc:
                    raise errors.StoreUnavailable(f"cannot open the store: {exc}") from exc
            return self._retriever

    def warm(self) -> bool:
        """Open it now (a replica starting: the query encoder loads before the first request, not during
        it); a failure is logged and left to the first use, which raises it as a 503."""
        try:
            self.get()
            return True
        except Exception as exc:
            log.warning("retriever not opened at start (retried on first use): %s", exc)
            return False

    def search(self, query: str, caller: Any = None, top_k: int | None = None, **options: Any) -> list[Any]:
        try:
            return list(self.get().search(query, caller=caller, top_k=top_k, **options))
        except errors.StoreUnavailable:
            with self._lock:
                self._retriever = None  # reopen next time: the store may come back elsewhere
            raise

    def ready(self) -> tuple[bool, str]:
        try:
            ok, detail = self.get().ready()
            return bool(ok), str(detail)
        except Exception as exc:
            return False, str(exc)


def default_retriever(spec: PipelineSpec, connections: Connections) -> Callable[[], Any]:
    def opener() -> Any:
        from raylight_pipelines.retrieval.retriever import open_retriever

        return open_retriever(spec, connections)
    return opener


def make_caller(user: User) -> Any:
    from raylight_pipelines.retrieval.retriever import Caller

    return Caller(user=user.id, tenant=user.tenant, groups=tuple(user.groups))


class Agent:
    def __init__(self, name: str, spec: PipelineSpec, connections: Connections,
                 retriever: Callable[[], Any] | None = None, llm: LLM | None = None,
                 caller_factory: Callable[[User], Any] = make_caller,
                 tools: HttpToolbox | Toolbox | None = None) -> None:
        self.name = name
        self.spec = spec
        self.connections = connections
        conn = connections.llm
        self.llm: LLM | None = llm or (LLM.from_connection(conn) if conn else None)  # None: search only
        self.retriever = LazyRetriever(retriever or default_retriever(spec, connections))
        self.caller_factory = caller_factory
        mode = answer_mode(spec.agent.answer_mode, conn.parameters if conn else None)
        self.builder = None if self.llm is None else registry.get(spec.agent.graph)(
            GraphDeps(spec, self.retriever, self.llm,
                      tools or Toolbox(HttpToolbox(list(spec.agent.tools)), McpToolbox(connections.mcp_servers)),
                      Grounder(self._embed), mode))
        self.graph: CompiledStateGraph[Any, Any, Any, Any] | None = None
        self._probes = (Probe(self._model_ready), Probe(lambda: asyncio.to_thread(self.retriever.ready)),
                        Probe(self._threads_ready))  # model, store, threads: readiness within a budget
        self.checkpointer: BaseCheckpointSaver[Any] | None = None
        self.turns: TurnLocks | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> Agent:
        if self.builder is None:  # search only: no graph, no threads
            return self
        self.checkpointer = await self._stack.enter_async_context(
            open_checkpointer(self.connections.threads))
        _observe_checkpoints(self.checkpointer, self.name)
        self.turns = TurnLocks(self.checkpointer, ttl=self.spec.agent.limits.timeout_seconds + 30)
        await self.turns.setup()
        self.graph = self.builder.compile(checkpointer=self.checkpointer, name=self.name)
        return self

    async def aclose(self) -> None:
        await self._stack.aclose()
        if self.llm is not None:
            await self.llm.aclose()

    def _embed(self, texts: Sequence[str]) -> list[list[float]] | None:
        """The Pipeline's embedder on `texts` (the evidence check), None when its retriever has none."""
        embedder = getattr(self.retriever.get(), "embedder", None)
        if embedder is None:
            return None
        try:
            return cast(list[list[float]], embedder.embed(list(texts)))
        except Exception as exc:
            raise errors.StoreUnavailable(f"cannot embed the passages' sentences: {exc}") from exc

    @property
    def model(self) -> str | None:
        """The answering model's name (None for a search-only pipeline)."""
        return self.llm.model if self.llm else None

    def _answering(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        if self.llm is None:
            raise errors.ApiError(404, f"pipeline {self.name} serves search only (spec.llm is not set): "
                                    f"use /v1/pipelines/{self.name}/search", code="search_only")
        assert self.graph is not None, "call start() first"
        return self.graph

    # ------------------------------------------------------------ threads

    def config(self, thread_id: str) -> RunnableConfig:
        # Namespaced: several pipelines may share one thread database.
        return {"configurable": {"thread_id": f"{self.name}:{thread_id}"}}

    async def _snapshot(self, thread_id: str, user: User) -> StateSnapshot | None:
        """The thread's latest checkpoint, or None for a new thread. A thread belongs to the user who started it
        (None when started without one): for anyone else it does not exist (404), whatever `user` they state."""
        graph = self._answering()
        if not THREAD_ID.match(thread_id):
            raise errors.ApiError(400, "thread_id: 1-128 characters of letters, digits, _ . : -",
                                  code="invalid_value", param="thread_id")
        snapshot = await graph.aget_state(self.config(thread_id))
        values = cast(AgentState, snapshot.values or {})
        if values and values.get("owner") != user.id:
            raise errors.not_found(f"thread {thread_id}")
        return snapshot if values else None

    async def _owned_state(self, thread_id: str, user: User) -> AgentState | None:
        """The thread's state, or None for a new thread (see `_snapshot`)."""
        snapshot = await self._snapshot(thread_id, user)
        return cast(AgentState, snapshot.values) if snapshot else None

    async def _forget_turn(self, thread_id: str, before: RunnableConfig | None) -> None:
        """Leave the thread as it was before a turn that failed: LangGraph saves a run's state when the run
        ends, with an error too, so the question would otherwise stay in the thread without its answer (and be
        sent to the model again with the next turn). A new thread is removed; an older one gets its previous
        checkpoint back as the latest (a copy, LangGraph's `__copy__` fork)."""
        graph = self._answering()
        try:
            if before is None:
                if graph.checkpointer is not None and not isinstance(graph.checkpointer, bool):
                    await graph.checkpointer.adelete_thread(self.config(thread_id)["configurable"]["thread_id"])
            else:
                await graph.aupdate_state(before, None, as_node="__copy__")
        except Exception as exc:  # the thread store itself failing: that error is the one the caller gets
            log.warning("pipeline %s: thread %s keeps the failed turn: %s", self.name, thread_id, exc)

    async def history(self, thread_id: str, user: User | None = None) -> dict[str, Any]:
        values = await self._owned_state(thread_id, user or User())
        if values is None:
            raise errors.not_found(f"thread {thread_id}")
        return {"thread_id": thread_id, "messages": values.get("messages", []),
                "citations": values.get("citations", [])}

    # ------------------------------------------------------------ runs

    @contextlib.asynccontextmanager
    async def _turn(self, turn: Turn) -> AsyncIterator[str]:
        """The turn's thread id, held for this turn alone: a second concurrent turn on it is refused (409)."""
        self._answering()
        if turn.thread_id is None:  # a new thread: nobody else knows its id yet
            yield uuid.uuid4().hex
            return
        assert self.turns is not None, "call start() first"
        key = self.config(turn.thread_id)["configurable"]["thread_id"]
        if not await self.turns.acquire(key):
            raise errors.ApiError(409, f"thread {turn.thread_id} has a turn in progress; send the next one when "
                                  "it has finished", type="conflict", param="thread_id", code="thread_busy")
        try:
            yield turn.thread_id
        finally:
            await self.turns.release(key)

    async def _prepare(self, turn: Turn, thread_id: str,
                       ) -> tuple[AgentState, RunnableConfig, RunContext, RunnableConfig | None]:
        """The turn's input state, its config and context, and the thread's checkpoint before it (None: new)."""
        # A new thread has no state to read back (one checkpoint read less per first question); a given
        # thread_id must name a thread this user started (404 otherwise: callers never choose thread ids).
        snapshot = await self._snapshot(thread_id, turn.user) if turn.thread_id else None
        if turn.thread_id and snapshot is None:  # thread ids are the server's (unguessable): none is made up
            raise errors.not_found(f"thread {turn.thread_id}")
        existing = cast(AgentState, snapshot.values) if snapshot else None
        state = turn_input(turn.question, existing.get("owner") if existing else turn.user.id)
        if turn.prior and existing is None:
            state["messages"] = [*turn.prior, *state["messages"]]
        earlier = existing.get("messages", []) if existing else turn.prior
        # A follow-up is searched with the conversation's earlier user turns (see standalone_query).
        state["query"] = standalone_query(turn.question, [m["content"] for m in earlier if m["role"] == "user"])
        ctx = RunContext(caller=self.caller_factory(turn.user), pipeline=self.name)
        return state, self.config(thread_id), ctx, snapshot.config if snapshot else None

    def result(self, thread_id: str, values: AgentState) -> dict[str, Any]:
        return {
            "answer": values.get("answer", ""),
            "citations": values.get("citations", []),
            "thread_id": thread_id,
            "grounding": values.get("grounding", "none"),
            "support": values.get("support", []),
            "evidence_score": values.get("evidence_score"),
            "retrieved": [c["id"] for c in values.get("chunks", [])],
        }

    def _audit(self, operation: str, turn: Turn, started: float, status: int, ctx: RunContext | None,
               thread_id: str | None, values: AgentState | None, error: str | None = None) -> None:
        values = values or {}
        _count_answer(self.name, ctx, values)
        audit.record(
            self.name, operation, started=started, status=status, model=self.model, user=turn.user.id,
            tenant=turn.user.tenant, thread_id=thread_id,
            retrieved=[c["id"] for c in values.get("chunks", [])],
            cited=[c["id"] for c in values.get("citations", [])],
            usage=ctx.usage.as_dict() if ctx else None, question=turn.question,
            log_questions=self.spec.agent.log_questions, error=error)

    async def _failure(self, exc: BaseException) -> errors.ApiError:
        """`_map`, except that a failure while the thread store does not answer is that store's outage
        (503 with the reason; the turn was not saved), whatever the driver raised."""
        error = self._map(exc)
        if error.status == 500:
            ok, detail = await self._threads_ready()
            if not ok:
                return errors.outage("threads", "the thread store", detail, "; this turn was not saved")
        return error

    @staticmethod
    def _map(exc: BaseException) -> errors.ApiError:
        if isinstance(exc, errors.ApiError):
            return exc
        if isinstance(exc, ModelWaking):
            return errors.ApiError(503, str(exc), type="service_unavailable", code="model_waking",
                                   retry_after=exc.retry_after)
        if isinstance(exc, ModelTimeout):
            return errors.ApiError(504, str(exc), type="timeout", code="model_timeout")
        if isinstance(exc, ModelUnavailable):
            return errors.unavailable("model", str(exc))
        if isinstance(exc, ModelRejected) and exc.code == "context_length_exceeded":
            return errors.ApiError(400, f"input: the question, the thread and the retrieved sources do not fit "
                                   f"the model's context ({exc})", param="input", code="context_length_exceeded")
        if isinstance(exc, ModelRejected):
            return errors.ApiError(502, str(exc), type="bad_gateway", code="model_rejected")
        if isinstance(exc, errors.StoreUnavailable):
            return errors.outage("store", "the vector store", exc)
        return internal_error("agent run", exc)

    async def invoke(self, turn: Turn, operation: str = "invoke") -> dict[str, Any]:
        started = time.perf_counter()
        ctx: RunContext | None = None
        thread_id: str | None = turn.thread_id
        values: AgentState | None = None
        try:
            async with self._turn(turn) as thread_id:
                state, config, ctx, before = await self._prepare(turn, thread_id)
                try:
                    values = cast(AgentState, await self._answering().ainvoke(state, config, context=ctx,
                                                                               durability=DURABILITY))
                except (Exception, asyncio.CancelledError):  # a run limit or a caller gone is a failed turn too
                    await asyncio.shield(self._forget_turn(thread_id, before))
                    raise
        except (asyncio.CancelledError, TimeoutError):
            self._audit(operation, turn, started, 504, ctx, thread_id, values, "timeout")
            raise
        except Exception as exc:
            error = await self._failure(exc)
            self._audit(operation, turn, started, error.status, ctx, thread_id, values, error.message)
            raise error from exc
        assert thread_id is not None and ctx is not None
        self._audit(operation, turn, started, 200, ctx, thread_id, values)
        out = self.result(thread_id, values)
        out["usage"] = ctx.usage.as_dict()
        return out

    async def events(self, turn: Turn, operation: str = "stream") -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """("retrieval", {...}) per retrieval step, ("token", {"text"}) per answer token, then ("final", {...})
        with the same body `invoke` returns. Errors raise `ApiError`."""
        started = time.perf_counter()
        ctx: RunContext | None = None
        thread_id: str | None = turn.thread_id
        final: AgentState = {}
        status, message = 200, None
        try:
            async with self._turn(turn) as thread_id:
                state, config, ctx, before = await self._prepare(turn, thread_id)
                ctx.stream_tokens = True
                parts: AsyncIterator[Any] = self._answering().astream(
                    state, config, context=ctx, stream_mode=["updates", "custom"], durability=DURABILITY)
                try:
                    async for mode, chunk in parts:
                        if mode == "custom" and "token" in chunk:
                            yield "token", {"text": chunk["token"]}
                        elif mode == "updates":
                            for update in chunk.values():
                                if not isinstance(update, dict):
                                    continue
                                final.update(cast(AgentState, update))
                                if "chunks" in update:
                                    yield "retrieval", {
                                        "query": (update.get("queries") or [turn.question])[-1],
                                        "chunks": [{"id": c["id"], "source": c["source"], "title": c["title"],
                                                    "score": c["score"]} for c in update["chunks"]]}
                except (Exception, asyncio.CancelledError):  # a run limit or a caller gone is a failed turn too
                    await asyncio.shield(self._forget_turn(thread_id, before))
                    raise
                out = self.result(thread_id, final)
                out["usage"] = ctx.usage.as_dict()
                yield "final", out
        except (asyncio.CancelledError, GeneratorExit, TimeoutError):
            status, message = 504, "cancelled or timed out"
            raise
        except Exception as exc:
            error = await self._failure(exc)
            status, message = error.status, error.message
            raise error from exc
        finally:
            self._audit(operation, turn, started, status, ctx, thread_id, final, message)

    async def search(self, question: str, user: User, top_k: int | None = None,
                     filters: dict[str, Any] | None = None, history: Sequence[str] = (),
                     hybrid: bool | None = None, rerank: bool | None = None) -> dict[str, Any]:
        """Ranked chunks the user may see: {"pipeline", "query" (the question made standalone with the
        conversation's earlier user turns, `history`), "retrieval": {"hybrid", "rerank"} (as applied),
        "results": [{"rank", "id", "source", "title", "text", "score", "metadata": {"heading", "page",
        "start", "end"}}]}; `hybrid` and `rerank` override the pipeline's settings. Needs no model and no
        thread store; one audit line (operation "search"). Errors raise `ApiError`."""
        started = time.perf_counter()
        status, message, hits = 200, None, []
        query = standalone_query(question, history)
        settings = {"hybrid": self.spec.retrieval.hybrid if hybrid is None else hybrid,
                    "rerank": self.spec.retrieval.rerank is not None if rerank is None else rerank}
        try:
            with telemetry.tracer.start_as_current_span("retrieval", attributes={
                    "raylight.hybrid": bool(settings["hybrid"]), "raylight.rerank": bool(settings["rerank"])}):
                hits = await asyncio.to_thread(self.retriever.search, query, self.caller_factory(user), top_k,
                                               filters=filters, **settings)
            telemetry.AGENT_CHUNKS.labels(self.name, "retrieved").inc(len(hits))
        except Exception as exc:
            error = self._map(exc)
            status, message = error.status, error.message
            raise error from exc
        finally:
            audit.record(self.name, "search", started=started, status=status, model=self.model, user=user.id,
                         tenant=user.tenant, retrieved=[str(h.id) for h in hits], question=query,
                         log_questions=self.spec.agent.log_questions, error=message)
        return {"pipeline": self.name, "query": query, "retrieval": settings, "results": [
            {"rank": rank, "id": str(h.id), "source": h.source, "title": h.title, "text": h.text, "score": h.score,
             "metadata": {"heading": h.heading, "page": h.page, "start": h.start, "end": h.end}}
            for rank, h in enumerate(hits, 1)]}

    # ------------------------------------------------------------ health

    async def _model_ready(self) -> tuple[bool, str]:
        return await self.llm.ready() if self.llm else (True, "no model: this pipeline serves search only")

    async def ready(self) -> dict[str, Any]:
        """Whether this agent can serve now: the model answers (or is merely busy), the store answers, the
        thread store answers. Reasons name no collection, count, URL or path (the probes are public). Answers
        within `readiness.PROBE_BUDGET_S` whatever hangs (each check is a `readiness.Probe`)."""
        (model_ok, model_detail), (store_ok, store_detail), (threads_ok, threads_detail) = await asyncio.gather(
            *(probe() for probe in self._probes))
        return {"ready": model_ok and store_ok and threads_ok,
                "model": {"ok": model_ok, "detail": model_detail},
                "store": {"ok": store_ok, "detail": store_detail},
                "threads": {"ok": threads_ok, "detail": threads_detail}}

    async def _threads_ready(self) -> tuple[bool, str]:
        if self.llm is None:
            return True, "no threads: this pipeline serves search only"
        if self.graph is None:
            return False, "the thread store is not open yet"
        kind = checkpoint_kind(self.connections.threads)
        try:
            await asyncio.wait_for(self.graph.aget_state(self.config("readiness-probe")), 5.0)
        except Exception as exc:
            log.warning("thread store (%s) readiness check failed: %r", kind, exc)
            return False, f"the thread store ({kind}) does not answer: {type(exc).__name__}"
        return True, f"threads in {kind}"


def _count_answer(pipeline: str, ctx: RunContext | None, values: AgentState) -> None:
    """Tokens, chunks and "I don't know" answers of one finished turn, in the metrics."""
    if ctx is not None:
        usage = ctx.usage.as_dict()
        if usage["prompt_tokens"]:
            telemetry.AGENT_TOKENS.labels(pipeline, "prompt").inc(usage["prompt_tokens"])
        if usage["completion_tokens"]:
            telemetry.AGENT_TOKENS.labels(pipeline, "completion").inc(usage["completion_tokens"])
    if chunks := values.get("chunks"):
        telemetry.AGENT_CHUNKS.labels(pipeline, "retrieved").inc(len(chunks))
    if (citations := values.get("citations")) and values.get("grounding") != "none":  # not the closest sources
        telemetry.AGENT_CHUNKS.labels(pipeline, "cited").inc(len(citations))
    if values.get("answer") and values.get("grounding") == "none":
        telemetry.AGENT_DONT_KNOW.labels(pipeline).inc()


def _observe_checkpoints(saver: Any, pipeline: str) -> None:
    """Time the thread store's writes (the turn's checkpoint) as the `checkpoint` stage, with a span."""
    put = saver.aput

    async def aput(*args: Any, **kwargs: Any) -> Any:
        with telemetry.stage(pipeline, "checkpoint"):
            return await put(*args, **kwargs)

    saver.aput = aput


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    await agent.start()
    try:
        yield agent
    finally:
        await agent.aclose()
