"""What every graph shares: typed state, the run context, prompts, relevance and citation checks.

A graph module defines `build(deps: GraphDeps) -> StateGraph` and registers it with `@register(name)`;
the agent compiles it with the pipeline's checkpointer. State that must survive a turn (the
conversation, the thread's owner) uses reducers or is rewritten each turn; per-turn fields are reset
by the input the agent passes in.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import operator
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, TypedDict

from raylight.api.types import PipelineSpec
from raylight_pipelines import telemetry

from raylight_agents.llm import LLM, Completion, Message, Usage
from raylight_agents.mcp_tools import Toolbox
from raylight_agents.tools import HttpToolbox

# A 135M model has little room: few, short sources and a short history keep answers fast and on topic.
MAX_SOURCES = 4
MAX_SOURCE_CHARS = 500
HISTORY_MESSAGES = 4
HISTORY_CHARS = 300

DEFAULT_SYSTEM = ("You answer questions using only the numbered sources. Cite the sources you use as "
                  "[1], [2]. If the sources do not contain the answer, say you do not know.")
DONT_KNOW = "I don't know: the documents I can search do not cover this question."

Grounding = Literal["cited", "context", "none"]


class Chunk(TypedDict):
    """A retrieved chunk (or an HTTP tool's result) as it is kept in the state."""

    id: str
    source: str
    title: str | None
    text: str
    score: float | None


class Citation(TypedDict):
    ref: int  # the [n] the answer uses
    id: str
    source: str
    text: str


class AgentState(TypedDict, total=False):
    messages: Annotated[list[Message], operator.add]  # the conversation, kept across turns
    owner: str | None  # the user who started the thread (others may not read or continue it)
    question: str
    query: str
    queries: list[str]  # every query tried this turn (agentic-rag rewrites)
    chunks: list[Chunk]  # everything retrieved this turn
    context: list[Chunk]  # the numbered sources given to the model
    answer: str
    citations: list[Citation]
    grounding: Grounding
    prompt: list[Message]  # what the answering call sent to the model (for audit and tests)
    iterations: int
    tool_calls: list[dict[str, Any]]


@dataclass
class RunContext:
    """Per-request values that are not part of the thread's state."""

    caller: Any = None  # raylight_pipelines.retrieval.retriever.Caller
    pipeline: str = ""  # for metrics
    stream_tokens: bool = False
    usage: Usage = field(default_factory=Usage)


class Retriever(Protocol):
    def search(self, query: str, caller: Any = None, top_k: int | None = None) -> list[Any]: ...


@dataclass
class GraphDeps:
    spec: PipelineSpec
    retriever: Retriever
    llm: LLM
    tools: HttpToolbox | Toolbox


def turn_input(question: str, owner: str | None) -> AgentState:
    """The state update that starts a turn: the user's message appended, per-turn fields cleared."""
    return {"messages": [{"role": "user", "content": question}], "owner": owner, "question": question,
            "query": question, "queries": [], "chunks": [], "context": [], "answer": "", "citations": [],
            "grounding": "none", "prompt": [], "iterations": 0, "tool_calls": []}


def to_chunk(hit: Any) -> Chunk:
    return {"id": str(hit.id), "source": str(hit.source), "title": getattr(hit, "title", None),
            "text": str(hit.text), "score": None if hit.score is None else float(hit.score)}


async def retrieve(deps: GraphDeps, query: str, caller: Any) -> list[Chunk]:
    """Search the pipeline's store as the caller (tenant and groups filter what comes back)."""
    top_k = deps.spec.retrieval.top_k
    search = deps.retriever.search
    with telemetry.tracer.start_as_current_span("retrieval", attributes={"raylight.top_k": top_k}) as span:
        if inspect.iscoroutinefunction(search):
            hits = await search(query, caller=caller, top_k=top_k)
        else:  # qdrant-client and the query embedding block: keep the event loop free
            hits = await asyncio.to_thread(search, query, caller=caller, top_k=top_k)
        span.set_attribute("raylight.retrieved", len(hits))
    return [to_chunk(h) for h in hits]


_STOP = frozenset({
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "doing", "done",
    "for", "from", "get", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "make",
    "me", "my", "of", "on", "or", "our", "please", "set", "should", "tell", "than", "that", "the",
    "their", "them", "then", "there", "these", "this", "to", "use", "used", "using", "was", "we",
    "what", "when", "where", "which", "who", "why", "will", "with", "you", "your",
})


def terms(text: str) -> set[str]:
    """Content words, crudely stemmed (first 5 letters), so 'replicas' meets 'replica'."""
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in _STOP}


def relevant(query: str, chunks: list[Chunk]) -> list[Chunk]:
    """Chunks worth showing the model, decided without it: those sharing at least one content word with
    the query. Dense search always returns *something*; this is what lets the agent say it does not know
    instead of answering from noise. (spec.retrieval.scoreThreshold is applied by the retriever inside
    the store query, where the scores are cosine similarities; fused hybrid scores are ranks.)"""
    wanted = terms(query)
    return [c for c in chunks if wanted & terms(f"{c['title'] or ''} {c['text']}")]


# Yes/no questions ("Can a user outside a group see ...?", "If ..., will I see it?") and the words that make
# a sentence a prohibition or a restriction.
_YES_NO = re.compile(r"^\s*(if\b[^,?]*,\s*)?(can|could|may|might|will|would|is|are|does|do|did|should|must|"
                     r"has|have)\b", re.I)
_RESTRICTION = re.compile(r"\b(no|not|never|cannot|only|none|nobody|nothing)\b|n't\b", re.I)


def sentences(text: str) -> list[str]:
    """The sentences of a source's text (one per line or per full stop), markdown headings left out."""
    parts = (s.strip() for line in text.splitlines() if not line.lstrip().startswith("#")
             for s in re.split(r"(?<=[.!?])\s+", line))
    return [s for s in parts if s]


def governing_rule(question: str, context: list[Chunk]) -> tuple[int, str] | None:
    """For a yes/no question, the prohibition or restriction in the sources that governs it, as
    (source number, sentence): the sentence sharing the most content words with the question (at least
    two), when that sentence restricts (no, not, never, only, ...). None otherwise.

    A small model flips the polarity of such answers ("you will see it" where the rule says "never"), so
    the agent answers these questions by quoting the rule instead of asking the model."""
    if not _YES_NO.match(question):
        return None
    wanted = terms(question)
    best: tuple[int, int, str] | None = None
    for ref, chunk in enumerate(context, 1):
        for sentence in sentences(chunk["text"][:MAX_SOURCE_CHARS]):
            shared = len(wanted & terms(sentence))
            if shared >= 2 and (best is None or shared > best[0]):
                best = (shared, ref, sentence)
    if best is None or not _RESTRICTION.search(best[2]):
        return None
    return best[1], best[2]


def history(messages: list[Message]) -> list[Message]:
    """Earlier turns sent along with a question (the last user message is the question itself)."""
    earlier = messages[:-1][-HISTORY_MESSAGES:]
    return [{"role": m["role"], "content": m["content"][:HISTORY_CHARS]} for m in earlier]


def answer_prompt(spec: PipelineSpec, state: AgentState, context: list[Chunk]) -> list[Message]:
    sources = "\n".join(
        f"[{n}] {(c['title'] + ': ') if c['title'] else ''}{c['text'][:MAX_SOURCE_CHARS]}"
        for n, c in enumerate(context, 1))
    system = (spec.agent.system_prompt or DEFAULT_SYSTEM).strip()
    user = f"Sources:\n{sources}\n\nQuestion: {state['question']}"
    return [{"role": "system", "content": system}, *history(state.get("messages", [])),
            {"role": "user", "content": user}]


def response_format(spec: PipelineSpec) -> dict[str, Any] | None:
    fmt = spec.agent.response_format
    if fmt is None:
        return None
    return {"type": "json_schema",
            "json_schema": {"name": fmt.json_schema.name, "schema": fmt.json_schema.schema_, "strict": True}}


_REF = re.compile(r"( ?)\[(\d+(?:\s*,\s*\d+)*)\]")  # a reference and the space before it
_REF_PREFIX = re.compile(r"\[[\d ,]{0,30}")  # what a reference looks like while it is streamed


def clean_refs(text: str, count: int) -> str:
    """Drop references to sources that do not exist: " [7]" goes, "[1, 7]" becomes "[1]"."""
    def keep(match: re.Match[str]) -> str:
        valid = [r for r in (int(x) for x in match.group(2).split(",")) if 1 <= r <= count]
        return match.group(1) + "[" + ", ".join(map(str, valid)) + "]" if valid else ""
    return _REF.sub(keep, text)


class RefFilter:
    """Applies `clean_refs` to a token stream, holding back only an unfinished " [..." (and a trailing
    space that may precede one): the streamed text then equals the non-streamed answer."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pending = ""
        self.started = False

    def _emit(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text

    def feed(self, delta: str) -> str:
        self.pending += delta
        out: list[str] = []
        while self.pending:
            start = self.pending.find("[")
            if start < 0:
                keep = 1 if self.pending.endswith(" ") else 0
                out.append(self.pending[:len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep:]
                break
            lead = start - 1 if start > 0 and self.pending[start - 1] == " " else start
            out.append(self.pending[:lead])
            rest = self.pending[lead:]
            match = _REF.match(rest)
            if match:
                out.append(clean_refs(match.group(0), self.count))
                self.pending = rest[match.end():]
                continue
            bracket = start - lead
            prefix = _REF_PREFIX.match(rest, bracket)
            if prefix and prefix.end() == len(rest):  # could still become a reference: wait for more
                self.pending = rest
                break
            out.append(rest[:bracket + 1])
            self.pending = rest[bracket + 1:]
        return self._emit("".join(out))

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return self._emit(text)


def cite(answer: str, context: list[Chunk], structured: bool) -> tuple[str, list[Citation], Grounding]:
    """Keep only the [n] that name a source the model was given; list those sources in order.

    A reference to a source that does not exist is removed from a prose answer (structured answers are
    left intact). When the model cites nothing valid, the citations are the sources it was given and
    the grounding says "context", not "cited"."""
    used: list[int] = []
    for match in _REF.finditer(answer):
        for ref in (int(x) for x in match.group(2).split(",")):
            if 1 <= ref <= len(context) and ref not in used:
                used.append(ref)
    text = answer if structured else clean_refs(answer, len(context)).strip()
    grounding: Grounding = "cited" if used else "context"
    refs = used or list(range(1, len(context) + 1))
    citations: list[Citation] = [
        {"ref": n, "id": context[n - 1]["id"], "source": context[n - 1]["source"],
         "text": context[n - 1]["text"][:MAX_SOURCE_CHARS]} for n in refs]
    return text, citations, grounding


async def call_llm(deps: GraphDeps, ctx: RunContext, messages: list[Message], writer: Any = None,
                   fmt: dict[str, Any] | None = None, max_tokens: int | None = None,
                   refs: RefFilter | None = None) -> str:
    """One LLM call; tokens go to the stream writer when the caller streams; usage is accounted."""
    done: Completion
    with telemetry.stage(ctx.pipeline, "generate", "generation", **{"gen_ai.request.model": deps.llm.model}) \
            as span:
        if ctx.stream_tokens and writer is not None:
            done = Completion("")
            async for part in deps.llm.stream(messages, fmt, max_tokens):
                if isinstance(part, Completion):
                    done = part
                elif text := (refs.feed(part) if refs else part):
                    writer({"token": text})
            if refs and (text := refs.flush()):
                writer({"token": text})
        else:
            done = await deps.llm.complete(messages, fmt, max_tokens)
        span.set_attribute("gen_ai.usage.input_tokens", done.prompt_tokens or 0)
        span.set_attribute("gen_ai.usage.output_tokens", done.completion_tokens or 0)
    ctx.usage.add(done.prompt_tokens, done.completion_tokens)
    return done.text


async def generate(deps: GraphDeps, state: AgentState, ctx: RunContext, writer: Any) -> AgentState:
    """Answer from the numbered sources, or say "I don't know" without calling the model when none; a yes/no
    question that a restriction in the sources governs is answered by quoting it (`governing_rule`)."""
    context = state.get("context", [])[:MAX_SOURCES]
    if not context:
        return {"answer": DONT_KNOW, "citations": [], "grounding": "none", "prompt": [],
                "messages": [{"role": "assistant", "content": DONT_KNOW}]}
    fmt = response_format(deps.spec)
    rule = None if fmt is not None else governing_rule(state["question"], context)
    if rule is not None:
        answer = f'The documents say: "{rule[1]}" [{rule[0]}]'
        if ctx.stream_tokens and writer is not None:
            writer({"token": answer})
        text, citations, grounding = cite(answer, context, structured=False)
        return {"answer": text, "citations": citations, "grounding": grounding, "prompt": [],
                "messages": [{"role": "assistant", "content": text}]}
    prompt = answer_prompt(deps.spec, state, context)
    refs = None if fmt is not None else RefFilter(len(context))
    raw = await call_llm(deps, ctx, prompt, writer, fmt, refs=refs)
    answer, citations, grounding = cite(raw, context, structured=fmt is not None)
    return {"answer": answer, "citations": citations, "grounding": grounding, "prompt": prompt,
            "messages": [{"role": "assistant", "content": answer}]}


def json_field(text: str, key: str, default: Any) -> Any:
    """A field of a JSON object the model produced under a schema (default when it is not valid)."""
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value.get(key, default) if isinstance(value, dict) else default
