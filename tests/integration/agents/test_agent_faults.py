"""Faults under concurrent agent traffic, on a local Ray (loopback only): the real SmolLM2 + MiniLM model
apps, the quickstart handbook in the embedded Qdrant behind its store actor, the agent app with SQLite
threads (test_agent_e2e.py builds the same platform; this module has its own, and stops by itself).

- the model's Serve replica killed (`ray.kill`) while WORKERS clients keep asking: requests answer 200,
  503 `model_unavailable` or 504 `timeout` with a reason (never 500/502, never a dropped connection), they
  recover without restarting the agent, /readyz never blames the store or threads and its status agrees
  with its model check (the known gap, a queued model call read as "busy", is in docs/testing.md, "Faults");
- the store (Qdrant's actor) killed mid-run and brought back: 503 `store_unavailable` with a reason while
  it is gone, /readyz 503 naming the store, recovery when it returns, and no thread lost: every thread holds
  exactly the turns that got a 200, before, during and after the outage.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from raylight.api.connections import IngestionPlan, ThreadsConnection
from raylight.desired.pipeline import get_collection_plan
from support import free_port
from test_agent_e2e import QUICKSTART, STORE_ACTOR, Platform, pipeline

pytestmark = pytest.mark.integration

ROUTE = "/agents/handbook/v1/pipelines/handbook"
READYZ = "/agents/handbook/readyz"
RUN_LIMIT_S = 45
WORKERS = 3  # concurrent clients (the machine has few cores: SmolLM2 answers one at a time)
QUESTION = "How do replicas scale in Raylight?"  # answered by the model, from the handbook
UNCOVERED = "What is the capital city of Mongolia?"  # "I don't know" from retrieval alone, without the model


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    import os

    import ray
    from ray import serve
    from raylight.local import serve as local
    from raylight_pipelines.ingest import runner as ingest
    from raylight_pipelines.store.qdrant import start_store_actor

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    data = tmp_path_factory.mktemp("agent-faults")
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    port = local.start(free_port(), num_cpus=6).port  # as `raylight up` starts Ray and Serve (HAProxy ingress)
    platform = Platform(port, data)
    try:
        platform.deploy_model("minilm")
        platform.deploy_model("smollm")
        start_store_actor(STORE_ACTOR, str(data / "qdrant"))
        # A run limit well under the test's bounds: a request stuck on a dead replica ends as a 504.
        p = pipeline("handbook", limits={"maxRequestBytes": 4096, "timeoutSeconds": RUN_LIMIT_S})
        conn = platform.connections(ThreadsConnection(), False)
        plan = IngestionPlan(pipeline="handbook", spec=p.spec, embedder=conn.embedder, store=conn.store,
                             collection=get_collection_plan(p, None))
        assert ingest.run(plan, QUICKSTART).added > 0
        platform.deploy_agent(p, ThreadsConnection(sqlite_path=str(data / "threads.sqlite")))
        yield platform
    finally:
        platform.http.close()
        serve.shutdown()
        ray.shutdown()


@dataclass
class Traffic:
    """WORKERS clients, each continuing its own thread, and a /readyz prober, until stopped."""

    plat: Platform
    question: str = QUESTION
    continue_threads: bool = True  # each client continues its own thread (else a new thread per request)
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[float, float, int, dict[str, Any]]] = field(default_factory=list)  # start, end, status, body
    probes: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    turns: dict[str, int] = field(default_factory=dict)  # thread id -> turns that got a 200
    owners: dict[str, str] = field(default_factory=dict)  # thread id -> the user who started it
    failed: Counter[str] = field(default_factory=Counter)  # thread id -> turns that did not
    threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, worker: int) -> None:
        user = {"id": f"user-{worker}"}
        thread_id: str | None = None  # ids are the server's: a thread starts without one (issue 26)
        while not self.stop.is_set():
            started = time.monotonic()
            if not self.continue_threads:
                thread_id = None
            body_out: dict[str, Any] = {"input": self.question, "user": user}
            if thread_id is not None:
                body_out["thread_id"] = thread_id
            try:
                resp = self.plat.http.post(f"{ROUTE}/invoke", json=body_out, timeout=120)
                status, body = resp.status_code, resp.json()
            except Exception as exc:  # a transport failure is a finding, not a crash of the test
                status, body = 0, {"exception": repr(exc)}
            self.results.append((started, time.monotonic(), status, body))
            if status == 200:
                thread_id = body["thread_id"]
                self.turns[thread_id] = self.turns.get(thread_id, 0) + 1
                self.owners[thread_id] = user["id"]
            else:
                self.failed[thread_id or f"w{worker}-new"] += 1
            if status == 503:
                time.sleep(0.2)  # a client backs off a little on 503

    def _prober(self) -> None:
        while not self.stop.is_set():
            at = time.monotonic()
            resp = self.plat.http.get(READYZ, timeout=30)
            self.probes.append((at, resp.status_code, resp.json()))
            time.sleep(0.5)

    def __enter__(self) -> Traffic:
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(WORKERS)]
        self.threads.append(threading.Thread(target=self._prober, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(150)

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.2)
        return False

    def ok_after(self, moment: float) -> bool:
        return any(start > moment and status == 200 for start, _, status, _ in self.results) and any(
            at > moment and status == 200 for at, status, _ in self.probes)

    def summary(self) -> str:
        return (f"invoke {dict(Counter(s for _, _, s, _ in self.results))}, "
                f"readyz {dict(Counter(s for _, s, _ in self.probes))}")


def replicas(app: str) -> list[str]:
    """The live Serve replica actors of one application (by name; through the GCS, no dashboard needed)."""
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(f"SERVE_REPLICA::{app}#"))


def agent_replicas() -> list[str]:
    return replicas("handbook")


def check_threads(plat: Platform, traffic: Traffic) -> int:
    """No thread lost and none polluted: every thread holds exactly the turns that got a 200, in order (a
    failed turn is taken back out: LangGraph saves a run's state when it ends, with an error too). Returns
    how many questions of failed turns the threads kept without an answer: 0."""
    dangling = 0
    for thread_id, turns in traffic.turns.items():
        user = traffic.owners[thread_id]
        resp = plat.http.get(f"{ROUTE}/threads/{thread_id}", params={"user": user})
        if turns == 0 and resp.status_code == 404:
            continue
        assert resp.status_code == 200, resp.text
        roles = [m["role"] for m in resp.json()["messages"]]
        assert roles.count("assistant") == turns, (thread_id, turns, roles)
        extra = roles.count("user") - turns
        assert extra == 0, (thread_id, turns, traffic.failed[thread_id], roles)
        dangling += extra
    return dangling


def test_a_model_replica_killed_under_traffic_fails_with_503_and_recovers(plat: Platform) -> None:
    import ray

    before = agent_replicas()
    with Traffic(plat, continue_threads=False) as traffic:
        assert traffic.wait(lambda: sum(s == 200 for _, _, s, _ in traffic.results) >= WORKERS, 120), \
            traffic.summary()
        [model] = replicas("smollm")
        killed = time.monotonic()
        ray.kill(ray.get_actor(model, namespace="serve"), no_restart=True)
        # Serve's controller replaces the dead replica; nothing restarts the agent.
        recovered = traffic.wait(lambda: traffic.ok_after(killed + 1.0), 120)
        time.sleep(2.0)
    print(f"\nmodel replica killed: {traffic.summary()}, recovered {recovered} "
          f"after {max((e for _, e, s, _ in traffic.results if s != 200), default=killed) - killed:.1f}s")
    assert recovered, traffic.summary()
    statuses = Counter(s for _, _, s, _ in traffic.results)
    # Known gap (docs/testing.md, "Faults"): while Serve replaces the replica its proxy queues the model calls, so a
    # request waits, and one that waits past the run limit is a 504 `timeout` rather than a 503; the
    # readiness probe sees a connected, silent endpoint ("busy") and stays 200.
    assert set(statuses) <= {200, 503, 504}, traffic.results[-5:]
    for _, _, status, body in traffic.results:
        if status == 503:
            assert body["error"]["code"] == "model_unavailable" and body["error"]["message"], body
        if status == 504:
            assert body["error"]["code"] == "timeout" and body["error"]["message"], body
    for _, status, report in traffic.probes:
        assert status in (200, 503) and report["store"]["ok"] and report["threads"]["ok"], report
        assert (status == 200) == report["model"]["ok"], report
    assert plat.http.get(READYZ).status_code == 200
    assert agent_replicas() == before  # recovered without a restart of the agent
    check_threads(plat, traffic)


def test_the_store_gone_mid_run_is_503_then_recovers_and_loses_no_thread(plat: Platform) -> None:
    import ray
    from raylight_pipelines.store.qdrant import RAY_NAMESPACE, start_store_actor

    before = agent_replicas()
    # Retrieval-only turns (the model is not what fails here): quick, so the outage meets many of them.
    with Traffic(plat, question=UNCOVERED) as traffic:
        assert traffic.wait(lambda: sum(s == 200 for _, _, s, _ in traffic.results) >= 3 * WORKERS, 60), \
            traffic.summary()
        ray.kill(ray.get_actor(STORE_ACTOR, namespace=RAY_NAMESPACE), no_restart=True)
        killed = time.monotonic()
        down = traffic.wait(lambda: any(s == 503 for at, s, _ in traffic.probes if at > killed), 30)
        time.sleep(2.0)  # requests meet the outage
        for _ in range(20):  # the dead actor's folder lock goes with its process
            try:
                start_store_actor(STORE_ACTOR, str(plat.data / "qdrant"))
                break
            except Exception:
                time.sleep(0.5)
        back = time.monotonic()
        recovered = traffic.wait(lambda: traffic.ok_after(back), 120)
        time.sleep(1.0)
    print(f"\nstore killed: {traffic.summary()}, readiness saw it {down}, recovered {recovered}")
    assert down and recovered, traffic.summary()
    outage = [(s, b) for start, end, s, b in traffic.results if s != 200]
    assert outage and {s for s, _ in outage} == {503}, outage[:5]
    for _, body in outage:
        assert body["error"]["code"] == "store_unavailable" and body["error"]["message"], body
    during = [r for at, s, r in traffic.probes if killed < at < back and s == 503]
    # every readyz during the outage names the store; the model's own check runs within readiness's 0.3 s
    # budget and may time out under this load (docs/performance.md, "Readiness while replicas restart")
    assert during and all(not r["store"]["ok"] for r in during), during[:3]
    assert any(r["model"]["ok"] for r in during), during[:3]
    assert plat.http.get(READYZ).status_code == 200
    assert agent_replicas() == before
    dangling = check_threads(plat, traffic)
    print(f"threads: {len(traffic.turns)}, turns kept {sum(traffic.turns.values())}, lost 0, questions of "
          f"failed turns kept unanswered {dangling} of {sum(traffic.failed.values())}")
