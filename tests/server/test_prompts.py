"""How requests are split into the reusable context and the suffix (embedded model's tokenizer)."""

from __future__ import annotations

import pytest

from kvlab.server.prompts import PromptError, chat_prompt, completion_prompt

DOC = "The warehouse in Lyon stores 420 crates of olive oil. " * 12


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from kvlab.models.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


def full_ids(tok, messages):
    chat = [{"role": r, "content": c} for r, c in messages]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def test_split_at_the_last_user_message_keeps_the_document_as_context(tok):
    a = chat_prompt(tok, [("system", DOC), ("user", "How many crates?")])
    b = chat_prompt(tok, [("system", DOC), ("user", "Which city?")])
    assert a.split == b.split == "last_user"
    assert a.context_ids == b.context_ids  # same document -> same cache key
    assert tok.decode(a.context_ids).endswith("<|im_start|>user\n") and DOC.strip() in tok.decode(a.context_ids)
    assert tok.decode(a.suffix_ids) == "How many crates?<|im_end|>\n<|im_start|>assistant\n"
    whole = full_ids(tok, [("system", DOC), ("user", "How many crates?")])
    assert tok.decode(a.context_ids + a.suffix_ids) == tok.decode(whole)


def test_earlier_turns_are_context(tok):
    messages = [("user", DOC), ("assistant", "Noted."), ("user", "How many crates?")]
    split = chat_prompt(tok, messages)
    assert split.split == "last_user" and "Noted." in tok.decode(split.context_ids)


def test_a_last_message_longer_than_the_rest_is_compressed_with_the_prompt(tok):
    split = chat_prompt(tok, [("user", DOC + "How many crates?")])
    assert split.split == "whole" and split.suffix_ids == []
    assert split.context_ids == full_ids(tok, [("user", DOC + "How many crates?")])


def test_marked_context_splits_inside_the_message(tok):
    a = chat_prompt(tok, [("user", DOC + "How many crates?")], context=DOC)
    b = chat_prompt(tok, [("user", DOC + "Which city?")], context=DOC)
    assert a.split == "marked" and a.context_ids == b.context_ids
    assert tok.decode(a.suffix_ids).startswith("How many crates?")
    with pytest.raises(PromptError) as info:
        chat_prompt(tok, [("user", "Which city? " + DOC)], context=DOC)
    assert info.value.param == "kvlab.context"


def test_chat_needs_a_user_message(tok):
    with pytest.raises(PromptError, match="user"):
        chat_prompt(tok, [("system", DOC)])


def test_completion_prompt_is_all_context_unless_marked(tok):
    whole = completion_prompt(tok, DOC + "Q: how many?")
    assert whole.split == "whole" and whole.suffix_ids == []
    assert whole.context_ids == tok(DOC + "Q: how many?")["input_ids"]
    marked = completion_prompt(tok, DOC + "Q: how many?", context=DOC)
    assert marked.split == "marked" and marked.context_ids == tok(DOC)["input_ids"]
    assert tok.decode(marked.suffix_ids) == "Q: how many?"
    with pytest.raises(PromptError):
        completion_prompt(tok, "Q: " + DOC, context=DOC)
    with pytest.raises(PromptError):
        completion_prompt(tok, "")
