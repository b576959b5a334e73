"""The agent's refusals, all `raylight_pipelines.web.errors.ApiError` (one OpenAI-shaped error for every
route: `{"error": {"message", "type", "param", "code"}}`, so the OpenAI SDK shows the message).

Through a DeploymentHandle Ray re-raises an `ApiError` as a class that is still an `ApiError`, so a gateway
can `except ApiError as e: return JSONResponse(e.body(), e.status)`.
"""

from __future__ import annotations

import logging
import re
import uuid

from raylight_pipelines.retrieval.retriever import StoreUnavailable
from raylight_pipelines.web.errors import ApiError

__all__ = ["ApiError", "StoreUnavailable"]


log = logging.getLogger("ray.serve")

# What an answer never carries: Ray's actor, task, node and job ids (hex, 16+ digits), addresses and pids.
_INTERNAL = re.compile(r"\b[0-9a-fA-F]{16,}\b|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\[[0-9a-fA-F:]+\](?::\d+)?"
                       r"|\b(?:pid|ip|node_id|actor_id|worker_id|job_id)\s*[=:]\s*\S+")


def redact(text: str) -> str:
    """text without internal identifiers (Ray ids, IP addresses, pids), each replaced by `<redacted>`."""
    return _INTERNAL.sub("<redacted>", text)


def unavailable(component: str, reason: str) -> ApiError:
    """503 `<component>_unavailable` with the reason, internal identifiers redacted."""
    return ApiError(503, redact(reason), type="service_unavailable", code=f"{component}_unavailable")


def outage(component: str, what: str, cause: BaseException | str, note: str = "") -> ApiError:
    """503 `<component>_unavailable` that names what is down and an error id; the cause (which may carry
    actor ids, addresses, DSNs) goes to the log under that id, never to the caller."""
    ident = uuid.uuid4().hex[:12]
    log.warning("%s unavailable (error id %s): %s", component, ident, cause,
                exc_info=cause if isinstance(cause, BaseException) else None)
    return ApiError(503, f"{what} is not available right now{note}; retry shortly (error id {ident}; the server "
                    "log has the details)", type="service_unavailable", code=f"{component}_unavailable")


def unauthorized() -> ApiError:
    return ApiError(401, "missing or wrong bearer token", type="authentication_error", code="unauthorized")


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"the agent did not finish within {seconds:g} seconds", type="timeout",
                    code="timeout")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", code="not_found")
