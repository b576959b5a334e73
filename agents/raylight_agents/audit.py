"""One structured JSON line per agent call on the `raylight.audit` logger.

Fields: pipeline, operation, user, tenant, thread, status, retrieved chunk ids, cited ids, model, latency,
token counts, trace_id (the request's OpenTelemetry trace, None when no trace is recorded or propagated).
The question text is written only when the manifest sets agent.logQuestions.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from raylight_pipelines import telemetry

audit_log = logging.getLogger("raylight.audit")


def record(pipeline: str, operation: str, *, started: float, status: int, model: str | None,
           user: str | None = None, tenant: str | None = None, thread_id: str | None = None,
           retrieved: list[str] | None = None, cited: list[str] | None = None,
           usage: dict[str, int] | None = None, question: str | None = None, log_questions: bool = False,
           error: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "pipeline": pipeline,
        "operation": operation,
        "user": user,
        "tenant": tenant,
        "thread_id": thread_id,
        "status": status,
        "model": model,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "retrieved": retrieved or [],
        "cited": cited or [],
        "tokens": usage or {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0},
        "trace_id": telemetry.trace_id(),
    }
    if error:
        entry["error"] = error
    if log_questions and question is not None:
        entry["question"] = question
    audit_log.info(json.dumps(entry, sort_keys=True))
    return entry


def configure() -> None:
    """Make sure audit lines reach stderr (the replica's log) even when nothing configured logging."""
    audit_log.setLevel(logging.INFO)
    if not audit_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit_log.addHandler(handler)
        audit_log.propagate = False
