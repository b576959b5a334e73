"""The OpenAI error shape every route answers with: `{"error": {"message", "type", "param", "code"}}`.

`ApiError` carries the HTTP status (and `Retry-After`); `validation_error` turns pydantic's problems into one
400 that names every offending field, so the same fault gets the same answer on every app.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

# What a Ray (or driver) error text may carry about the cluster's insides: actor, worker, node and job ids
# (hex, 16+ digits), process ids and addresses. A 5xx says what failed, never these.
_INTERNAL_IDS = re.compile(r"\b(?:actor_id|worker_id|node_id|job_id|pid|ip|node_ip|address)[=:]\s*\S+?(?=[,)\s]|$)"
                           r"|\b(?:Actor|Worker|Node|Job)ID\([0-9a-f]+\)|\b[0-9a-f]{16,}\b", re.IGNORECASE)


def internal_ids_removed(text: str) -> str:
    """`text` without Ray actor/worker/node/job ids, pids and addresses (each replaced by `<internal>`)."""
    return _INTERNAL_IDS.sub("<internal>", text)


class ApiError(Exception):
    """A refusal with an HTTP status and the OpenAI error body.

    Raised by the deployment's plain methods too: through a DeploymentHandle Ray re-raises it as a class
    that is still an `ApiError`, so a gateway can `except ApiError as e: return e.status, e.body()`.
    """

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None) -> None:
        if status >= 500:  # the server's own failures: their reasons may quote Ray's (actor ids, pids, addresses)
            message = internal_ids_removed(message)
        super().__init__(status, message, type, param, code, retry_after)  # args kept so the error pickles
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after  # seconds: sent as the `Retry-After` header (429, 503 model_waking)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# How long a caller refused with `model_waking` is told to wait (Retry-After): the replica its request asked for
# keeps starting after the refusal, so a retry within the cold start usually finds it serving.
WAKING_RETRY_AFTER_MAX_S = 30


def waking(what: str, waited_s: float, deadline_s: float) -> ApiError:
    """503 `model_waking`: `what` ("model smollm", "pipeline docs") was scaled to zero (replicas.min 0) and no
    replica took the request within its `replicas.wakeTimeoutSeconds` (`deadline_s`); Retry-After says when to
    try again (the deadline, at most WAKING_RETRY_AFTER_MAX_S)."""
    return ApiError(503, f"{what} was scaled to zero and is still starting after {waited_s:.0f} s "
                    f"(replicas.wakeTimeoutSeconds: {deadline_s:g}); retry shortly", type="service_unavailable",
                    code="model_waking", retry_after=max(1, min(WAKING_RETRY_AFTER_MAX_S, round(deadline_s))))


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
_NAMED_PARAM = re.compile(r"^([a-z_][a-z_0-9]*): (.+)$", re.DOTALL)


def _field(loc: Any) -> str:
    # pydantic adds union members to the location ("input.list[str]", "user.UserIn.id"): keep only the
    # request's own path. Class names (union members like NamedToolChoice) are left out the same way.
    return ".".join(str(p) for p in loc if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS
                                                                  and not p[0].isupper()))


def validation_error(exc: ValidationError | Sequence[Any]) -> ApiError:
    """pydantic's (or FastAPI's) problems as one OpenAI 400 naming every offending field; `param` is the first.

    The same fault gets the same status and code on every route, whichever app refused it.
    """
    fields: dict[str, str] = {}
    mismatched: set[str] = set()  # fields whose message so far is a union member's type mismatch
    for problem in exc.errors() if isinstance(exc, ValidationError) else exc:
        field, text = _field(problem["loc"]), str(problem["msg"]).removeprefix("Value error, ")
        named = _NAMED_PARAM.match(text)
        if named:  # a check across fields says which one it is about: "tool_choice: ...", "content: ..."
            field, text = (f"{field}.{named[1]}" if field else named[1]), named[2]
        is_mismatch = str(problem.get("type", "")).endswith("_type")
        if field not in fields or (field in mismatched and not is_mismatch):
            # of a union's problems, the one about the member the value has the type of says most
            fields[field] = text
            mismatched.discard(field)
            if is_mismatch:
                mismatched.add(field)
    message = "; ".join(f"{f}: {text}" if f else text for f, text in fields.items()) or "invalid request"
    return ApiError(400, message, param=next(iter(fields), None) or None, code="invalid_value")
