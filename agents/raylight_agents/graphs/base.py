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

from raylight_agents.grounding import (
    AnswerMode,
    Evidence,
    Grounder,
    SentenceSupport,
    cited_sentence,
    content_words,
    is_dont_know,
    quote,
    quote_first,
    restates,
    split_sentences,
)
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
CLOSEST = 3  # closest sources named in an abstention
QUOTE_PREFIX = "According to the documents: "  # how a quote-first answer begins
PARAPHRASE_TOKENS = 48
PARAPHRASE_SYSTEM = ("Answer the question in one short sentence, using only the quoted text. Copy numbers and "
                     "names exactly.")

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
    support: list[SentenceSupport]  # each sentence of the answer and the sources that support it
    evidence_score: float | None  # the best evidence sentence's score (retrieval.minScore applies to it)
    prompt: list[Message]  # what the answering call sent to the model, whenever it was asked (audit and tests)
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
    grounder: Grounder = field(default_factory=Grounder)  # evidence and support checks (raylight_agents.grounding)
    answer_mode: AnswerMode = "generative"  # spec.agent.answerMode resolved for the model


def turn_input(question: str, owner: str | None) -> AgentState:
    """The state update that starts a turn: the user's message appended, per-turn fields cleared."""
    return {"messages": [{"role": "user", "content": question}], "owner": owner, "question": question,
            "query": question, "queries": [], "chunks": [], "context": [], "answer": "", "citations": [],
            "grounding": "none", "support": [], "evidence_score": None, "prompt": [], "iterations": 0, "tool_calls": []}


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
                   refs: RefFilter | SentenceGate | None = None) -> str:
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


def abstention(chunks: list[Chunk]) -> tuple[str, list[Citation]]:
    """The fixed answer when the documents do not hold one: DONT_KNOW, then the closest sources by name
    ("Closest sources: docs/a.md, docs/b.md."), which are also the citations (grounding "none")."""
    closest: list[Chunk] = []
    for chunk in chunks:
        if chunk["source"] not in {c["source"] for c in closest}:
            closest.append(chunk)
    closest = closest[:CLOSEST]
    answer = DONT_KNOW
    if closest:
        answer += " Closest sources: " + ", ".join(_display(c["source"]) for c in closest) + "."
    citations: list[Citation] = [{"ref": n, "id": c["id"], "source": c["source"], "text": c["text"][:MAX_SOURCE_CHARS]}
                                 for n, c in enumerate(closest, 1)]
    return answer, citations


def _display(source: str) -> str:
    """A source id as a reader knows it: "path:docs/a.md" -> "docs/a.md"."""
    kind, _, rest = source.partition(":")
    return rest if rest and "/" not in kind else source


class SentenceGate:
    """Streams a generated answer sentence by sentence: each finished sentence is checked against the sources
    (`Grounder.support`) and sent with the citation of a source that supports it, or held back when none does.
    What is sent equals the non-streamed answer; `support` lists every sentence, kept or dropped."""

    def __init__(self, grounder: Grounder, context: list[Chunk]) -> None:
        self.grounder = grounder
        self.context = context
        self.pending = ""
        self.kept: list[str] = []
        self.support: list[SentenceSupport] = []

    def _check(self, sentence: str) -> str:
        sentence = clean_refs(sentence, len(self.context)).strip()
        if not sentence:
            return ""
        text, refs = cited_sentence(sentence, self.grounder.support(sentence, self.context))
        self.support.append({"text": text, "refs": refs, "supported": bool(refs)})
        if not refs:
            return ""
        out = (" " if self.kept else "") + text
        self.kept.append(text)
        return out

    def feed(self, delta: str) -> str:
        self.pending += delta
        parts = split_sentences_stream(self.pending)
        rest = parts[-1].lstrip()
        if not rest or rest.startswith("["):  # a reference may still follow the last full stop
            parts = [*parts[:-2], "".join(parts[-2:])] if len(parts) > 1 else parts
        if len(parts) < 2:
            return ""
        done, self.pending = parts[:-1], parts[-1]
        return "".join(self._check(s) for s in done)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return "".join(self._check(s) for s in split_sentences(text))

    @property
    def answer(self) -> str:
        return " ".join(self.kept)


_STREAM_END = re.compile(r"(?<=[.!?])(?:\s*\[[\d ,]*\])?\s+|\n+")


def split_sentences_stream(text: str) -> list[str]:
    """`text` cut after each sentence end followed by white space (a reference after the full stop stays
    with its sentence); the last part is the unfinished rest."""
    out, start = [], 0
    for match in _STREAM_END.finditer(text):
        out.append(text[start:match.end()])
        start = match.end()
    out.append(text[start:])
    return [p for p in out[:-1] if p.strip()] + [out[-1]]


def _emit(ctx: RunContext, writer: Any, text: str) -> None:
    if text and ctx.stream_tokens and writer is not None:
        writer({"token": text})


def _citations(context: list[Chunk], refs: list[int]) -> list[Citation]:
    return [{"ref": n, "id": context[n - 1]["id"], "source": context[n - 1]["source"],
             "text": context[n - 1]["text"][:MAX_SOURCE_CHARS]} for n in refs]


def _finish(answer: str, context: list[Chunk], support: list[SentenceSupport], score: float | None,
            prompt: list[Message]) -> AgentState:
    refs: list[int] = []
    for sentence in support:
        if sentence["supported"]:
            refs.extend(r for r in sentence["refs"] if r not in refs)
    return {"answer": answer, "citations": _citations(context, refs), "grounding": "cited" if refs else "context",
            "support": support, "evidence_score": score, "prompt": prompt,
            "messages": [{"role": "assistant", "content": answer}]}


def _abstain(state: AgentState, ctx: RunContext, writer: Any, score: float | None) -> AgentState:
    answer, citations = abstention(state.get("context") or state.get("chunks", []))
    _emit(ctx, writer, answer)
    return {"answer": answer, "citations": citations, "grounding": "none", "support": [],
            "evidence_score": score, "prompt": [], "messages": [{"role": "assistant", "content": answer}]}


async def _paraphrase(deps: GraphDeps, state: AgentState, ctx: RunContext, quotes: list[Evidence]) \
        -> SentenceSupport | None:
    """One short sentence by the model from the quoted sentences alone, kept only when it restates them
    (`restates`: no word, number or negation they do not have) and is not a copy of one."""
    quoted = "\n".join(f'"{e.sentence}"' for e in quotes)
    prompt: list[Message] = [{"role": "system", "content": PARAPHRASE_SYSTEM},
                              {"role": "user", "content": f"Text:\n{quoted}\n\nQuestion: {state['question']}"}]
    raw = await call_llm(deps, ctx, prompt, max_tokens=PARAPHRASE_TOKENS)
    first = next(iter(split_sentences(clean_refs(raw, 0))), "").strip()
    if not first or len(first.split()) > 30 or not restates(first, [e.sentence for e in quotes]):
        return None
    if any(content_words(first) == content_words(e.sentence) for e in quotes):
        return None  # says nothing the quote does not say in the same words
    text, cited = cited_sentence(first, [quotes[0].ref])
    return {"text": text, "refs": cited, "supported": True}


async def extractive(deps: GraphDeps, state: AgentState, ctx: RunContext, writer: Any, quotes: list[Evidence],
                     context: list[Chunk], score: float | None, paraphrase: bool = True) -> AgentState:
    """The quote-first answer: 'According to the documents: "<sentence>" [n]' for each quoted sentence, then at
    most one checked paraphrase by the model (none for a governing rule: a yes/no paraphrase is where a small
    model flips the polarity)."""
    support: list[SentenceSupport] = [{"text": quote(e), "refs": [e.ref], "supported": True} for e in quotes]
    answer = QUOTE_PREFIX + " ".join(s["text"] for s in support)
    _emit(ctx, writer, answer)
    extra = await _paraphrase(deps, state, ctx, quotes) if paraphrase else None
    if extra is not None:
        support.append(extra)
        answer += " " + extra["text"]
        _emit(ctx, writer, " " + extra["text"])
    return _finish(answer, context, support, score, [])


def _standalone(state: AgentState) -> str:
    """The question as searched first: a follow-up with its previous turn (see standalone_query)."""
    queries = state.get("queries") or []
    return queries[0] if queries else state.get("query") or state["question"]


async def generate(deps: GraphDeps, state: AgentState, ctx: RunContext, writer: Any) -> AgentState:
    """Answer from the numbered sources, grounded or not at all (docs/grounding.md):

    * no source, or no sentence of them scoring retrieval.minScore (`Grounder.evidence`) and no governing
      rule holding half of the question's words: the fixed abstention with the closest sources, grounding
      "none", no model call;
    * extractive mode, or a yes/no question that a restriction in the sources governs (`governing_rule`):
      the supporting sentences quoted with their citations, then at most one checked paraphrase;
    * generative mode: the model answers; each sentence is kept, with the citation of a source that supports
      it, or dropped (`SentenceGate`, streamed too); when no sentence survives, the quote-first answer;
    * a JSON schema answer is the model's JSON, cited as before (sentences are not checked).
    `support` lists each sentence of the answer with the sources that support it."""
    context = state.get("context", [])[:MAX_SOURCES]
    if not context:
        return _abstain(state, ctx, writer, None)
    evidence = await asyncio.to_thread(deps.grounder.evidence, state["question"], _standalone(state), context)
    score = max(e.score for e in evidence) if evidence else None
    fmt = response_format(deps.spec)
    rule = None if fmt is not None else governing_rule(state["question"], context)
    # A rule that holds at least half of the question's content words governs it whatever the embedder's score.
    ruling = rule is not None and 2 * len(terms(state["question"]) & terms(rule[1])) >= len(terms(state["question"]))
    if (score is None or score < deps.spec.retrieval.min_score) and not ruling:
        return _abstain(state, ctx, writer, score)
    if fmt is not None:
        prompt = answer_prompt(deps.spec, state, context)
        raw = await call_llm(deps, ctx, prompt, writer, fmt)
        answer, citations, grounding = cite(raw, context, structured=True)
        return {"answer": answer, "citations": citations, "grounding": grounding, "support": [],
                "evidence_score": score, "prompt": prompt, "messages": [{"role": "assistant", "content": answer}]}
    if rule is not None:
        return await extractive(deps, state, ctx, writer, [Evidence(rule[0], rule[1], score or 0.0, 0.0, 0.0)], context,
                                score, paraphrase=False)
    if deps.answer_mode == "extractive":
        return await extractive(deps, state, ctx, writer, quote_first(evidence), context, score)
    prompt = answer_prompt(deps.spec, state, context)
    gate = SentenceGate(deps.grounder, context)
    raw = await call_llm(deps, ctx, prompt, writer, refs=gate)
    if not (ctx.stream_tokens and writer is not None):  # streamed, the gate has seen every token already
        gate.feed(raw)
        gate.flush()
    if not gate.kept:  # the model was asked (its prompt is kept for audit), but none of its sentences stands
        if any(is_dont_know(s["text"]) for s in gate.support):
            return {**_abstain(state, ctx, writer, score), "prompt": prompt}
        result = await extractive(deps, state, ctx, writer, quote_first(evidence), context, score)
        return {**result, "support": [*gate.support, *result["support"]], "prompt": prompt}
    return _finish(gate.answer, context, gate.support, score, prompt)


def json_field(text: str, key: str, default: Any) -> Any:
    """A field of a JSON object the model produced under a schema (default when it is not valid)."""
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value.get(key, default) if isinstance(value, dict) else default
