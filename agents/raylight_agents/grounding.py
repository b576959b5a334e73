"""Grounding: whether the retrieved passages hold an answer, which passage supports each sentence of an
answer, and the quote-first answer small models give (docs/grounding.md).

Three checks, all without the answering model:

* **Evidence** (`Grounder.evidence`): every sentence of the retrieved passages scored against the question,
  best first, from the embedder's cosine similarity (the same vectors retrieval uses; fused RRF scores are
  ranks and say nothing about relevance). Below `retrieval.minScore` the agent abstains.
* **Support** (`Grounder.support`): a sentence of an answer is supported by a passage when the passage
  contains most of its content words (`SUPPORT_OVERLAP`), every number it states, and it agrees with the
  passage's closest sentence on negation (an answer that drops or adds a "not" states the opposite).
* **Extraction** (`quote_first`): the best evidence sentences quoted with their citations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

Embed = Callable[[Sequence[str]], list[list[float]] | None]  # None: no embedder to call (words only)
AnswerMode = Literal["extractive", "generative"]

# Models with fewer parameters than this answer quote-first when spec.agent.answerMode is auto: measured on
# the labelled sets (docs/grounding.md), a 135M model states the fact for too few questions and flips rules.
EXTRACTIVE_BELOW_PARAMETERS = 1e9
RANK_WORDS = 0.2  # weight of the question's own words when ranking sentences
CONTRAST = 0.5  # weight of the best sentence's lead over the mean sentence in the evidence score
SUPPORT_OVERLAP = 0.6  # share of an answer sentence's content words its passage must contain
MAX_QUOTES = 2
SECOND_QUOTE_RATIO = 0.9  # a second sentence is quoted when it scores at least this share of the best

_STOP = frozenset({
    "a", "about", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "doing", "done", "each", "for", "from", "get", "had", "has", "have", "how",
    "i", "if", "in", "into", "is", "it", "its", "just", "make", "may", "me", "might", "more", "most", "must",
    "my", "of", "on", "one", "only", "or", "other", "our", "out", "please", "set", "shall", "should", "so",
    "some", "such", "tell", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "too", "use", "used", "using", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "according", "documents",
    "document", "source", "sources", "say", "says", "said", "answer", "question",
})
_WORD = re.compile(r"[a-z0-9][a-z0-9_.:/-]*[a-z0-9]|[a-z0-9]")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*")
_NEGATION = re.compile(r"\b(no|not|never|cannot|none|nobody|nothing|neither|nor|without)\b|n't\b", re.I)
_REF = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9`*])")
_DONT_KNOW = re.compile(r"\b(do not|don't|does not|doesn't|cannot|can't|could not|couldn't)\s+(know|say|"
                        r"contain|mention|find|answer|provide|specify|tell)\b|\bnot (mentioned|stated|specified"
                        r"|provided|given)\b|\bno information\b", re.I)


def content_words(text: str) -> set[str]:
    """Lower-cased content words, crudely stemmed (first 6 characters), so 'replicas' meets 'replica'."""
    return {w[:6] for w in _WORD.findall(text.lower()) if (len(w) > 2 or w.isdigit()) and w not in _STOP}


def numbers(text: str) -> set[str]:
    """The numbers a text states ("400", "06:40", "2.1"), separators kept."""
    return {n.rstrip(".,:") for n in _NUMBER.findall(text)}


def negated(text: str) -> bool:
    return bool(_NEGATION.search(text))


def split_sentences(text: str) -> list[str]:
    """The sentences of a text: one per line or per full stop before a capital or a digit; markdown headings
    and list markers left out."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^([-*+]|\d+[.)])\s+", "", line)
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def is_dont_know(sentence: str) -> bool:
    """Whether a model's sentence says the sources do not hold the answer."""
    return bool(_DONT_KNOW.search(sentence))


@dataclass(frozen=True)
class Evidence:
    """One sentence of a retrieved passage and how well it answers the question (0-1)."""

    ref: int  # the passage's number, as the answer cites it ([ref])
    sentence: str
    score: float
    semantic: float  # cosine of the question's and the sentence's vectors (0 without an embedder)
    lexical: float  # share of the question's content words in the sentence's passage


class SentenceSupport(TypedDict):
    """One sentence of an answer: the passages that support it ([n] numbers), and whether any does."""

    text: str
    refs: list[int]
    supported: bool


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _coverage(wanted: set[str], have: set[str]) -> float:
    return len(wanted & have) / len(wanted) if wanted else 0.0


class Grounder:
    """The evidence and support checks of one agent; `embed` is the Pipeline's query embedder (None: words
    only, e.g. an embedder behind an HTTP endpoint the agent may not call per sentence)."""

    def __init__(self, embed: Embed | None = None) -> None:
        self.embed = embed

    def evidence(self, question: str, query: str, chunks: Sequence[Any]) -> list[Evidence]:
        """Every sentence of `chunks` (dicts with "text" and "title"), numbered as the answer cites them
        (1-based), scored against the question, best first.

        With an embedder the score is the cosine of the standalone `query` (a follow-up with its previous
        turn) and the sentence, plus half of how far that cosine stands above the mean over all the
        sentences (`CONTRAST`): an answer stands out of its passages, noise does not. Without one it is the
        share of the question's content words in the sentence's passage. Sentences rank by score, then by
        the share of the question's own words they contain (`RANK_WORDS`; a follow-up's new words pick the
        sentence among those its previous turn brought)."""
        candidates: list[tuple[int, str, set[str]]] = []
        for ref, chunk in enumerate(chunks, 1):
            passage_words = content_words(f"{chunk.get('title') or ''} {chunk['text']}")
            candidates.extend((ref, s, passage_words) for s in split_sentences(chunk["text"]))
        if not candidates:
            return []
        wanted = content_words(question) or content_words(query)
        vectors = self.embed([query, *(s for _, s, _ in candidates)]) if self.embed is not None else None
        semantic = [_cosine(vectors[0], v) for v in vectors[1:]] if vectors else [0.0] * len(candidates)
        average = sum(semantic) / len(semantic)
        out = []
        for (ref, sentence, passage_words), sem in zip(candidates, semantic, strict=True):
            lex = _coverage(wanted, passage_words)
            score = sem + CONTRAST * (sem - average) if vectors else lex
            out.append(Evidence(ref, sentence, round(score, 4), round(sem, 4), round(lex, 4)))
        own = {e.sentence: _coverage(wanted, content_words(e.sentence)) for e in out}
        out.sort(key=lambda e: (-(e.score + RANK_WORDS * own[e.sentence]), -own[e.sentence], e.ref))
        return out

    def support(self, sentence: str, chunks: Sequence[Any]) -> list[int]:
        """The passages (1-based numbers) that support one answer sentence, best first (empty: none does)."""
        bare = _REF.sub("", sentence).strip()
        words = content_words(bare)
        if not words:
            return []
        stated = numbers(bare)
        scored: list[tuple[float, int]] = []
        for ref, chunk in enumerate(chunks, 1):
            text = chunk["text"]
            passage_words = content_words(f"{chunk.get('title') or ''} {text}")
            overlap = _coverage(words, passage_words)
            if overlap < SUPPORT_OVERLAP or not stated <= numbers(text):
                continue
            closest = max(split_sentences(text) or [text], key=lambda s: len(words & content_words(s)))
            if negated(closest) != negated(bare):
                continue
            scored.append((overlap, ref))
        return [ref for _, ref in sorted(scored, key=lambda t: (-t[0], t[1]))]

    def check(self, answer: str, chunks: Sequence[Any]) -> list[SentenceSupport]:
        """Each sentence of `answer` with the passages that support it."""
        out: list[SentenceSupport] = []
        for sentence in split_sentences(answer):
            refs = self.support(sentence, chunks)
            out.append({"text": sentence, "refs": refs, "supported": bool(refs)})
        return out


def restates(sentence: str, quoted: Sequence[str]) -> bool:
    """Whether `sentence` only restates the quoted sentences: every content word and number of it is in them,
    and it agrees on negation with them. Measured on the labelled sets, a 135M model's paraphrases that bring
    one new word change the meaning ("40 percent discount" -> "receive 40 percent of every fare")."""
    bare = _REF.sub("", sentence).strip()
    words = content_words(bare)
    text = " ".join(quoted)
    return bool(words) and words <= content_words(text) and numbers(bare) <= numbers(text) \
        and negated(bare) == any(negated(q) for q in quoted)


def own_refs(sentence: str) -> list[int]:
    """The [n] numbers a sentence cites, in order, each once."""
    out: list[int] = []
    for match in _REF.finditer(sentence):
        out.extend(n for n in (int(x) for x in match.group(1).split(",")) if n not in out)
    return out


def cited_sentence(sentence: str, supporting: Sequence[int]) -> tuple[str, list[int]]:
    """The sentence as the answer shows it, and the sources it cites: as written when every reference it makes
    names a supporting source, else with its references replaced by the best supporting one, placed before the
    final punctuation ("... max [1].")."""
    own = own_refs(sentence)
    if own and set(own) <= set(supporting):
        return sentence.strip(), own
    bare = _REF.sub("", sentence).strip()
    if not supporting:
        return bare, []
    ref = f" [{supporting[0]}]"
    if bare and bare[-1] in ".!?":
        return bare[:-1] + ref + bare[-1], [supporting[0]]
    return bare + ref, [supporting[0]]


def quote_first(evidence: Sequence[Evidence]) -> list[Evidence]:
    """The sentences an extractive answer quotes: the best one, and a second (another sentence) when it scores
    nearly as well (`SECOND_QUOTE_RATIO`), in their passages' order."""
    if not evidence:
        return []
    best = evidence[0]
    picked = [best]
    for other in evidence[1:MAX_QUOTES * 4]:
        if len(picked) >= MAX_QUOTES:
            break
        if other.sentence != best.sentence and other.score >= SECOND_QUOTE_RATIO * best.score:
            picked.append(other)
    return picked


def quote(evidence: Evidence) -> str:
    """One quoted sentence with its citation: `"The default ... tokens." [1]`."""
    text = evidence.sentence.strip().strip('"')
    return f'"{text}" [{evidence.ref}]'


def answer_mode(setting: str, parameters: str | None) -> AnswerMode:
    """spec.agent.answerMode resolved: extractive or generative as set; auto is extractive for a model under
    EXTRACTIVE_BELOW_PARAMETERS ("135M", "7.6B"; unknown size: generative)."""
    if setting in ("extractive", "generative"):
        return setting  # type: ignore[return-value]
    if parameters:
        match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([MB])", parameters.strip())
        if match:
            count = float(match.group(1)) * (1e6 if match.group(2) == "M" else 1e9)
            return "extractive" if count < EXTRACTIVE_BELOW_PARAMETERS else "generative"
    return "generative"
