"""OpenAI wire format: request models, the error shape and server-sent-event framing (no Ray, no models).

Requests are validated here so every runtime sees the same checked values, and every refusal carries the
OpenAI error body `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class ApiError(Exception):
    """A refusal with an HTTP status and the OpenAI error body.

    Raised by the deployment's plain methods too: through a DeploymentHandle Ray re-raises it as a class
    that is still an `ApiError`, so a gateway can `except ApiError as e: return e.status, e.body()`.
    """

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(status, message, type, param, code)  # args kept so the error pickles
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def validation_error(exc: ValidationError) -> ApiError:
    """The first pydantic problem as an OpenAI 400 naming the offending parameter."""
    first = exc.errors()[0]
    # pydantic adds union members to the location ("input.list[str]"): keep only the request's own path.
    param = ".".join(str(p) for p in first["loc"] if isinstance(p, int) or (p.isidentifier()
                     and p not in _TYPE_TAGS)) or None
    text = first["msg"].removeprefix("Value error, ")
    message = f"{param}: {text}" if param else text
    return ApiError(400, message, param=param, code="invalid_value")


def unknown_model(requested: str, served: str) -> ApiError:
    return ApiError(404, f"The model '{requested}' does not exist; this endpoint serves '{served}'.",
                    param="model", code="model_not_found")


class _Request(BaseModel):
    # OpenAI clients send fields we do not act on (user, metadata, ...): ignore those, refuse the ones
    # that would change the answer (checked explicitly below).
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)


class EmbeddingsRequest(_Request):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not isinstance(value[0], str):
            raise ValueError("token-id input is not supported; send a string or a list of strings")
        return value

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("must not be an empty list")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str


class RerankRequest(_Request):
    """`POST /v1/rerank` in the shape Cohere, Jina and TEI clients send: a query, the documents to score
    (strings, or objects with a `text`), and how many of the best to return."""

    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=1000)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def rerank_response(model: str, texts: list[str], scores: list[float], top_n: int | None,
                    return_documents: bool, tokens: int) -> dict[str, Any]:
    """Results best first: {"index" (into the request's documents), "relevance_score", "document"?}."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    return {"id": f"rerank-{uuid.uuid4().hex[:24]}", "object": "list", "model": model, "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with a schema")
        return self

    def enforced_schema(self) -> dict[str, Any] | None:
        """The JSON schema to enforce; {} for json_object (any JSON object); None for plain text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "object"}
        assert self.json_schema is not None
        return self.json_schema.schema_ or {"type": "object"}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    n: int = 1
    tools: list[Any] | None = None
    logprobs: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("response_format")
    @classmethod
    def _whole_json(cls, value: ResponseFormat | None, info: ValidationInfo) -> ResponseFormat | None:
        # A JSON answer ends when its document is complete (or at max_tokens, finish_reason "length"); a
        # stop sequence could cut it anywhere and leave broken JSON that says finish_reason "stop".
        if value is not None and value.type != "text" and info.data.get("stop"):
            raise ValueError("a JSON response_format cannot be combined with stop sequences (they could cut "
                             "the JSON document short)")
        return value

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.n != 1:
            raise ValueError("n must be 1 (one choice per request)")
        if self.tools:
            raise ValueError("tools are not supported by this runtime")
        if self.logprobs:
            raise ValueError("logprobs are not supported by this runtime")
        return self

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def json_schema(self) -> dict[str, Any] | None:
        return self.response_format.enforced_schema() if self.response_format else None

    def plain_messages(self) -> list[dict[str, str]]:
        # Chat templates know system/user/assistant; OpenAI's newer "developer" role means system.
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]


def parse(model: type[_Request], body: Any, served: str) -> Any:
    """Validate a request body (a dict) and check it names the served model; raises ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if request.model != served:
        raise unknown_model(request.model, served)
    return request


# ---------------------------------------------------------------- responses


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_completion(cid: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
               usage_: dict[str, int] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        if usage_ is None else [],
    }
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: `data: <json>` and a blank line (the framing OpenAI streams use)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")


def sse_error(error: ApiError) -> str:
    return sse(error.body())
