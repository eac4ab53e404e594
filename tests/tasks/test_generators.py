"""Generated tasks: determinism, seeds, length fitting, needle placement, recorded metadata."""

from __future__ import annotations

import pytest

from kvlab.prompting import render
from kvlab.tasks import MODES, get_task
from kvlab.tasks.text import sent_tokenize

SYNTHETIC = ["ruler/niah_single_1", "ruler/niah_single_2", "ruler/niah_single_3", "ruler/niah_multikey_1",
             "ruler/niah_multikey_2", "ruler/niah_multikey_3", "ruler/niah_multivalue", "ruler/niah_multiquery",
             "ruler/vt", "ruler/cwe", "ruler/fwe", "niah/single", "niah/multi", "shared/multikey", "shared/kv"]
# haystack units bigger than 1% of the target: one distractor line / one JSON pair of UUIDs (~70 tokens);
# fwe: one more word can raise several Zipf counts at once (steps of up to ~26 tokens)
COARSE = {"ruler/niah_multikey_3": 80, "shared/kv": 80, "ruler/niah_multikey_2": 45, "ruler/fwe": 30}


def worst_tokens(tokenizer, sample, chat):
    return max(render(tokenizer, sample.parts(q, m), chat).num_tokens + q.max_new_tokens
               for q in sample.queries for m in MODES)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic_and_seed_dependent(tokenizer, name):
    task = get_task(name)
    a = task.samples(tokenizer, 1024, 2, seed=7)
    b = task.samples(tokenizer, 1024, 2, seed=7)
    c = task.samples(tokenizer, 1024, 2, seed=8)
    assert [(s.context, s.queries) for s in a] == [(s.context, s.queries) for s in b]
    assert a[0].context != c[0].context or a[0].queries != c[0].queries
    assert a[0].queries[0].answers != a[1].queries[0].answers or a[0].context != a[1].context


def test_sample_does_not_depend_on_n(tokenizer):
    task = get_task("ruler/niah_single_2")
    one = task.samples(tokenizer, 1024, 1, seed=3)[0]
    three = task.samples(tokenizer, 1024, 3, seed=3)
    assert (one.context, one.queries) == (three[0].context, three[0].queries)


@pytest.mark.parametrize(("length", "chat"), [(2048, "none"), (4096, "template")])
@pytest.mark.parametrize("name", SYNTHETIC)
def test_length_lands_just_below_target(tokenizer, name, length, chat):
    for sample in get_task(name).samples(tokenizer, length, 1, seed=length, chat=chat):
        total = worst_tokens(tokenizer, sample, chat)
        assert total == sample.metadata["total_tokens"] <= length
        slack = max(0.01 * length, COARSE.get(name, 0))
        assert length - total <= slack, f"{name}: {total} tokens for a {length} target"
        assert sample.metadata["length"] == length
        assert sample.metadata["chat"] == chat and sample.metadata["chat_requested"] == chat
        assert "answer_prefix_placement" in sample.metadata


def test_ruler_qa_like_max_new_tokens_counted(tokenizer):
    (s,) = get_task("ruler/cwe").samples(tokenizer, 4096, 1)
    assert s.queries[0].max_new_tokens == 120
    assert s.metadata["prompt_tokens"] + 120 == s.metadata["total_tokens"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_answers_are_in_the_context(tokenizer, name):
    for sample in get_task(name).samples(tokenizer, 2048, 2, seed=5):
        for q in sample.queries:
            if name in ("ruler/cwe", "ruler/fwe", "ruler/vt"):
                assert all(a in sample.context for a in q.answers)
            else:  # retrieval: each answer appears exactly once, next to its key
                assert all(sample.context.count(a) == 1 for a in q.answers)


@pytest.mark.parametrize("length", [1024, 4096])
def test_grid_needle_sits_at_requested_depth(tokenizer, length):
    depths = [0, 10, 25, 33, 50, 75, 90, 100]
    task = get_task("niah/single", depths=",".join(map(str, depths)))
    samples = task.samples(tokenizer, length, len(depths), seed=length)
    assert [s.metadata["depth"] for s in samples] == depths
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    for s in samples:
        doc = s.context.split("<Document>\n", 1)[1].rsplit("\n</Document>", 1)[0]
        before, after = doc.split("One of the special magic numbers", 1)
        after = after.split(". ", 1)[1] if ". " in after else ""
        position = s.metadata["needle_token_position"]
        assert abs(count(before.rstrip()) - position) <= 1  # the metadata agree with the text
        if s.metadata["depth"] == 0:
            assert position == 0
        # the needle sits at a sentence boundary, the one nearest the requested depth: the target lies
        # within the sentence just before or just after it
        target = s.metadata["depth"] / 100 * s.metadata["haystack_tokens"]
        previous = count(sent_tokenize(before)[-1]) if before.strip() else 0
        following = count(sent_tokenize(after)[0]) if after.strip() else 0
        assert position - previous - 2 <= target <= position + following + 2, s.metadata


def test_multi_needle_depths_spread_evenly(tokenizer):
    (s,) = get_task("niah/multi", depths="20").samples(tokenizer, 4096, 1)
    assert s.metadata["needle_depths"] == [20, 40, 60, 80]
    doc = s.context.split("<Document>\n", 1)[1]
    positions = [doc.index(f"is: {v}.") / len(doc) * 100 for v in s.queries[0].answers]
    assert positions == sorted(positions)
    for got, want in zip(positions, [20, 40, 60, 80]):
        assert abs(got - want) < 4


def test_ruler_essay_needle_depth_metadata_matches_text(tokenizer):
    for s in get_task("ruler/niah_single_2").samples(tokenizer, 4096, 4, seed=2):
        value = s.queries[0].answers[0]
        body = s.context.split("afterwards.\n", 1)[1]
        measured = 100 * body.index(value) / len(body)
        assert abs(measured - s.metadata["depth"]) < 1.0


def test_shared_context_has_distinct_queries(tokenizer):
    for s in get_task("shared/multikey", num_keys=6, num_queries=5).samples(tokenizer, 2048, 2):
        assert len(s.queries) == 5
        assert len({q.question for q in s.queries}) == 5
        assert len({q.answers for q in s.queries}) == 5
        assert all(q.question not in s.context for q in s.queries)
        assert s.context.count("One of the special magic numbers") == 6


def test_too_short_target_is_a_clear_error(tokenizer):
    from kvlab.errors import KvlabError

    with pytest.raises(KvlabError, match="too short"):
        get_task("ruler/vt").samples(tokenizer, 200, 1)
