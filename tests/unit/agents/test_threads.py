"""Threads under hostile callers, concurrency and outage, on each thread store (memory, SQLite, and the real
PostgreSQL on 127.0.0.1:5432 where one answers): a thread belongs to the user who started it (or to no
one), two concurrent turns on one thread never lose one silently (the second is refused with 409), and a
thread store that fails mid-run answers 503 with the reason and makes readiness say so."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from raylight.api.connections import ThreadsConnection
from raylight.api.types import PipelineSpec
from raylight_agents.agent import Agent, Turn, User
from raylight_pipelines.web.errors import ApiError

PG_DSN = os.environ.get("RAYLIGHT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DOCS = [Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md")]
QUESTION = "How does Serve scale replicas?"


def postgres_answers() -> bool:
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def threads(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ThreadsConnection:
    if request.param == "memory":
        return ThreadsConnection()
    if request.param == "sqlite":
        return ThreadsConnection(sqlite_path=str(tmp_path / "threads.sqlite"))
    if not postgres_answers():
        pytest.skip(f"no PostgreSQL answers at {PG_DSN} (start one: pg_ctlcluster 15 main start)")
    monkeypatch.setenv("TEST_THREADS_DSN", PG_DSN)
    return ThreadsConnection(postgres_dsn_env="TEST_THREADS_DSN", pool_size=2)


@pytest.fixture
async def agent(threads: ThreadsConnection) -> AsyncIterator[Agent]:
    spec = PipelineSpec.model_validate({"embedder": {"modelDeployment": "minilm"},
                                        "llm": {"modelDeployment": "smollm"},
                                        "retrieval": {"minScore": 0.3}})  # the fakes' bag-of-words embedder
    llm = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    # A unique pipeline name: several runs may share the PostgreSQL database.
    agent = Agent(f"t{uuid.uuid4().hex[:8]}", spec, connections(threads=threads),
                  retriever=lambda: MemoryRetriever(DOCS), llm=llm.llm())
    await agent.start()
    yield agent
    await agent.aclose()


async def test_a_thread_belongs_to_its_starter_or_to_no_one(agent: Agent) -> None:
    anonymous = await agent.invoke(Turn(QUESTION))
    owned = await agent.invoke(Turn(QUESTION, user=User("alice")))
    for thread_id, stranger in ((anonymous["thread_id"], User("alice")), (owned["thread_id"], User()),
                                (owned["thread_id"], User("mallory"))):
        with pytest.raises(ApiError) as read:
            await agent.history(thread_id, stranger)
        assert read.value.status == 404
        with pytest.raises(ApiError) as cont:
            await agent.invoke(Turn("And then?", thread_id, stranger))
        assert cont.value.status == 404
    assert len((await agent.history(owned["thread_id"], User("alice")))["messages"]) == 2
    assert len((await agent.history(anonymous["thread_id"], User()))["messages"]) == 2


async def test_concurrent_turns_on_one_thread_are_serialised_never_lost(agent: Agent) -> None:
    first = await agent.invoke(Turn(QUESTION, user=User("ann")))
    thread_id = first["thread_id"]
    results = await asyncio.gather(*[agent.invoke(Turn(f"Question {i}?", thread_id, User("ann")))
                                     for i in range(4)], return_exceptions=True)
    refused = [r for r in results if isinstance(r, ApiError)]
    answered = [r for r in results if isinstance(r, dict)]
    assert all(r.status == 409 and r.code == "thread_busy" for r in refused)
    assert answered and refused and len(answered) + len(refused) == 4
    history = (await agent.history(thread_id, User("ann")))["messages"]
    assert len(history) == 2 + 2 * len(answered)  # every answered turn is in the thread: none overwritten
    again = await agent.invoke(Turn("One more?", thread_id, User("ann")))  # the lease was released
    assert again["thread_id"] == thread_id


async def test_a_thread_store_that_fails_mid_run_is_a_503_with_the_reason(agent: Agent, threads: ThreadsConnection
                                                                         ) -> None:
    first = await agent.invoke(Turn(QUESTION, user=User("ann")))
    assert (await agent.ready())["threads"]["ok"]
    saver: Any = agent.checkpointer
    if threads == ThreadsConnection():
        pytest.skip("the memory store cannot fail")
    if threads.sqlite_path:
        await saver.conn.close()  # the connection is gone mid-run
    else:
        await saver.conn.close()  # the pool is closed: what a database outage or pool timeout looks like
    with pytest.raises(ApiError) as info:
        await agent.invoke(Turn("And then?", first["thread_id"], User("ann")))
    assert (info.value.status, info.value.code) == (503, "threads_unavailable")
    assert "thread store" in info.value.message and "not saved" in info.value.message
    ready = await agent.ready()
    assert not ready["ready"] and not ready["threads"]["ok"] and "does not answer" in ready["threads"]["detail"]


async def test_a_failed_turn_leaves_the_thread_as_it_was_before_it(threads: ThreadsConnection) -> None:
    """LangGraph saves a run's state when it ends, with an error too; the agent puts the thread back, so a
    failed question is neither shown in the history nor sent to the model again with the next turn."""
    spec = PipelineSpec.model_validate({"embedder": {"modelDeployment": "minilm"},
                                        "llm": {"modelDeployment": "smollm"},
                                        "retrieval": {"minScore": 0.3}})  # the fakes' bag-of-words embedder
    llm = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    agent = Agent(f"t{uuid.uuid4().hex[:8]}", spec, connections(threads=threads),
                  retriever=lambda: MemoryRetriever(DOCS), llm=llm.llm())
    await agent.start()
    try:
        ann = User("ann")
        thread_id = (await agent.invoke(Turn(QUESTION, user=ann)))["thread_id"]
        before = (await agent.history(thread_id, ann))["messages"]
        llm.down = True
        with pytest.raises(ApiError) as invoked:
            await agent.invoke(Turn("How does Serve scale replicas when busy?", thread_id, ann))
        assert invoked.value.status == 503
        with pytest.raises(ApiError) as streamed:
            async for _ in agent.events(Turn("How does Serve scale replicas at night?", thread_id, ann)):
                pass
        assert streamed.value.status == 503
        assert (await agent.history(thread_id, ann))["messages"] == before
        llm.down = False
        await agent.invoke(Turn("How does Serve scale replicas with load?", thread_id, ann))
        after = (await agent.history(thread_id, ann))["messages"]
        assert [m["content"] for m in after if m["role"] == "user"] == [
            QUESTION, "How does Serve scale replicas with load?"]
        assert "when busy" not in str(llm.requests[-1]["messages"])  # the failed question is not sent again
    finally:
        await agent.aclose()
