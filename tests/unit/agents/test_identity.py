"""Verified identities (`agent.auth.oidc`): tokens signed by a key this test creates, checked by the real
AgentServer and PyJWT. A token for tenant A never retrieves tenant B's chunks; unsigned, foreign-key, expired,
wrong-audience and wrong-issuer tokens get 401; a body cannot restate who it is; threads belong to the
verified user; the issuer's keys come from a Secret (a mounted file) or from its discovery document (a
loopback server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from raylight.api.connections import AuthConnection, OidcConnection
from raylight.api.types import OidcClaims, PipelineSpec
from raylight.desired.pipeline import get_auth_connection
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer
from raylight_pipelines.web.errors import ApiError

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

ISSUER, AUDIENCE = "https://id.example.test/realms/acme", "raylight-handbook"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DOCS = [Doc("a1", "The merger plan for tenant A closes in March.", "a.md", tenant="a"),
        Doc("b1", "The merger plan for tenant B closes in June.", "b.md", tenant="b"),
        Doc("hr", "The merger plan salary bands are for hr.", "hr.md", tenant="a", groups=("hr",))]
QUESTION = "When does the merger plan close?"


def jwks(key: Any = KEY, kid: str = "k1") -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}


def token(sub: str = "alice", tenant: str | None = "a", groups: list[str] | None = None, key: Any = KEY,
          **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300,
              "tenant": tenant, "groups": groups or [], **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": "k1"})


def bearer(value: str) -> str:
    return f"Bearer {value}"


def oidc_spec(**oidc: Any) -> dict[str, Any]:
    return {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
            "agent": {"auth": {"oidc": {"issuer": ISSUER, "audience": AUDIENCE,
                                        "jwksSecret": {"name": "idp-keys", "key": "jwks.json"}, **oidc}}}}


async def make_server(spec: dict[str, Any], retriever: MemoryRetriever) -> Any:
    conn = connections(auth=get_auth_connection(PipelineSpec.model_validate(spec)))
    cls = AgentServer.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)
    llm = ScriptedLLM(lambda body: "It closes in March [1].")
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: retriever, llm=llm.llm())
    return obj


@pytest.fixture
def retriever() -> MemoryRetriever:
    return MemoryRetriever(DOCS)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch, retriever: MemoryRetriever,
                 tmp_path: Path) -> AsyncIterator[Any]:
    (tmp_path / "jwks.json").write_text(json.dumps(jwks()))  # where the jwksSecret volume mounts it
    monkeypatch.setattr("raylight.desired.pipeline.OIDC_JWKS_FILE", str(tmp_path / "jwks.json"))
    obj = await make_server(oidc_spec(), retriever)
    yield obj
    await obj.agent.aclose()


async def test_a_token_for_tenant_a_never_retrieves_tenant_b_chunks(server: Any, retriever: MemoryRetriever) -> None:
    out = await server.invoke({"input": QUESTION}, bearer(token("alice", "a")))
    assert "a1" in out["retrieved"] and not {"b1", "hr"} & set(out["retrieved"])
    caller = retriever.queries[-1][1]
    assert (caller.user, caller.tenant, caller.groups) == ("alice", "a", ())
    hr = await server.invoke({"input": QUESTION}, bearer(token("hana", "a", ["hr"])))
    assert {"a1", "hr"} <= set(hr["retrieved"]) and "b1" not in hr["retrieved"]
    b = await server.chat_completions({"model": "handbook", "messages": [{"role": "user", "content": QUESTION}]},
                                      bearer(token("bob", "b")))
    assert {c["id"] for c in b["citations"]} <= {"b1"}


async def test_a_body_cannot_restate_who_it_is(server: Any) -> None:
    for body in ({"input": QUESTION, "user": {"id": "alice", "tenant": "b"}},):
        with pytest.raises(ApiError) as info:
            await server.invoke(body, bearer(token("alice", "a")))
        assert (info.value.status, info.value.param) == (400, "user")
    with pytest.raises(ApiError) as chat:
        await server.chat_completions({"model": "handbook", "user": "bob",
                                       "messages": [{"role": "user", "content": QUESTION}]}, bearer(token()))
    assert (chat.value.status, chat.value.param) == (400, "user")


@pytest.mark.parametrize("presented", [
    None, "", "Basic abc", bearer("not-a-jwt"),
    bearer(jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}, None,
                      algorithm="none")),  # unsigned
    bearer(token(key=OTHER_KEY)),  # signed by another key
    bearer(token(exp=int(time.time()) - 120)),  # expired (beyond the 30 s leeway)
    bearer(token(aud="another-app")),
    bearer(token(iss="https://evil.example.test/")),
    bearer(token(sub=None)),  # no user id
])
async def test_unsigned_foreign_expired_or_misaddressed_tokens_get_401(server: Any, presented: str | None) -> None:
    with pytest.raises(ApiError) as info:
        await server.invoke({"input": QUESTION}, presented)
    assert info.value.status == 401 and info.value.type == "authentication_error"
    assert not await server._visible(presented)  # nor does a gateway name the pipeline to them


async def test_threads_belong_to_the_verified_user(server: Any) -> None:
    first = await server.invoke({"input": QUESTION}, bearer(token("alice", "a")))
    mine = await server.thread(first["thread_id"], None, bearer(token("alice", "a")))
    assert len(mine["messages"]) == 2
    with pytest.raises(ApiError) as other:
        await server.thread(first["thread_id"], None, bearer(token("bob", "a")))
    assert other.value.status == 404
    with pytest.raises(ApiError) as claimed:
        await server.thread(first["thread_id"], "alice", bearer(token("bob", "a")))
    assert claimed.value.status == 400


@pytest.fixture
def issuer() -> Iterator[str]:
    """A loopback OIDC issuer: discovery document and JWKS."""
    keys = jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = {"/.well-known/openid-configuration": {"issuer": base, "jwks_uri": f"{base}/keys"},
                    "/keys": keys}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(json.dumps(body or {}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def test_keys_are_fetched_from_the_issuer_and_an_unreachable_issuer_is_503(
        issuer: str, retriever: MemoryRetriever) -> None:
    spec = oidc_spec(issuer=issuer, jwksSecret=None)
    server = await make_server(spec, retriever)
    try:
        out = await server.invoke({"input": QUESTION}, bearer(token(iss=issuer)))
        assert "a1" in out["retrieved"]
    finally:
        await server.agent.aclose()
    down = await make_server(oidc_spec(issuer="http://127.0.0.1:9", jwksSecret=None), retriever)
    try:
        with pytest.raises(ApiError) as info:
            await down.invoke({"input": QUESTION}, bearer(token(iss="http://127.0.0.1:9")))
        assert (info.value.status, info.value.code) == (503, "auth_unavailable")
    finally:
        await down.agent.aclose()


def test_auth_is_a_shared_token_or_oidc_never_both_or_neither() -> None:
    for auth in ({}, {"secret": "t", "oidc": {"issuer": ISSUER, "audience": AUDIENCE}}):
        with pytest.raises(ValidationError, match="exactly one of secret or oidc"):
            PipelineSpec.model_validate({**oidc_spec(), "agent": {"auth": auth}})
    conn = get_auth_connection(PipelineSpec.model_validate(oidc_spec(claims={"groups": "realm_access.roles"})))
    assert conn == AuthConnection(oidc=OidcConnection(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256", "ES256"], jwks_file="/etc/raylight/oidc/jwks.json",
        claims=OidcClaims(user="sub", tenant="tenant", groups="realm_access.roles")))
