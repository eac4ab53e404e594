"""Prompt text equals RULER's templates (NVIDIA/RULER scripts/data/synthetic/constants.py, niah.py)."""

from __future__ import annotations

import re

import pytest

from kvlab.prompting import PromptParts, render
from kvlab.tasks import get_task

# Copied verbatim from RULER's constants.py (commit c3f5e3b4f87f): the tests compare against these.
RULER = {
    "niah": ("Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?",
             " The special magic {type_needle_v} for {query} mentioned in the provided text are"),
    "variable_tracking": ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.",
                          " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are: "),
    "common_words_extraction": ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?",
                                " Answer: The top 10 words that appear most often in the list are:"),
    "freq_words_extraction": ("Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?",
                              " Answer: According to the coded text above, the three most frequently appeared words are:"),
    "qa": ("Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
           " Answer:"),
}
SINGLE_NIAH = ("A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you "
               "about the number afterwards.\n{context}\nWhat is the special magic number for {query} mentioned in "
               "the provided text? The special magic number for {query} mentioned in the provided text is")


def test_constants_equal_ruler():
    from kvlab.tasks import ruler_niah, ruler_qa, ruler_vt, ruler_words

    assert (ruler_niah.TEMPLATE, ruler_niah.ANSWER_PREFIX) == RULER["niah"]
    assert (ruler_vt.TEMPLATE, ruler_vt.ANSWER_PREFIX) == RULER["variable_tracking"]
    assert (ruler_words.CWE_TEMPLATE, ruler_words.CWE_ANSWER_PREFIX) == RULER["common_words_extraction"]
    assert (ruler_words.FWE_TEMPLATE, ruler_words.FWE_ANSWER_PREFIX) == RULER["freq_words_extraction"]
    assert (ruler_qa.TEMPLATE, ruler_qa.ANSWER_PREFIX) == RULER["qa"]
    assert (ruler_niah.TOKENS_TO_GENERATE, ruler_vt.TOKENS_TO_GENERATE, ruler_qa.TOKENS_TO_GENERATE) == (128, 30, 32)


def plain_text(tokenizer, sample):
    q = sample.queries[0]
    return render(tokenizer, PromptParts(sample.context + q.question, "", q.answer_prefix), "none").text


def test_single_niah_prompt_is_ruler_text(tokenizer):
    (s,) = get_task("ruler/niah_single_2").samples(tokenizer, 1024, 1, chat="none")
    key = s.metadata["query_keys"][0]
    context = s.context.split("afterwards.\n", 1)[1]
    expected = SINGLE_NIAH.format(context=context, query=key)
    assert plain_text(tokenizer, s) == expected
    assert s.queries[0].max_new_tokens == 128


def test_multi_niah_prompt_is_ruler_text(tokenizer):
    (s,) = get_task("ruler/niah_multiquery").samples(tokenizer, 1024, 1, chat="none")
    keys = s.metadata["query_keys"]
    query = ", ".join(keys[:-1]) + ", and " + keys[-1]
    template, prefix = RULER["niah"]
    context = s.context.split("afterwards.\n", 1)[1]
    assert plain_text(tokenizer, s) == (template + prefix).format(type_needle_v="numbers", context=context, query=query)
    for key, value in zip(keys, s.queries[0].answers):
        assert f"One of the special magic numbers for {key} is: {value}." in s.context


def test_vt_prompt_has_icl_example_then_ruler_text(tokenizer):
    (s,) = get_task("ruler/vt").samples(tokenizer, 2048, 1, chat="none")
    text = plain_text(tokenizer, s)
    example, rest = text.split("\n\nMemorize and track", 1)  # RULER: example + "\n" + task text
    task = "Memorize and track" + rest
    assert example.startswith("Memorize and track")
    value = re.search(r"assigned the value (\d+) in", task).group(1)
    template, prefix = RULER["variable_tracking"]
    assert task.startswith(template.split("{context}")[0]) and task.endswith(
        template.split("{context}")[1].format(query=value) + prefix.format(num_v=5, query=value))
    # the in-context example is solved: five 3-letter names after its own answer prefix
    assert re.search(r"they are:  [A-Z]{3} [A-Z]{3} [A-Z]{3} [A-Z]{3} [A-Z]{3}$", example.strip("\n"))
    names = s.queries[0].answers
    assert len(names) == 5 and all(len(n) == 5 and n.isupper() for n in names)
    assert f"VAR {names[0]} = {value}" in s.context


def test_cwe_has_solved_fewshot_example(tokenizer):
    (s,) = get_task("ruler/cwe").samples(tokenizer, 4096, 1, chat="none")
    head = RULER["common_words_extraction"][0].split("{context}")[0]
    assert s.context.startswith(head) and s.context.count(head) == 2
    assert RULER["common_words_extraction"][1] + " 1. " in s.context
    listing = s.context.rsplit(head, 1)[1]
    words = re.findall(r"\d+\. (\S+)", listing)
    counts = {w: words.count(w) for w in set(words)}
    assert sorted(counts[w] for w in s.queries[0].answers) == [30] * 10
    assert set(counts.values()) == {30, 3}


def test_fwe_answers_are_the_three_most_frequent(tokenizer):
    (s,) = get_task("ruler/fwe").samples(tokenizer, 4096, 1, chat="none")
    words = s.context.split("coded words. ", 1)[1].split()
    counts = sorted(((words.count(w), w) for w in set(words)), reverse=True)
    assert counts[0][1] == "..."
    assert [w for _, w in counts[1:4]] == list(s.queries[0].answers)


@pytest.mark.parametrize("chat", ["template", "none"])
def test_answer_prefix_placement_is_recorded_and_applied(tokenizer, chat):
    (s,) = get_task("ruler/niah_single_1").samples(tokenizer, 1024, 1, chat=chat)
    q = s.queries[0]
    text = render(tokenizer, s.parts(q, "query_agnostic"), chat).text
    assert text.endswith(q.answer_prefix)
    if chat == "template":
        assert text.endswith("<|im_start|>assistant\n" + q.answer_prefix)
        assert "assistant" in s.metadata["answer_prefix_placement"]
    else:
        assert "<|im_start|>" not in text
