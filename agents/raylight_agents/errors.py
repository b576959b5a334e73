"""The agent's refusals, all `raylight_pipelines.web.errors.ApiError` (one OpenAI-shaped error for every
route: `{"error": {"message", "type", "param", "code"}}`, so the OpenAI SDK shows the message).

Through a DeploymentHandle Ray re-raises an `ApiError` as a class that is still an `ApiError`, so a gateway
can `except ApiError as e: return JSONResponse(e.body(), e.status)`.
"""

from __future__ import annotations

from raylight_pipelines.retrieval.retriever import StoreUnavailable
from raylight_pipelines.web.errors import ApiError

__all__ = ["ApiError", "StoreUnavailable"]


def unavailable(component: str, reason: str) -> ApiError:
    return ApiError(503, reason, type="service_unavailable", code=f"{component}_unavailable")


def unauthorized() -> ApiError:
    return ApiError(401, "missing or wrong bearer token", type="authentication_error", code="unauthorized")


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"the agent did not finish within {seconds:g} seconds", type="timeout",
                    code="timeout")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", code="not_found")
