"""OpenAI wire format: the request models (no Ray, no models); responses are web/responses.

Requests are validated here so every runtime sees the same checked values, and every refusal carries the
OpenAI error body `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue

from raylight_pipelines.web import limits
from raylight_pipelines.web.errors import ApiError, validation_error
from raylight_pipelines.web.openai_tokens import is_token_input, token_texts

# The largest body a model route reads (1 MiB: about 250,000 tokens of text, more than a CPU runtime's context).
MODEL_MAX_REQUEST_BYTES = 1024 * 1024


MAX_CHOICES = 8  # `n`: choices are generated one after another on the CPU runtimes


def unknown_model(requested: str, served: str) -> ApiError:
    return ApiError(404, f"The model '{requested}' does not exist; this endpoint serves '{served}'.",
                    param="model", code="model_not_found")


class _Request(BaseModel):
    # Every parameter a body may carry is checked against web/parameters.py's tables first (honoured,
    # accepted, or refused with 400 naming it); fields these models do not declare are the accepted ones.
    # Strict types, as OpenAI's API: "5" is no integer, "true" no boolean, 1e9 no integer either (a float);
    # the same body gets the same answer on every app.
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1)


class EmbeddingsRequest(_Request):
    """`POST /v1/embeddings`: `input` a string, a list of strings, or OpenAI token ids (an array, or an array
    of arrays: cl100k_base ids, as LangChain's OpenAIEmbeddings sends them; see web/openai_tokens.py).
    An input longer than the model's window is refused (400 naming it and the limit) unless `truncate` is
    true (TEI's field): then the model sees its first window of tokens. `dimensions` is the model's own, or
    one of the shorter Matryoshka sizes it was trained for (engineArgs.matryoshka_dimensions)."""

    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536)
    truncate: bool = False

    @field_validator("input", mode="before")
    @classmethod
    def _text_or_tokens(cls, value: Any) -> Any:


        if isinstance(value, list) and value and not all(isinstance(x, str) for x in value) \
                and not is_token_input(value):
            raise ValueError("a string, a list of strings, or token ids (a list of integers or of lists of them)")
        return value

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("must not be an empty list")
        if isinstance(value, list) and len(value) > limits.MAX_INPUTS:
            raise ValueError(f"{len(value)} inputs; at most {limits.MAX_INPUTS} per request "
                             "(limit max_inputs_per_request)")
        empty = [i for i, text in enumerate([value] if isinstance(value, str) else value) if not text]
        if empty:
            raise ValueError("must not be an empty string" + (f" (item {empty[0]})" if isinstance(value, list)
                                                                 else ""))
        return value

    @property
    def texts(self) -> list[str]:
        """The inputs as text (token ids decoded with OpenAI's tokenizer); raises ApiError naming `input`."""


        if isinstance(self.input, str):
            return [self.input]
        if is_token_input(self.input):
            return token_texts(list(self.input))
        return [str(x) for x in self.input]


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    text: str


class RerankRequest(_Request):
    """`POST /v1/rerank` in the shape Cohere, Jina and TEI clients send: a query, the documents to score
    (strings, or objects with a `text`), and how many of the best to return."""

    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=1000)
    top_n: int | None = Field(None, ge=1, le=1000)
    return_documents: bool = True
    truncate: bool = False  # TEI's field: a pair over the model's window is refused (400) unless true

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str
    arguments: str  # a JSON object, as text (the OpenAI shape)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages: the calls it made
    tool_call_id: str | None = None  # tool messages: the call this is the result of

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role tool needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"content: a {self.role} message needs content (null only for an assistant "
                             "message that carries tool_calls)")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The checks of `_tool_fields` in the document too (OpenAI's message shapes by role), so that every
        body the document allows is one the server takes."""
        schema = handler(core)
        target = handler.resolve_ref_schema(schema)
        given: dict[str, Any] = {"not": {"type": "null"}}
        no_calls = {"maxItems": 0}  # null, absent or []
        target["anyOf"] = [
            {"properties": {"role": {"enum": ["system", "developer", "user"]}, "content": given,
                            "tool_calls": no_calls}, "required": ["content"]},
            {"properties": {"role": {"const": "tool"}, "content": given, "tool_calls": no_calls,
                            "tool_call_id": {"type": "string", "minLength": 1}},
             "required": ["content", "tool_call_id"]},
            {"properties": {"role": {"const": "assistant"}, "content": given}, "required": ["content"]},
            {"properties": {"role": {"const": "assistant"}, "tool_calls": {"type": "array", "minItems": 1}},
             "required": ["tool_calls"]},
        ]
        return schema

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _json_schema_of_an_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        validator = jsonschema.validators.validator_for(value, default=jsonschema.Draft202012Validator)
        try:
            validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "".join(f"[{p!r}]" for p in exc.path)
            raise ValueError(f"not a valid JSON schema: {exc.message}" + (f" at {where}" if where else "")) from None
        if value.get("type", "object") != "object":
            raise ValueError("must be a JSON schema with type object (a function's named arguments)")
        return value


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["function"]
    function: FunctionName


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

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
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


def token_biases(value: dict[str, float] | None) -> dict[str, float] | None:
    """Check a `logit_bias`: keys token ids (non-negative integers as strings), biases within -100..100."""
    for key, bias in (value or {}).items():
        if not key.isdigit() or len(key) > 9:
            raise ValueError(f"keys are token ids (decimal integers); {key[:20]!r} is not one")
        if not -100 <= bias <= 100:
            raise ValueError(f"token {key}: bias {bias} is outside [-100, 100]")
    return value


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=limits.MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=limits.MAX_TOKENS)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None  # at most 4 stop sequences
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)  # who asks (OpenAI's end-user id); not acted on
    response_format: ResponseFormat | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    # Several calls in one answer only when asked for (as llama.cpp's server does): small models that may
    # call again tend to repeat the same call until max_tokens.
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # token id (as a string, OpenAI's shape) -> bias added to its logit, -100 (never) to 100 (always)
    logit_bias: dict[str, float] | None = Field(None, max_length=300)

    @property
    def token_biases(self) -> dict[int, float]:
        """logit_bias as token id -> bias (empty when none is asked)."""
        return {int(token): bias for token, bias in (self.logit_bias or {}).items()}

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return token_biases(value)

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
    def _consistent(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice: names function {choice.function.name!r}, which is not in tools")
        if choice == "required" and not names:
            raise ValueError("tool_choice: required needs tools")
        if self.tool_mode != "none" and self.json_schema is not None:
            raise ValueError("response_format: cannot be combined with tools (set tool_choice to none, "
                             "or give the answer's shape as a tool)")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs true")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self

    @property
    def tool_mode(self) -> Literal["none", "auto", "required", "named"]:
        """How this request may call tools: none (answer in text), auto (text or calls), required, named."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    @property
    def callable_tools(self) -> list[FunctionDefinition]:
        """The functions a call may name (all tools, or the one tool_choice names); [] in mode none."""
        mode = self.tool_mode
        if mode == "none":
            return []
        functions = [tool.function for tool in self.tools or []]
        if isinstance(self.tool_choice, NamedToolChoice):
            return [f for f in functions if f.name == self.tool_choice.function.name]
        return functions

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


class CompletionRequest(_Request):
    """`POST /v1/completions` (legacy): text in, text out, no chat template. `prompt` is a string or a list of
    strings (one completion per prompt and `n`); `max_tokens` defaults to 16 as on OpenAI; `echo` puts the
    prompt before the completion's text."""

    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=300)
    echo: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return token_biases(value)

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompts(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not all(isinstance(item, str) for item in value):
            raise ValueError("token-id prompts are not supported; send a string or a list of strings")
        if isinstance(value, list) and not value:
            raise ValueError("must not be an empty list")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def sampling(self, seed: int | None = None) -> ChatCompletionRequest:
        """The sampling fields as the chat request the runtimes decode with (the messages are not used)."""
        return ChatCompletionRequest.model_validate({
            "model": self.model, "messages": [{"role": "user", "content": ""}], "temperature": self.temperature,
            "top_p": self.top_p, "seed": seed, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "logit_bias": self.logit_bias})

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def parse(model: type[_Request], body: Any, served: str, adapters: Sequence[str] = ()) -> Any:
    """Validate a request body (a dict) and check it names the served model (or one of its adapters);
    raises ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if request.model != served and request.model not in adapters:
        raise unknown_model(request.model, served)
    return request

