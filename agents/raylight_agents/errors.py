"""Refusals with an HTTP status, shared by the FastAPI routes and the plain methods a gateway calls.

Body shape (OpenAI-style, so the OpenAI SDK shows the message):
`{"error": {"message", "type", "code", "param"}, "detail"?: [{"loc", "msg", "type"}]}`.
Through a DeploymentHandle Ray re-raises `AgentError` as a class that is still an `AgentError`, so a
gateway can `except AgentError as e: return JSONResponse(e.body(), e.status)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

try:  # the retriever's own outage error, when the retrieval package provides one
    from raylight_pipelines.retrieval import StoreUnavailable as _StoreUnavailable
except ImportError:  # pragma: no cover - older retrieval package
    class _StoreUnavailable(RuntimeError):  # type: ignore[no-redef]
        pass

StoreUnavailable = _StoreUnavailable


class AgentError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, detail: Any = None) -> None:
        super().__init__(status, message, type, code, param, detail)  # args kept so the error pickles
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status} {self.code or self.type}: {self.message}"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"message": self.message, "type": self.type, "code": self.code,
                                          "param": self.param}}
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
