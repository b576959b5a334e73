"""The single-port gateway of `raylight up`: one Serve application at "/" in front of every model and agent.

It holds DeploymentHandles to each ModelDeployment's `ModelServer` and each Pipeline's `AgentServer` (those
applications have no HTTP route of their own) and routes:

  POST /v1/embeddings, /v1/rerank,
       /v1/chat/completions                   by the body's `model`: a ModelDeployment's name -> that
                                              model; a Pipeline's name (chat only) -> that pipeline's agent
  GET  /v1/models                             every model and every pipeline
  *    /v1/pipelines/{name}/...               invoke, search, stream, threads/{id} of that pipeline's agent
  GET  /healthz                               the gateway answers
  GET  /readyz                                200 when every model and agent is ready, else 503 with why

Refusals keep the shape of the component that refused (both expose `.status` and `.body()`), so clients
see the same errors as on a cluster.
"""

# No `from __future__ import annotations` here: Serve's class-based FastAPI views resolve the route
# parameters' annotations (Request) at run time, and string annotations turn them into query parameters.
import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

log = logging.getLogger("ray.serve")

GATEWAY_DEPLOYMENT = "Gateway"
MODEL_DEPLOYMENT = "ModelServer"
AGENT_DEPLOYMENT = "AgentServer"
READY_TIMEOUT_S = 10.0

api = FastAPI(title="raylight gateway", docs_url=None, redoc_url=None)


def openai_error(status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "code": code, "param": param}}, status)


def error_response(exc: BaseException) -> JSONResponse:
    """A refusal from a model or agent keeps its status and body; anything else is a 502/503."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if isinstance(status, int) and callable(body):
        return JSONResponse(body(), status)
    name = type(exc).__name__
    if "Unavailable" in name or "NotFound" in name:
        return openai_error(503, f"the backend is not available yet: {exc}", "server_error", "unavailable")
    log.error("gateway: backend call failed: %r", exc)
    return openai_error(502, f"the backend failed: {name}: {exc}", "server_error", "backend_error")


async def sse_response(gen: Any) -> Response:
    """Relay a streaming handle call as server-sent events; errors before the first line keep their status."""
    it = gen.__aiter__()
    try:
        first: str | None = await it.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        return error_response(exc)

    async def body() -> AsyncIterator[str]:
        if first is not None:
            yield first
        async for line in it:
            yield line

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@serve.deployment(name=GATEWAY_DEPLOYMENT, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class Gateway:
    def __init__(self, models: dict[str, str], pipelines: list[str]) -> None:
        self.models = dict(models)  # name -> task (chat | embed | rerank)
        self.pipelines = list(pipelines)

    def _model(self, name: str) -> DeploymentHandle:
        return serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)

    def _agent(self, name: str) -> DeploymentHandle:
        return serve.get_deployment_handle(AGENT_DEPLOYMENT, app_name=name)

    def _unknown(self, model: Any, kinds: str) -> JSONResponse:
        known = ", ".join(sorted([*self.models, *self.pipelines])) or "none"
        return openai_error(404, f"The model '{model}' does not exist here ({kinds}); available: {known}.",
                            code="model_not_found", param="model")

    @staticmethod
    async def _json(request: Request) -> tuple[bytes, Any]:
        raw = await request.body()
        try:
            return raw, json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            return raw, None

    # ------------------------------------------------------------ health

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "models": sorted(self.models), "pipelines": sorted(self.pipelines)}

    async def _ready_one(self, kind: str, name: str) -> dict[str, Any]:
        try:
            if kind == "ModelDeployment":
                await asyncio.wait_for(self._model(name).models.remote(), READY_TIMEOUT_S)
                return {"kind": kind, "name": name, "ready": True}
            report = await asyncio.wait_for(self._agent(name).readyz.remote(), READY_TIMEOUT_S)
            return {"kind": kind, "name": name, "ready": bool(report.get("ready")), "detail": report}
        except Exception as exc:
            return {"kind": kind, "name": name, "ready": False, "detail": f"{type(exc).__name__}: {exc}"}

    @api.get("/readyz")
    async def readyz(self) -> Response:
        checks = await asyncio.gather(*[self._ready_one("ModelDeployment", n) for n in self.models],
                                      *[self._ready_one("Pipeline", n) for n in self.pipelines])
        ready = all(c["ready"] for c in checks)
        return JSONResponse({"ready": ready, "resources": list(checks)}, 200 if ready else 503)

    # ------------------------------------------------------------ OpenAI surface

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        auth = request.headers.get("authorization")
        data: list[dict[str, Any]] = []
        for name in self.models:
            try:
                data += (await self._model(name).models.remote())["data"]
            except Exception as exc:  # list it anyway, so a client sees what exists
                data.append({"id": name, "object": "model", "owned_by": "raylight", "ready": False,
                             "error": str(exc)})
        for name in self.pipelines:
            try:
                data += (await self._agent(name).models.remote(auth))["data"]
            except Exception:
                data.append({"id": name, "object": "model", "owned_by": "raylight", "kind": "pipeline"})
        return JSONResponse({"object": "list", "data": data})

    async def _model_call(self, method: str, request: Request) -> Response:
        _, body = await self._json(request)
        model = body.get("model") if isinstance(body, dict) else None
        if model not in self.models:
            return self._unknown(model, f"{method} are served by ModelDeployments")
        try:
            return JSONResponse(await getattr(self._model(model), method).remote(body))
        except Exception as exc:
            return error_response(exc)

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        return await self._model_call("embeddings", request)

    @api.post("/v1/rerank")
    async def rerank(self, request: Request) -> Response:
        return await self._model_call("rerank", request)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        raw, body = await self._json(request)
        if not isinstance(body, dict):
            return openai_error(400, "The request body must be a JSON object.", code="invalid_json")
        model, stream = body.get("model"), body.get("stream") is True
        auth = request.headers.get("authorization")
        try:
            if model in self.models:
                handle = self._model(model)
                if stream:
                    return await sse_response(handle.options(stream=True).chat_completions_stream.remote(body))
                return JSONResponse(await handle.chat_completions.remote(body))
            if model in self.pipelines:
                agent = self._agent(model)
                if stream:
                    return await sse_response(
                        agent.options(stream=True).chat_completions_stream.remote(raw, auth))
                return JSONResponse(await agent.chat_completions.remote(raw, auth))
        except Exception as exc:
            return error_response(exc)
        return self._unknown(model, "a ModelDeployment or a Pipeline")

    # ------------------------------------------------------------ agent routes

    def _pipeline(self, name: str) -> DeploymentHandle | JSONResponse:
        if name not in self.pipelines:
            known = ", ".join(sorted(self.pipelines)) or "none"
            return openai_error(404, f"No pipeline named '{name}'; running: {known}.", code="not_found")
        return self._agent(name)

    async def _agent_call(self, name: str, method: str, request: Request) -> Response:
        agent = self._pipeline(name)
        if isinstance(agent, JSONResponse):
            return agent
        try:
            call = getattr(agent, method)
            return JSONResponse(await call.remote(await request.body(), request.headers.get("authorization")))
        except Exception as exc:
            return error_response(exc)

    @api.post("/v1/pipelines/{name}/invoke")
    async def invoke(self, name: str, request: Request) -> Response:
        return await self._agent_call(name, "invoke", request)

    @api.post("/v1/pipelines/{name}/search")
    async def search(self, name: str, request: Request) -> Response:
        return await self._agent_call(name, "search", request)

    @api.post("/v1/pipelines/{name}/stream")
    async def stream(self, name: str, request: Request) -> Response:
        agent = self._pipeline(name)
        if isinstance(agent, JSONResponse):
            return agent
        raw = await request.body()
        return await sse_response(
            agent.options(stream=True).stream.remote(raw, request.headers.get("authorization")))

    @api.get("/v1/pipelines/{name}/threads/{thread_id}")
    async def thread(self, name: str, thread_id: str, request: Request, user: str | None = None) -> Response:
        agent = self._pipeline(name)
        if isinstance(agent, JSONResponse):
            return agent
        try:
            return JSONResponse(await agent.thread.remote(thread_id, user, request.headers.get("authorization")))
        except Exception as exc:
            return error_response(exc)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (import path `raylight.local.gateway:build_app`)."""
    return Gateway.bind(dict(args.get("models", {})), list(args.get("pipelines", [])))  # type: ignore[attr-defined]
