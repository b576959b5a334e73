"""The single-port gateway of `raylight up`: one Serve application at "/" in front of every model and agent.

It holds DeploymentHandles to each ModelDeployment's `ModelServer` and each Pipeline's `AgentServer` (those
applications have no HTTP route of their own) and routes:

  POST /v1/embeddings, /v1/rerank,
       /v1/completions (models only),
       /v1/chat/completions                   by the body's `model`: a ModelDeployment's name -> that
                                              model; one of its LoRA adapters' names -> that model with the
                                              adapter; a Pipeline's name (chat only) -> that pipeline's agent
  GET  /v1/models                             every model and adapter (its own entry, `parent` its base), and
                                              every pipeline the caller may see (one with `agent.auth` only
                                              with its token)
  GET  /v1/models/{id}                        one of those entries; 404 model_not_found otherwise
  *    /v1/pipelines/{name}/...               invoke, search, stream, threads/{id} of that pipeline's agent
  POST /v1/responses                          the OpenAI Responses API, by the body's `model` (a chat
                                              ModelDeployment or a Pipeline); GET/DELETE /v1/responses/{id}
                                              asks each app in turn (the one that stored it answers)
  POST /v1/pipelines/{name}/mcp               that pipeline's MCP server (raylight_agents.mcp_server): the
                                              request's method, headers and body are relayed as they came
  GET  /healthz                               the gateway answers (names nothing)
  (scale to zero)                             a request for a model or pipeline with replicas.min 0 that has no
                                              replica is held (Serve queues it, and its autoscaler starts one)
                                              until a replica takes it; past the app's replicas.wakeTimeoutSeconds
                                              it is cancelled and answered 503 `model_waking` with Retry-After.
                                              /readyz counts such an app ready; /metrics and /v1/models do not
                                              ask it while it sleeps (a scrape or a listing would wake it, or
                                              keep its last replica from going idle): it is listed with
                                              "scaled_to_zero": true
  GET  /metrics                               every app's metrics (Prometheus text, `raylight_*`), merged: one
                                              scrape for the whole platform (Ray's own `ray_*` metrics are on
                                              Ray's metrics export port); a protected pipeline's series only
                                              with its credentials
  GET  /readyz                                200 when every model and agent can serve, else 503 with why;
                                              a model is ready while Serve runs a replica of it (however busy),
                                              an agent when its own readyz says so (or it is too busy to
                                              answer while Serve runs it); a protected pipeline is named only
                                              to a caller with its token. It answers within a second whatever
                                              is down or restarting (READY_BUDGET_S: the controller's view is
                                              read off the event loop and kept, an agent gets
                                              AGENT_READY_TIMEOUT_S), saying what it could not ask

Refusals keep the status and body of the component that refused (an `ApiError`), so clients see the same
errors as on a cluster; the gateway's own refusals (an unknown or non-string `model`) use the same shape.
The gateway sits behind `raylight_pipelines.web.guard` like every app: bodies over `max_request_bytes`
(the largest any backend accepts), invalid JSON or Unicode, deep nesting, oversize headers, slow bodies get a
4xx. A backend that is down answers 503 with the reason; any other failure a 500 with an error id, never a trace.
"""

# No `from __future__ import annotations` here: Serve's class-based FastAPI views resolve the route
# parameters' annotations (Request) at run time, and string annotations turn them into query parameters.
import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from ray.serve.schema import DeploymentStatus, ReplicaState
from raylight_pipelines import telemetry
from raylight_pipelines.web import guard, openapi, responses, responses_api, server
from raylight_pipelines.web import models as model_names
from raylight_pipelines.web.errors import ApiError, waking
from raylight_pipelines.web.protocol import MODEL_MAX_REQUEST_BYTES

from raylight.api.names import (
    AGENT_DEPLOYMENT,
    GATEWAY_DEPLOYMENT,
    MODEL_DEPLOYMENT,
    PIPELINE_MCP_PATH,
)
from raylight.api.serve import GatewayArgs, gateway_deployment_options

log = logging.getLogger("ray.serve")

READY_TIMEOUT_S = 5.0  # /metrics: how long one app's metrics may take
# /readyz answers within a second while replicas, or Serve's controller, restart (ray.serve.status() blocks
# until a restarted controller answers: 75 s once under memory pressure). The controller's view is read in a
# thread, one read at a time, and kept: a read that takes longer than CONTROLLER_TIMEOUT_S answers with the
# last view when it is younger than STATUS_MAX_AGE_S, else "not ready: the controller does not answer".
CONTROLLER_TIMEOUT_S = 0.4
STATUS_MAX_AGE_S = 10.0
AGENT_READY_TIMEOUT_S = 0.4  # an agent's own readyz; a running agent that does not answer in time is "busy"
READY_BUDGET_S = CONTROLLER_TIMEOUT_S + AGENT_READY_TIMEOUT_S  # the most one /readyz waits

api = server.app("raylight gateway")  # a caller's traceparent goes on to the model

# A backend that is not there right now (restarting, overloaded, not deployed yet): 503, the client may retry.
_OUTAGES = (RayActorError, ActorDiedError, ActorUnavailableError, BackPressureError, DeploymentUnavailableError)


def backend_error(backend: str, exc: BaseException) -> ApiError:
    """A refusal from a model or agent keeps its status and body; an outage is a 503 with the reason;
    anything else a 500 whose trace goes to the log only."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, _OUTAGES):
        return ApiError(503, f"{backend} is not available right now ({type(exc).__name__}); retry shortly",
                        type="service_unavailable", code="backend_unavailable")
    return guard.internal_error(f"gateway -> {backend}", exc)


async def held(backend: str, call: DeploymentResponse[Any] | DeploymentResponseGenerator[Any],
               deadline_s: float | None) -> None:
    """Wait until a replica has taken `call` (Serve holds a call while the deployment has no replica: it was
    scaled to zero, and the autoscaler is starting one); past `deadline_s` (the app's
    replicas.wakeTimeoutSeconds) cancel it and raise 503 `model_waking` with Retry-After. No deadline: return
    at once. Only the wait for a replica is bounded, never the answer itself. The call's own failure comes out
    of awaiting it, not here."""
    if deadline_s is None:
        return
    started = time.monotonic()
    # The router resolves this future when it assigns the call to a replica (Ray 2.60, pinned in
    # constraints.txt: DeploymentResponse has no public "assigned" signal); awaiting the call later reuses it.
    assigned = asyncio.ensure_future(call._fetch_future_result_async())
    try:
        await asyncio.wait_for(asyncio.shield(assigned), deadline_s)
    except TimeoutError:
        call.cancel()
        assigned.cancel()
        raise waking(backend, time.monotonic() - started, deadline_s) from None
    except BaseException:
        return


async def relay(backend: str, gen: DeploymentResponse[Any] | DeploymentResponseGenerator[Any],
                error_event: Callable[[ApiError], str] = responses.sse_error) -> Response:
    """Relay a streaming handle call (`handle.options(stream=True)....remote()`) as server-sent events; errors
    before the first line keep their status; a client that goes away cancels the backend's call."""
    assert isinstance(gen, DeploymentResponseGenerator)

    async def lines() -> AsyncGenerator[str]:
        try:
            async for line in gen:
                yield line
        finally:
            gen.cancel()  # a no-op once the call has finished

    try:
        return await guard.sse_response(lines(), error_event)
    except Exception as exc:
        raise backend_error(backend, exc) from exc


@serve.deployment(name=GATEWAY_DEPLOYMENT, max_ongoing_requests=256)
@serve.ingress(api)
class Gateway(server.Edge):
    span_prefix = "gateway"

    def __init__(self, models: dict[str, str], pipelines: list[str], protected: list[str],
                 max_request_bytes: int, adapters: dict[str, list[str]] | None = None,
                 wake: dict[str, int] | None = None, apps: dict[str, str] | None = None) -> None:
        self.models = dict(models)  # name -> task (chat | embed | rerank)
        self.wake = dict(wake or {})  # app (model or pipeline) with replicas.min 0 -> its wakeTimeoutSeconds
        self.apps = dict(apps or {})  # model or pipeline -> its Serve application where not its own name
        self.adapters = model_names.adapter_routes(adapters or {})  # adapter name -> the model that serves it
        self.pipelines = list(pipelines)
        self.public = [p for p in pipelines if p not in protected]  # what refusals may name
        self.max_request_bytes = max(max_request_bytes, MODEL_MAX_REQUEST_BYTES)
        self._cards: dict[str, list[dict[str, Any]]] = {}  # a model's /v1/models entry does not change
        self._status: Any = None  # the last ray.serve.status() read (see _serve_status)
        self._status_at = 0.0
        self.status_max_age_s = STATUS_MAX_AGE_S
        self._status_read: asyncio.Future[Any] | None = None

    def _serve_app(self, name: str) -> str:
        """The Serve application of a model or pipeline (its own name unless `apps` says otherwise)."""
        return self.apps.get(name, name)

    def _model(self, name: str) -> DeploymentHandle:
        return serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=self._serve_app(name))

    def _agent(self, name: str) -> DeploymentHandle:
        return serve.get_deployment_handle(AGENT_DEPLOYMENT, app_name=self._serve_app(name))

    async def _call(self, app: str, backend: str,
                    call: DeploymentResponse[Any] | DeploymentResponseGenerator[Any]) -> Any:
        """Await a handle call to `app`, held at most the app's wake deadline while it has no replica."""
        await held(backend, call, self.wake.get(app))
        return await call

    def _served_by(self, model: str) -> str | None:
        """The model app that serves `model`: itself, or the base of the adapter it names; None otherwise."""
        return model if model in self.models else self.adapters.get(model)

    def _unknown(self, model: str, kinds: str) -> ApiError:
        known = ", ".join(sorted([*self.models, *self.adapters, *self.public])) or "none"
        return ApiError(404, f"The model '{model}' does not exist here ({kinds}); available: {known}.",
                        code="model_not_found", param="model")

    async def _body(self, request: Request) -> tuple[bytes, dict[str, Any], str]:
        """The raw body (what the backend checks again against its own limit), its JSON and its `model`."""
        raw = await self.read(request)
        body = self.load(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model: must be a string naming a ModelDeployment or a Pipeline",
                           param="model", code="invalid_value")
        return raw, body, model

    # ------------------------------------------------------------ health

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def _hidden(self, auth: str | None) -> set[str]:
        """The protected pipelines this caller's credentials do not open (each agent checks its own)."""
        async def opens(name: str) -> bool:
            try:
                await asyncio.wait_for(self._agent(name).models.remote(auth), READY_TIMEOUT_S)
            except Exception:
                return False
            return True
        asleep = await self._asleep()  # not asked: asking would wake them
        protected = [p for p in self.pipelines if p not in self.public and p not in asleep]
        opened = await asyncio.gather(*[opens(p) for p in protected]) if auth else [False] * len(protected)
        return {p for p, ok in zip(protected, opened, strict=True) if not ok} | {
            p for p in asleep if p in self.pipelines and p not in self.public}

    @api.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        """The metrics of every model and agent app (one replica each on one machine), merged; a protected
        pipeline's series only for a caller with its credentials (each replica's own metrics port has all)."""
        asleep = await self._asleep()
        handles = [self._model(n) for n in self.models if n not in asleep]
        handles += [self._agent(n) for n in self.pipelines if n not in asleep]
        answers = await asyncio.gather(*[asyncio.wait_for(h.metrics.remote(), READY_TIMEOUT_S) for h in handles],
                                       return_exceptions=True)
        texts = [telemetry.exposition()] + [a for a in answers if isinstance(a, str)]
        hidden = await self._hidden(request.headers.get("authorization"))
        return Response(telemetry.merge(texts, hide={"pipeline": hidden}),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _asleep(self) -> set[str]:
        """The apps with replicas.min 0 that run no replica now (all of them when Serve's status is unknown):
        what a scrape must not ask, or it would wake them."""
        if not self.wake:
            return set()
        status, _ = await self._serve_status()
        if status is None:
            return set(self.wake)
        return {app for app in self.wake
                if not self._replicas(status, app, MODEL_DEPLOYMENT if app in self.models else AGENT_DEPLOYMENT)[0]}

    def _scaled_to_zero(self, status: Any, app: str, deployment: str) -> str | None:
        """Why an app with replicas.min 0 and no replica counts as ready (a request wakes it), or None."""
        if app not in self.wake:
            return None
        app_status = status.applications.get(self._serve_app(app))
        dep = app_status.deployments.get(deployment) if app_status is not None else None
        if dep is None or dep.status not in (DeploymentStatus.HEALTHY, DeploymentStatus.UPSCALING,
                                             DeploymentStatus.DOWNSCALING):  # its last replica stopping
            return None
        if dep.status == DeploymentStatus.UPSCALING:
            return "waking: a request is held while its first replica starts"
        return "scaled to zero (replicas.min 0): the first request wakes it and is held until it serves"

    async def _serve_status(self) -> tuple[Any, str | None]:
        """Serve's status (ray.serve.status()) within CONTROLLER_TIMEOUT_S: a fresh one, or the last one
        while it is younger than `status_max_age_s` (STATUS_MAX_AGE_S); (None, why) when there is none to go by.
        One read runs at a time, in a thread: a controller that hangs never blocks the event loop nor piles up
        threads."""
        if self._status_read is None or self._status_read.done():
            self._status_read = asyncio.ensure_future(asyncio.to_thread(serve.status))
        try:
            self._status = await asyncio.wait_for(asyncio.shield(self._status_read), CONTROLLER_TIMEOUT_S)
            self._status_at = time.monotonic()
            return self._status, None
        except TimeoutError:
            why = f"Serve's controller did not answer within {CONTROLLER_TIMEOUT_S:g} s (restarting?)"
        except Exception as exc:
            why = f"Serve's controller cannot be asked: {type(exc).__name__}"
        age = time.monotonic() - self._status_at
        if self._status is not None and age <= self.status_max_age_s:
            return self._status, None
        return None, why

    def _replicas(self, status: Any, app: str, deployment: str) -> tuple[bool, str]:
        """Whether Serve runs a replica of the model's or pipeline's deployment in `status` (the controller's view:
        never waits on a busy replica)."""
        app_status = status.applications.get(self._serve_app(app))
        if app_status is None:
            return False, "not deployed"
        dep = app_status.deployments.get(deployment)
        running = dep.replica_states.get(ReplicaState.RUNNING, 0) if dep is not None else 0
        if running:
            return True, f"{running} replica(s) running"
        state = dep.status if dep is not None else app_status.status
        return False, f"no replica running ({state}): {(dep.message if dep is not None else app_status.message) or ''}"

    async def _ready_model(self, status: Any, name: str) -> dict[str, Any]:
        ok, detail = self._replicas(status, name, MODEL_DEPLOYMENT)
        if not ok and (asleep := self._scaled_to_zero(status, name, MODEL_DEPLOYMENT)):
            ok, detail = True, asleep
        return {"kind": "ModelDeployment", "name": name, "ready": ok, "detail": detail}

    async def _ready_pipeline(self, status: Any, name: str, auth: str | None) -> dict[str, Any]:
        ok, detail = self._replicas(status, name, AGENT_DEPLOYMENT)
        report: dict[str, Any] = {"kind": "Pipeline", "name": name, "ready": ok, "detail": detail}
        if not ok and (asleep := self._scaled_to_zero(status, name, AGENT_DEPLOYMENT)):
            report.update(ready=True, detail=asleep)  # not asked: its readyz would wake it
            if name not in self.public:
                report["name"] = None
        elif ok:
            try:
                agent = await asyncio.wait_for(self._agent(name).readyz.remote(auth), AGENT_READY_TIMEOUT_S)
            except TimeoutError:
                report["detail"] = f"busy: running, no readiness answer within {AGENT_READY_TIMEOUT_S:g} s"
            except Exception as exc:
                report.update(ready=False, detail=f"the agent does not answer: {type(exc).__name__}")
            else:
                visible = agent.pop("visible", False)
                report.update(ready=bool(agent.pop("ready")), detail=agent)
                if not visible:
                    report.update(name=None, detail={"ready": report["ready"]})
        elif name not in self.public:
            report["name"] = None
        return report

    @api.get("/readyz")
    async def readyz(self, request: Request) -> Response:
        auth = request.headers.get("authorization")
        status, why = await self._serve_status()
        if status is None:  # nothing to go by: every resource is not ready, for that reason
            checks = [{"kind": "ModelDeployment", "name": n, "ready": False, "detail": why} for n in self.models]
            checks += [{"kind": "Pipeline", "name": n if n in self.public else None, "ready": False, "detail": why}
                       for n in self.pipelines]
        else:
            checks = await asyncio.gather(*[self._ready_model(status, n) for n in self.models],
                                          *[self._ready_pipeline(status, n, auth) for n in self.pipelines])
        ready = all(c["ready"] for c in checks)
        resources = [c for c in checks if c["name"] is not None]
        hidden = [c for c in checks if c["name"] is None]
        body: dict[str, Any] = {"ready": ready, "resources": resources}
        if hidden:  # protected pipelines count, but stay anonymous without their token
            body["protected"] = {"count": len(hidden), "ready": all(c["ready"] for c in hidden)}
        return JSONResponse(body, 200 if ready else 503)

    # ------------------------------------------------------------ OpenAI surface

    async def _card(self, name: str) -> list[dict[str, Any]]:
        if name not in self._cards:
            self._cards[name] = (await self._call(name, f"model {name}", self._model(name).models.remote()))["data"]
        return self._cards[name]

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        auth = request.headers.get("authorization")
        data: list[dict[str, Any]] = []
        asleep = await self._asleep()  # listed without asking: a list must not wake them
        for name in self.models:
            if name in asleep and name not in self._cards:
                data.append({"id": name, "object": "model", "created": 0, "owned_by": "raylight",
                             "scaled_to_zero": True})
                continue
            try:
                data += await self._card(name)
            except Exception as exc:  # list it anyway, so a client sees what exists
                data.append({"id": name, "object": "model", "owned_by": "raylight", "ready": False,
                             "error": backend_error(f"model {name}", exc).message})
        for name in self.pipelines:
            if name in asleep:  # a protected one stays unlisted: its token cannot be checked without waking it
                if name in self.public:
                    data.append({"id": name, "object": "model", "created": 0, "owned_by": "raylight",
                                 "kind": "pipeline", "scaled_to_zero": True})
                continue
            try:
                data += (await self._agent(name).models.remote(auth))["data"]
            except ApiError:
                continue  # a protected pipeline, without its token: not listed
            except Exception as exc:
                if name in self.public:
                    data.append({"id": name, "object": "model", "owned_by": "raylight", "kind": "pipeline",
                                 "ready": False, "error": backend_error(f"pipeline {name}", exc).message})
        return JSONResponse({"object": "list", "data": data})

    @api.get("/v1/models/{model:path}")
    async def retrieve_model(self, model: str, request: Request) -> Response:
        """One entry of /v1/models: a model, an adapter (with its `parent`) or a pipeline the caller may see."""
        base = self._served_by(model)
        try:
            if base is not None:
                return JSONResponse(await self._call(base, f"model {model}", self._model(base).model.remote(model)))
            if model in self.pipelines:
                entries = (await self._agent(model).models.remote(request.headers.get("authorization")))["data"]
                return JSONResponse(model_names.find_entry(entries, model, model))
        except ApiError as exc:
            if exc.status in (401, 403) and model not in self.public:
                raise self._unknown(model, "a ModelDeployment, an adapter or a Pipeline") from None
            raise
        except Exception as exc:
            raise backend_error(f"model {model}", exc) from exc
        raise self._unknown(model, "a ModelDeployment, an adapter or a Pipeline")

    async def _model_call(self, method: str, request: Request) -> Response:
        raw, _, model = await self._body(request)
        base = self._served_by(model)
        if base is None:
            raise self._unknown(model, f"{method} are served by ModelDeployments")
        try:
            return JSONResponse(await self._call(base, f"model {model}", getattr(self._model(base), method).remote(
                raw, telemetry.inject() or None)))
        except Exception as exc:
            raise backend_error(f"model {model}", exc) from exc

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        return await self._model_call("embeddings", request)

    @api.post("/v1/rerank")
    async def rerank(self, request: Request) -> Response:
        return await self._model_call("rerank", request)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        """Legacy completions: models only (a Pipeline answers chat)."""
        raw, body, model = await self._body(request)
        base = self._served_by(model)
        if base is None:
            raise self._unknown(model, "legacy completions are served by chat ModelDeployments")
        handle, backend = self._model(base), f"model {base}"
        if body.get("stream") is True:
            gen = handle.options(stream=True).completions_stream.remote(raw, telemetry.inject() or None)
            await held(backend, gen, self.wake.get(base))
            return await relay(backend, gen)
        try:
            return JSONResponse(await self._call(base, backend, handle.completions.remote(
                raw, telemetry.inject() or None)))
        except Exception as exc:
            raise backend_error(backend, exc) from exc

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        raw, body, model = await self._body(request)
        stream = body.get("stream") is True
        auth = request.headers.get("authorization")
        args: tuple[Any, ...]
        if (base := self._served_by(model)) is not None:
            app, handle, backend, args = base, self._model(base), f"model {base}", (raw, telemetry.inject() or None)
        elif model in self.pipelines:
            app, handle, backend, args = model, self._agent(model), f"pipeline {model}", (raw, auth)
        else:
            raise self._unknown(model, "a ModelDeployment or a Pipeline")
        if stream:
            gen = handle.options(stream=True).chat_completions_stream.remote(*args)
            await held(backend, gen, self.wake.get(app))
            return await relay(backend, gen)
        try:
            return JSONResponse(await self._call(app, backend, handle.chat_completions.remote(*args)))
        except Exception as exc:
            raise backend_error(backend, exc) from exc

    # ------------------------------------------------------------ the Responses API

    @api.post("/v1/responses")
    async def create_response(self, request: Request) -> Response:
        raw, body, model = await self._body(request)
        auth = request.headers.get("authorization")
        args: tuple[Any, ...]
        if model in self.models and self.models[model] == "chat":
            handle, backend, args = self._model(model), f"model {model}", (raw, telemetry.inject() or None)
        elif model in self.pipelines:
            handle, backend, args = self._agent(model), f"pipeline {model}", (raw, auth)
        else:
            raise self._unknown(model, "a chat ModelDeployment or a Pipeline")
        if body.get("stream") is True:
            gen = handle.options(stream=True).responses_stream.remote(*args)
            await held(backend, gen, self.wake.get(model))
            return await relay(backend, gen, responses_api.sse_error_event)
        try:
            return JSONResponse(await self._call(model, backend, handle.responses_create.remote(*args)))
        except Exception as exc:
            raise backend_error(backend, exc) from exc

    async def _stored_response(self, method: str, response_id: str, request: Request,
                               user: str | None) -> Response:
        """GET/DELETE a stored response: the app that holds it answers (each chat model, then each pipeline the
        caller may call); none does -> 404."""
        auth = request.headers.get("authorization")
        backends: list[tuple[str, DeploymentHandle, tuple[Any, ...]]] = [
            (f"model {m}", self._model(m), (response_id,)) for m, task in self.models.items() if task == "chat"]
        backends += [(f"pipeline {p}", self._agent(p), (response_id, auth, user)) for p in self.pipelines]
        for backend, handle, args in backends:  # one at a time: a DELETE must not race itself
            try:
                return JSONResponse(await getattr(handle, method).remote(*args))
            except ApiError as exc:
                if exc.status == 400:
                    raise  # a malformed id: every app says the same
                if exc.status not in (401, 404):
                    raise backend_error(backend, exc) from exc
            except Exception as exc:
                raise backend_error(backend, exc) from exc
        raise ApiError(404, f"No response with id '{response_id}' found.", param="response_id", code="not_found")

    @api.get("/v1/responses/{response_id}")
    async def get_response(self, response_id: str, request: Request, user: str | None = None) -> Response:
        return await self._stored_response("responses_get", response_id, request, user)

    @api.delete("/v1/responses/{response_id}")
    async def delete_response(self, response_id: str, request: Request, user: str | None = None) -> Response:
        return await self._stored_response("responses_delete", response_id, request, user)

    # ------------------------------------------------------------ agent routes

    def _pipeline(self, name: str) -> DeploymentHandle:
        if name not in self.pipelines:
            known = ", ".join(sorted(self.public)) or "none"
            raise ApiError(404, f"No pipeline named '{name}'; running: {known}.", code="not_found")
        return self._agent(name)

    async def _agent_call(self, name: str, method: str, request: Request) -> Response:
        agent = self._pipeline(name)
        raw = await self.read(request)
        try:
            call = getattr(agent, method)
            return JSONResponse(await self._call(name, f"pipeline {name}", call.remote(
                raw, request.headers.get("authorization"))))
        except Exception as exc:
            raise backend_error(f"pipeline {name}", exc) from exc

    @api.post("/v1/pipelines/{name}/invoke")
    async def invoke(self, name: str, request: Request) -> Response:
        return await self._agent_call(name, "invoke", request)

    @api.post("/v1/pipelines/{name}/search")
    async def search(self, name: str, request: Request) -> Response:
        return await self._agent_call(name, "search", request)

    @api.post("/v1/pipelines/{name}/stream")
    async def stream(self, name: str, request: Request) -> Response:
        agent = self._pipeline(name)
        raw = await self.read(request)
        gen = agent.options(stream=True).stream.remote(raw, request.headers.get("authorization"))
        await held(f"pipeline {name}", gen, self.wake.get(name))
        return await relay(f"pipeline {name}", gen, responses.sse_error_event)

    @api.get("/v1/pipelines/{name}/threads/{thread_id}")
    async def thread(self, name: str, thread_id: str, request: Request, user: str | None = None) -> Response:
        agent = self._pipeline(name)
        try:
            return JSONResponse(await self._call(name, f"pipeline {name}", agent.thread.remote(
                thread_id, user, request.headers.get("authorization"))))
        except Exception as exc:
            raise backend_error(f"pipeline {name}", exc) from exc


    @api.api_route(PIPELINE_MCP_PATH, methods=["GET", "POST", "DELETE"])
    async def mcp(self, name: str, request: Request) -> Response:
        agent = self._pipeline(name)
        raw = await self.read(request) if request.method == "POST" else b""
        try:
            reply = await self._call(name, f"pipeline {name}", agent.mcp.remote(
                request.method, list(request.headers.items()), raw))
        except Exception as exc:
            raise backend_error(f"pipeline {name}", exc) from exc
        return Response(reply.body, reply.status, headers=dict(reply.headers))


def operations() -> dict[str, openapi.Operation]:
    """The gateway's routes for its /openapi.json: the model app's and the agent app's own operations (their
    request and response models), since it relays those apps' answers, and its own probes and metrics.
    Read when /openapi.json is first asked for (the agent app's models load then, not at start)."""
    from raylight_agents import openapi as agent_openapi
    from raylight_agents.serve import ChatIn, InvokeIn, SearchIn
    from raylight_pipelines.serving import app as model_app

    models = model_app.operations()
    agents = agent_openapi.operations({"invoke": InvokeIn, "search": SearchIn, "chat": ChatIn})
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        **{op: models[op] for op in ("embeddings", "rerank", "completions", "getModel", "createResponse",
                                      "getResponse", "deleteResponse")},
        **{op: agents[op] for op in ("invoke", "stream", "search", "getThread", "listModels", "healthz", "mcpGet",
                                      "mcpPost", "mcpDelete")},
        # a model's ChatCompletion, or a Pipeline's (the same with citations, thread_id, grounding)
        "chatCompletions": openapi.Operation("post", "/v1/chat/completions", responses.ChatCompletion, ChatIn,
                                             stream=openapi.DATA_SSE),
        "readyz": openapi.Operation("get", "/readyz", openapi.ANY_JSON, public=True, statuses={
            "503": ("a model or pipeline is not ready: its check says why", openapi.ANY_JSON)}),
        "metrics": openapi.Operation("get", "/metrics", text, public=True),
    }


ERRORS = {
    "400": "invalid JSON, Unicode, nesting or field (the message names each field and limit)",
    "401": "missing or wrong bearer token (a protected Pipeline)",
    "404": "no such model, pipeline, thread, response or route",
    "405": "wrong method (`Allow` says which)",
    "406": "an MCP call that does not accept JSON and event streams",
    "408": "the body did not arrive in time",
    "409": "another turn on this thread is running",
    "413": "the body, the tokens or the answer over a limit (docs/limits.md)",
    "429": "too many requests (this client in flight, or a Pipeline's quota)",
    "431": "the headers are too large",
    "502": "the model refused the agent's call",
    "503": "a model, pipeline or dependency is not available right now; the message says which",
    "504": "a run or a stream took longer than its limit",
}
openapi.describe(api, operations, ERRORS)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (import path `raylight.local.gateway:build_app`, args `GatewayArgs`); with
    `on_head` its replica runs on the head (`gateway_deployment_options`)."""
    a = GatewayArgs.model_validate(args)
    return Gateway.options(**gateway_deployment_options(a)).bind(  # type: ignore[attr-defined]
        a.models, a.pipelines, a.protected, a.max_request_bytes, a.adapters, a.wake, a.apps)
