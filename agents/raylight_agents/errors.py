"""Refusals with an HTTP status, shared by the FastAPI routes and the plain methods a gateway calls.

Body shape (OpenAI-style, so the OpenAI SDK shows the message):
`{"error": {"message", "type", "code", "param"}, "detail"?: [{"loc", "msg", "type"}]}`.
Through a DeploymentHandle Ray re-raises `AgentError` as a class that is still an `AgentError`, so a
gateway can `except AgentError as e: return JSONResponse(e.body(), e.status)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from raylight_pipelines.retrieval import StoreUnavailable
from raylight_pipelines.serving.protocol import ApiError

__all__ = ["AgentError", "StoreUnavailable"]


class AgentError(ApiError):
    """The serving layer's OpenAI-shaped error, plus per-field details for a 422."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, detail: Any = None) -> None:
        super().__init__(status, message, type, param, code)
        self.args = (status, message, type, param, code, detail)  # so the error pickles through Ray
        self.detail = detail

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.detail is not None:
            body["detail"] = self.detail
        return body


def invalid(exc: ValidationError) -> AgentError:
    """422 naming every bad field: `input: Field required`, ..."""
    detail = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    message = "; ".join(f"{'.'.join(d['loc']) or 'body'}: {d['msg']}" for d in detail)
    first = detail[0]["loc"] if detail else []
    return AgentError(422, message, code="invalid_request", param=".".join(first) or None, detail=detail)


def unavailable(component: str, reason: str) -> AgentError:
    return AgentError(503, reason, type="service_unavailable", code=f"{component}_unavailable")


def unauthorized() -> AgentError:
    return AgentError(401, "missing or wrong bearer token", type="authentication_error", code="unauthorized")


def too_large(limit: int) -> AgentError:
    return AgentError(413, f"request body larger than {limit} bytes", code="request_too_large")


def timed_out(seconds: float) -> AgentError:
    return AgentError(504, f"the agent did not finish within {seconds:g} seconds", type="timeout",
                      code="timeout")


def not_found(what: str) -> AgentError:
    return AgentError(404, f"{what} not found", code="not_found")
