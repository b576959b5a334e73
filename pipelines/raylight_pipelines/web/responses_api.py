"""The OpenAI Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`) on
top of an app's own chat completions: one translation for every app (a ModelDeployment's `ModelServer`, a
Pipeline's `AgentServer`).

`Responses(store, complete, stream, model)`:
- `create(body, owner)` -> the response object (dict); `create_stream(body, owner)` -> SSE strings with the typed
  events the OpenAI SDK reads (`response.created`, `response.in_progress`, `response.output_item.added`,
  `response.content_part.added`, `response.output_text.delta`/`.done`, `response.function_call_arguments.delta`/
  `.done`, `response.output_item.done`, `response.completed`; `error` when the run fails after the first event),
  each with its `sequence_number`.
- `get(id, owner)`, `delete(id, owner)`.

`complete(chat_body) -> chat.completion dict` and `stream(chat_body) -> SSE strings of chat.completion.chunk`
are the app's own chat methods (validation, auth, quotas, metrics and audit stay theirs). A chat result's
`citations` (a Pipeline's) become `file_citation` annotations on the output text, one per `[n]` marker.

Request fields: `model`, `input` (a string, or items: messages with `role` and text content, `function_call`,
`function_call_output`), `instructions`, `previous_response_id` (the stored conversation continues;
`instructions` do not carry over, as in OpenAI), `store` (default true), `tools` (type `function` only),
`tool_choice`, `parallel_tool_calls`, `text.format` (`text`, `json_object`, `json_schema`), `max_output_tokens`,
`temperature`, `top_p`, `stream`, `metadata`, `user`; `truncation` `disabled`, `include` empty, `reasoning`
null/empty and `service_tier` `auto`/`default` are accepted because they change nothing here. Anything else,
or a value these cannot honour, is a 400 naming the field (`input.2.content.0.type`, `tools.0.type`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raylight_pipelines.web import responses
from raylight_pipelines.web.errors import ApiError, validation_error
from raylight_pipelines.web.response_store import ResponseStore, StoreUnavailable

ChatComplete = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
ChatStream = Callable[[dict[str, Any]], AsyncIterator[str]]
RESPONSE_ID = re.compile(r"^resp_[A-Za-z0-9-]{1,64}$")


def new_id(prefix: str) -> str:
    """`<prefix>_<24 hex digits>`: OpenAI's Responses ids (`resp_`, `msg_`, `fc_`, `call_`)."""
    return responses.new_id(prefix, "_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None  # an earlier output sent back as input
    logprobs: list[Any] | None = None


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str
    id: str | None = None
    status: str | None = None


InputItem = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(union_mode="left_to_right")]


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedToolChoice(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> TextFormat:
        if self.type == "json_schema" and (self.schema_ is None or not self.name):
            raise ValueError("schema: a json_schema format needs `name` and `schema`")
        return self


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = Field(None, pattern=RESPONSE_ID.pattern)
    store: bool = True
    stream: bool = False
    tools: list[FunctionTool] = Field(default_factory=list, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = Field(None, max_length=256)
    truncation: Literal["disabled"] | None = None
    include: list[str] | None = Field(None, max_length=0)
    reasoning: dict[str, None] | None = None
    service_tier: Literal["auto", "default"] | None = None
    stream_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    top_logprobs: int | None = Field(None, ge=0, le=0)

    @model_validator(mode="after")
    def _input_not_empty(self) -> ResponsesRequest:
        if (isinstance(self.input, str) and not self.input.strip()) or (isinstance(self.input, list)
                                                                        and not self.input):
            raise ValueError("input: give a non-empty string or at least one item")
        return self


def parse(body: dict[str, Any]) -> ResponsesRequest:
    """The request, or one 400 naming every offending field."""
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def input_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """`input` as chat messages: consecutive function calls join one assistant message's `tool_calls`."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}]
    messages: list[dict[str, Any]] = []
    for item in request.input:
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


def output_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the chat messages the next turn continues from."""
    text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
    calls = [{"id": item["call_id"], "type": "function", "function": {"name": item["name"],
                                                                       "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def chat_body(request: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completions request that answers `request` over `messages` (the whole conversation)."""
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    body: dict[str, Any] = {"model": request.model, "messages": system + messages}
    if request.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, **({"description": t.description} if t.description else {}),
            "parameters": t.parameters or {"type": "object", "properties": {}},
            **({"strict": t.strict} if t.strict is not None else {})}} for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = (request.tool_choice if isinstance(request.tool_choice, str) else
                               {"type": "function", "function": {"name": request.tool_choice.name}})
    if request.parallel_tool_calls is not None and request.tools:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.text.format if request.text else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name, "schema": fmt.schema_, **({"strict": fmt.strict} if fmt.strict is not None else {}),
            **({"description": fmt.description} if fmt.description else {})}}
    for key, value in (("max_completion_tokens", request.max_output_tokens), ("temperature", request.temperature),
                       ("top_p", request.top_p), ("user", request.user)):
        if value is not None:
            body[key] = value
    return body


def citation_annotations(text: str, citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Pipeline's citations as `file_citation` annotations: one per `[ref]` marker in the text, at the
    marker's index (a citation whose marker is not in the text is placed at the end)."""
    out = []
    for citation in citations:
        marker = f"[{citation.get('ref')}]"
        at = text.find(marker)
        out.append({"type": "file_citation", "file_id": str(citation.get("id")),
                    "filename": str(citation.get("source")), "index": at if at >= 0 else len(text)})
    return out


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def message_item(item_id: str, text: str, notes: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": notes, "logprobs": []}]}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _events(event: str, data: dict[str, Any], seq: list[int]) -> str:
    seq[0] += 1
    return f"event: {event}\ndata: {json.dumps({'type': event, 'sequence_number': seq[0] - 1, **data})}\n\n"


class Responses:
    """The Responses API over one app's chat completions and a shared store (see the module docstring)."""

    def __init__(self, store: ResponseStore, complete: ChatComplete, stream: ChatStream) -> None:
        self.store = store
        self.complete = complete
        self.stream = stream

    def _shell(self, request: ResponsesRequest, response_id: str, created: int, status: str) -> dict[str, Any]:
        fmt = request.text.format if request.text and request.text.format else TextFormat(type="text")
        return {
            "id": response_id, "object": "response", "created_at": created, "status": status, "error": None,
            "incomplete_details": None, "instructions": request.instructions, "model": request.model,
            "output": [], "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id, "store": request.store,
            "temperature": request.temperature, "top_p": request.top_p,
            "max_output_tokens": request.max_output_tokens,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True)},
            "tool_choice": (request.tool_choice.model_dump() if isinstance(request.tool_choice, NamedToolChoice)
                            else request.tool_choice or "auto"),
            "tools": [t.model_dump(exclude_none=True) for t in request.tools], "truncation": "disabled",
            "metadata": request.metadata or {}, "user": request.user, "usage": None,
        }

    async def _conversation(self, request: ResponsesRequest, owner: str | None) -> list[dict[str, Any]]:
        earlier: list[dict[str, Any]] = []
        if request.previous_response_id is not None:
            try:
                stored = await self.store.get(request.previous_response_id, owner)
            except StoreUnavailable as exc:
                raise ApiError(503, str(exc), type="service_unavailable", code="store_unavailable") from exc
            if stored is None:
                raise ApiError(400, f"previous_response_id: no stored response {request.previous_response_id!r} "
                               "(it was never stored, was deleted, expired or is not yours)",
                               param="previous_response_id", code="previous_response_not_found")
            earlier = list(stored["messages"])
        return earlier + input_messages(request)

    async def _keep(self, request: ResponsesRequest, response: dict[str, Any], messages: list[dict[str, Any]],
                    owner: str | None) -> None:
        if not request.store:
            return
        try:
            await self.store.put({"id": response["id"], "owner": owner, "response": response,
                                  "messages": messages + output_messages(response["output"])})
        except StoreUnavailable as exc:
            raise ApiError(503, str(exc), type="service_unavailable", code="store_unavailable") from exc

    def prepare(self, body: dict[str, Any]) -> ResponsesRequest:
        return parse(body)

    async def create(self, request: ResponsesRequest, owner: str | None = None) -> dict[str, Any]:
        """The finished response (stored unless `store` is false)."""
        messages = await self._conversation(request, owner)
        result = await self.complete(chat_body(request, messages))
        response = self._shell(request, new_id("resp"), int(time.time()), "completed")
        choice = result["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        if text or not message.get("tool_calls"):
            response["output"].append(message_item(new_id("msg"), text,
                                                   citation_annotations(text, result.get("citations") or [])))
        for call in message.get("tool_calls") or []:
            response["output"].append(call_item(new_id("fc"), call["id"], call["function"]["name"],
                                                call["function"]["arguments"]))
        if choice.get("finish_reason") == "length":
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        counts = result.get("usage") or {}
        response["usage"] = usage(int(counts.get("prompt_tokens", 0)), int(counts.get("completion_tokens", 0)))
        await self._keep(request, response, messages, owner)
        return response

    async def create_stream(self, request: ResponsesRequest, owner: str | None = None) -> AsyncGenerator[str]:
        """The response as typed server-sent events (see the module docstring); the conversation is checked and
        the chat stream's first chunk awaited before the first event, so refusals keep their HTTP status."""
        messages = await self._conversation(request, owner)
        chunks = _chunks(self.stream(chat_body(request, messages)))
        first = await anext(chunks, None)
        seq = [0]
        response = self._shell(request, new_id("resp"), int(time.time()), "in_progress")
        yield _events("response.created", {"response": response}, seq)
        yield _events("response.in_progress", {"response": response}, seq)
        text_id: str | None = None
        text_index = -1
        text = ""
        calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its item (and output index)
        finish: str | None = None
        counts: dict[str, Any] = {}
        citations: list[dict[str, Any]] = []
        output: list[dict[str, Any]] = []

        async def all_chunks() -> AsyncGenerator[dict[str, Any]]:
            if first is not None:
                yield first
            async for more in chunks:
                yield more

        try:
            async for chunk in all_chunks():
                if "error" in chunk and "choices" not in chunk:
                    error = chunk["error"]
                    response["status"] = "failed"
                    response["error"] = {"code": error.get("code") or "server_error", "message": error.get("message")}
                    yield _events("error", {"code": error.get("code"), "message": error.get("message"),
                                            "param": error.get("param")}, seq)
                    yield _events("response.failed", {"response": response}, seq)
                    return
                counts = chunk.get("usage") or counts
                citations = chunk.get("citations") or citations
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        if text_id is None:
                            text_id, text_index = new_id("msg"), len(output)
                            output.append(message_item(text_id, "", [], "in_progress"))
                            yield _events("response.output_item.added", {"output_index": text_index,
                                                                         "item": output[text_index]}, seq)
                            yield _events("response.content_part.added", {
                                "item_id": text_id, "output_index": text_index, "content_index": 0,
                                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}, seq)
                        text += delta["content"]
                        yield _events("response.output_text.delta", {
                            "item_id": text_id, "output_index": text_index, "content_index": 0,
                            "delta": delta["content"], "logprobs": []}, seq)
                    for part in delta.get("tool_calls") or []:
                        index = part.get("index", 0)
                        if index not in calls:
                            fn = part.get("function") or {}
                            item = call_item(new_id("fc"), part.get("id") or new_id("call"), fn.get("name") or "",
                                             "", "in_progress")
                            calls[index] = {"item": item, "output_index": len(output)}
                            output.append(item)
                            yield _events("response.output_item.added", {"output_index": len(output) - 1,
                                                                         "item": item}, seq)
                        args = (part.get("function") or {}).get("arguments") or ""
                        if args:
                            entry = calls[index]
                            entry["item"]["arguments"] += args
                            yield _events("response.function_call_arguments.delta", {
                                "item_id": entry["item"]["id"], "output_index": entry["output_index"],
                                "delta": args}, seq)
                    finish = choice.get("finish_reason") or finish
        finally:
            await chunks.aclose()
        if text_id is not None:
            notes = citation_annotations(text, citations)
            done = message_item(text_id, text, notes)
            output[text_index] = done
            yield _events("response.output_text.done", {"item_id": text_id, "output_index": text_index,
                                                        "content_index": 0, "text": text, "logprobs": []}, seq)
            yield _events("response.content_part.done", {"item_id": text_id, "output_index": text_index,
                                                         "content_index": 0, "part": done["content"][0]}, seq)
            yield _events("response.output_item.done", {"output_index": text_index, "item": done}, seq)
        for entry in calls.values():
            item = entry["item"]
            item["status"] = "completed"
            yield _events("response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": entry["output_index"], "name": item["name"],
                "arguments": item["arguments"]}, seq)
            yield _events("response.output_item.done", {"output_index": entry["output_index"], "item": item}, seq)
        if not output:  # nothing generated: an empty message, as `create` gives
            output.append(message_item(new_id("msg"), "", []))
        response["output"] = output
        response["status"] = "completed"
        if finish == "length":
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        response["usage"] = usage(int(counts.get("prompt_tokens", 0)), int(counts.get("completion_tokens", 0)))
        await self._keep(request, response, messages, owner)
        yield _events("response.completed" if response["status"] == "completed" else "response.incomplete",
                      {"response": response}, seq)

    async def get(self, response_id: str, owner: str | None = None) -> dict[str, Any]:
        record = await self._record(response_id, owner)
        found: dict[str, Any] = record["response"]
        return found

    async def delete(self, response_id: str, owner: str | None = None) -> dict[str, Any]:
        await self._record(response_id, owner)
        try:
            await self.store.delete(response_id, owner)
        except StoreUnavailable as exc:
            raise ApiError(503, str(exc), type="service_unavailable", code="store_unavailable") from exc
        return {"id": response_id, "object": "response", "deleted": True}

    async def _record(self, response_id: str, owner: str | None) -> dict[str, Any]:
        if not RESPONSE_ID.match(response_id):
            raise ApiError(400, "response_id: resp_ followed by 1-64 letters, digits or -", param="response_id",
                           code="invalid_value")
        try:
            record = await self.store.get(response_id, owner)
        except StoreUnavailable as exc:
            raise ApiError(503, str(exc), type="service_unavailable", code="store_unavailable") from exc
        if record is None:
            raise ApiError(404, f"No response with id '{response_id}' found.", type="invalid_request_error",
                           param="response_id", code="not_found")
        return record


def sse_error_event(error: ApiError) -> str:
    """A refusal after the stream began, as the Responses API's `error` event."""
    return _events("error", {"code": error.code or error.type, "message": error.message, "param": error.param},
                   [0])


async def _chunks(lines: AsyncIterator[str]) -> AsyncGenerator[dict[str, Any]]:
    """The chat stream's SSE strings as chunk dicts (an `error` body too), until `[DONE]`."""
    try:
        async for line in lines:
            for row in line.splitlines():
                if not row.startswith("data: "):
                    continue
                data = row.removeprefix("data: ").strip()
                if data == "[DONE]":
                    return
                yield json.loads(data)
    finally:
        closer = getattr(lines, "aclose", None)
        if closer is not None:
            await closer()
