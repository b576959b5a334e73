"""Grounding (raylight_agents.grounding and the graphs' use of it): abstention from evidence, per-sentence
support of answers (streamed too), quote-first answers for small models. The real models' numbers are in
docs/grounding.md (`raylight eval` on the labelled sets)."""

from __future__ import annotations

import pytest
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, WordEmbedder, connections
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from raylight.api.connections import LLMConnection
from raylight.api.types import PipelineSpec
from raylight_agents.agent import Agent, Turn, running
from raylight_agents.graphs.base import DONT_KNOW, QUOTE_PREFIX, Chunk, SentenceGate
from raylight_agents.grounding import (
    Grounder,
    answer_mode,
    cited_sentence,
    quote_first,
    split_sentences,
)

FERRY = [
    Doc("t1", "The crossing takes 55 minutes in normal weather. In winter there are four sailings a day.",
        "timetable.md"),
    Doc("k1", "A return ticket costs 24 euros. Tickets bought on board cost 3 euros more.", "tickets.md"),
    Doc("v1", "Passengers are not allowed to stay on the car deck during the crossing.", "vehicles.md"),
]
CHUNKS: list[Chunk] = [{"id": d.id, "source": d.source, "title": None, "text": d.text, "score": 1.0}
                        for d in FERRY]


def spec(mode: str = "auto", min_score: float = 0.3, graph: str = "rag") -> PipelineSpec:
    return PipelineSpec.model_validate({
        "embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
        "retrieval": {"topK": 3, "minScore": min_score}, "agent": {"graph": graph, "answerMode": mode}})


def agent(llm: ScriptedLLM, s: PipelineSpec, parameters: str | None = None) -> Agent:
    conn = connections(llm=LLMConnection(model="tiny", base_url="http://llm.test/v1", parameters=parameters))
    retriever = MemoryRetriever(FERRY)
    return Agent("ferry", s, conn, retriever=lambda: retriever, llm=llm.llm())


# ---------------------------------------------------------------- the checks


def test_a_sentence_is_supported_only_by_a_passage_with_its_words_numbers_and_polarity() -> None:
    grounder = Grounder()
    assert grounder.support("The crossing takes 55 minutes.", CHUNKS) == [1]
    assert grounder.support("The crossing takes 50 minutes.", CHUNKS) == []  # a number the source never states
    assert grounder.support("Passengers are allowed to stay on the car deck.", CHUNKS) == []  # the opposite
    assert grounder.support("Passengers may not stay on the car deck during the crossing.", CHUNKS) == [3]
    assert grounder.support("Dogs must wear a muzzle on the lounge sofa.", CHUNKS) == []  # words not there
    assert grounder.support("[2]", CHUNKS) == []  # no content at all


def test_evidence_ranks_the_answering_sentence_first_with_its_passage_number() -> None:
    evidence = Grounder(WordEmbedder().embed).evidence("What does a return ticket cost?",
                                                       "What does a return ticket cost?", CHUNKS)
    assert (evidence[0].ref, evidence[0].sentence) == (2, "A return ticket costs 24 euros.")
    assert evidence[0].score > evidence[-1].score
    assert len(evidence) == 5  # every sentence of every passage


def test_cited_sentence_keeps_supporting_references_and_replaces_the_others() -> None:
    assert cited_sentence("It takes 55 minutes [1].", [1]) == ("It takes 55 minutes [1].", [1])
    assert cited_sentence("It takes 55 minutes [2].", [1, 3]) == ("It takes 55 minutes [1].", [1])
    assert cited_sentence("It takes 55 minutes", [3]) == ("It takes 55 minutes [3]", [3])
    assert cited_sentence("It takes 55 minutes [2].", []) == ("It takes 55 minutes.", [])


def test_answer_mode_is_extractive_below_one_billion_parameters_unless_set() -> None:
    assert answer_mode("auto", "135M") == "extractive"
    assert answer_mode("auto", "999M") == "extractive"
    assert answer_mode("auto", "1B") == "generative"
    assert answer_mode("auto", "7.6B") == "generative"
    assert answer_mode("auto", None) == "generative"  # an external model of unknown size
    assert answer_mode("generative", "135M") == "generative"
    assert answer_mode("extractive", "70B") == "extractive"


def test_quote_first_takes_a_second_sentence_only_when_it_scores_nearly_as_well() -> None:
    evidence = Grounder(WordEmbedder().embed).evidence("How long is the crossing in winter, and how many sailings?",
                                                       "How long is the crossing in winter?", CHUNKS)
    quotes = quote_first(evidence)
    assert 1 <= len(quotes) <= 2 and quotes[0] == evidence[0]
    assert all(q.score >= 0.9 * evidence[0].score for q in quotes)


def test_split_sentences_skips_headings_and_list_markers() -> None:
    assert split_sentences("# Title\n- First one. Second 2.\n3. Third") == ["First one.", "Second 2.", "Third"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=40))
def test_the_gate_sends_the_same_sentences_however_the_tokens_are_cut(cuts: list[int]) -> None:
    text = ("The crossing takes 55 minutes [1]. It is 50 minutes [1]. A return ticket costs 24 euros. "
            "Dogs fly free [2].\nPassengers are not allowed to stay on the car deck [3].")
    whole = SentenceGate(Grounder(), CHUNKS)
    sent_whole = whole.feed(text) + whole.flush()
    gate = SentenceGate(Grounder(), CHUNKS)
    parts, at = [], 0
    for size in cuts:
        parts.append(gate.feed(text[at:at + size]))
        at += size
    parts.append(gate.feed(text[at:]))
    parts.append(gate.flush())
    assert "".join(parts) == sent_whole == gate.answer == whole.answer
    assert gate.support == whole.support
    assert [s["supported"] for s in gate.support] == [True, False, True, False, True]
    assert gate.answer == ("The crossing takes 55 minutes [1]. A return ticket costs 24 euros [2]. "
                           "Passengers are not allowed to stay on the car deck [3].")


# ---------------------------------------------------------------- the graphs


@pytest.mark.parametrize("graph", ["rag", "agentic-rag"])
async def test_below_min_score_the_agent_abstains_with_the_closest_sources_without_the_model(graph: str) -> None:
    llm = ScriptedLLM(lambda body: '{"relevant": [1]}' if "json_schema" in str(body) else "It is 55 minutes [1].")
    async with running(agent(llm, spec(min_score=1.5, graph=graph))) as a:
        out = await a.invoke(Turn("How long does the crossing take?"))
    assert out["grounding"] == "none" and out["answer"].startswith(DONT_KNOW + " Closest sources: ")
    assert "timetable.md" in out["answer"] and out["citations"][0]["source"] == "timetable.md"
    assert out["support"] == [] and out["evidence_score"] < 1.5
    assert llm.answer_calls() == []


async def test_a_small_model_answers_quote_first_then_a_checked_paraphrase_streamed_or_not() -> None:
    llm = ScriptedLLM(lambda body: "The crossing takes 55 minutes.")
    async with running(agent(llm, spec(), parameters="135M")) as a:
        plain = await a.invoke(Turn("How long does the crossing take?"))
        events = [e async for e in a.events(Turn("How long does the crossing take?"))]
    quote = '"The crossing takes 55 minutes in normal weather." [1]'
    assert plain["answer"].startswith(QUOTE_PREFIX + quote)
    assert plain["answer"].endswith(" The crossing takes 55 minutes [1].")
    assert plain["grounding"] == "cited" and all(s["supported"] for s in plain["support"])
    assert "".join(d["text"] for k, d in events if k == "token") == events[-1][1]["answer"] == plain["answer"]
    assert events[-1][1]["support"] == plain["support"]


async def test_a_paraphrase_that_flips_the_source_is_dropped() -> None:
    llm = ScriptedLLM(lambda body: "Passengers are allowed to stay on the car deck.")
    async with running(agent(llm, spec(mode="extractive"))) as a:
        out = await a.invoke(Turn("Can passengers stay on the car deck during the crossing?"))
    ref = out["citations"][0]["ref"]
    assert out["citations"][0]["source"] == "vehicles.md"
    assert out["answer"] == (QUOTE_PREFIX + '"Passengers are not allowed to stay on the car deck during the '
                             f'crossing." [{ref}]')  # the paraphrase is not there


async def test_generative_answers_keep_supported_sentences_with_citations_and_flag_the_rest() -> None:
    llm = ScriptedLLM(lambda body: "The crossing takes 55 minutes [2]. Dogs travel free of charge [1].")
    async with running(agent(llm, spec(mode="generative"))) as a:
        plain = await a.invoke(Turn("How long does the crossing take?"))
        events = [e async for e in a.events(Turn("How long does the crossing take?"))]
    assert plain["answer"] == "The crossing takes 55 minutes [1]."  # its [2] did not support it
    assert plain["support"] == [
        {"text": "The crossing takes 55 minutes [1].", "refs": [1], "supported": True},
        {"text": "Dogs travel free of charge.", "refs": [], "supported": False}]
    assert [c["source"] for c in plain["citations"]] == ["timetable.md"]
    assert "".join(d["text"] for k, d in events if k == "token") == events[-1][1]["answer"] == plain["answer"]


async def test_a_generative_answer_with_no_supported_sentence_falls_back_to_quoting() -> None:
    llm = ScriptedLLM(lambda body: "It is a cloud service for web development.")
    async with running(agent(llm, spec(mode="generative"))) as a:
        out = await a.invoke(Turn("How long does the crossing take?"))
    assert out["answer"].startswith(QUOTE_PREFIX + '"The crossing takes 55 minutes')
    assert out["support"][0] == {"text": "It is a cloud service for web development.", "refs": [],
                                 "supported": False}


async def test_a_model_that_says_it_does_not_know_makes_the_agent_abstain() -> None:
    llm = ScriptedLLM(lambda body: "The sources do not mention that.")
    async with running(agent(llm, spec(mode="generative"))) as a:
        out = await a.invoke(Turn("How long does the crossing take?"))
    assert out["grounding"] == "none" and out["answer"].startswith(DONT_KNOW)


def test_min_score_and_answer_mode_are_validated_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match=r"minScore|min_score"):
        spec(min_score=-0.1)
    with pytest.raises(ValidationError, match=r"answerMode|answer_mode"):
        spec(mode="creative")
    assert PipelineSpec.model_validate({"embedder": {"modelDeployment": "m"}}).retrieval.min_score == 0.65


def test_a_paraphrase_restates_only_with_the_quotes_words_numbers_and_negation() -> None:
    from raylight_agents.grounding import restates

    quote = ["Island residents with a resident card get a 40 percent discount on every fare."]
    assert restates("Residents with a card get a 40 percent discount [1].", quote)
    assert not restates("Islanders receive 40 percent of every fare.", quote)  # new words change the meaning
    assert not restates("Residents get a 50 percent discount.", quote)  # a number the quote does not state
    assert not restates("Residents do not get a discount.", quote)  # the opposite
