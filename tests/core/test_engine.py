"""The engine: greedy equals transformers, seeded sampling, stop strings, reuse, errors, log-probs."""

from __future__ import annotations

import pytest
import torch
from tinymodels import kv_layers, random_ids

from kvlab.engine import check_fits, continue_generation, generate, prefill_context, token_logprobs
from kvlab.errors import KvlabError, PromptTooLongError
from kvlab.methods import get_method
from kvlab.prompting import RenderedPrompt
from kvlab.sampling import SamplingParams, TextAssembler


def rendered(ids, suffix=()):
    return RenderedPrompt(context_ids=list(ids), suffix_ids=list(suffix), text="", chat="none")


def test_greedy_full_equals_transformers_generate(tiny):
    ids = random_ids(50, seed=21)
    with torch.no_grad():
        hf = tiny.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, 50:].tolist()
    ours = generate(tiny, rendered(ids), max_new_tokens=10).token_ids
    assert ours == hf


def test_sampling_is_deterministic_for_a_seed(tiny_llama):
    prompt = rendered(random_ids(30, seed=22))
    a = generate(tiny_llama, prompt, max_new_tokens=12, temperature=1.0, seed=7).token_ids
    b = generate(tiny_llama, prompt, max_new_tokens=12, temperature=1.0, seed=7).token_ids
    c = generate(tiny_llama, prompt, max_new_tokens=12, temperature=1.0, seed=8).token_ids
    assert a == b and a != c


def test_tiny_top_p_is_greedy(tiny_llama):
    prompt = rendered(random_ids(30, seed=23))
    greedy = generate(tiny_llama, prompt, max_new_tokens=8).token_ids
    assert generate(tiny_llama, prompt, max_new_tokens=8, temperature=1.0, top_p=1e-6, seed=1).token_ids == greedy


class CharTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def test_text_assembler_cuts_at_stop_and_holds_back_prefixes():
    asm = TextAssembler(CharTokenizer(), stop=("END",))
    deltas = [asm.add(ord(c)) for c in "abcEN"]
    assert "".join(deltas) == "abc"  # "EN" could start "END": held back
    assert asm.add(ord("X")) == "ENX"
    for c in "yEND":
        asm.add(ord(c))
    assert asm.stopped and asm.text == "abcENXy"


def test_reused_context_is_left_intact(tiny_llama):
    prefilled = prefill_context(tiny_llama, random_ids(80, seed=24), "snapkv", 30, None)
    held = prefilled.cache.bytes_held
    lengths = [layer.length for layer in kv_layers(prefilled.cache)]
    params = SamplingParams(max_new_tokens=6)
    first = continue_generation(prefilled, random_ids(5, seed=25), params, copy=True)
    second = continue_generation(prefilled, random_ids(5, seed=25), params, copy=True)
    other = continue_generation(prefilled, random_ids(5, seed=26), params, copy=True)
    assert first.token_ids == second.token_ids and first.token_ids != other.token_ids
    assert prefilled.cache.bytes_held == held and [lay.length for lay in kv_layers(prefilled.cache)] == lengths
    fresh = prefill_context(tiny_llama, random_ids(80, seed=24), "snapkv", 30, None)
    assert continue_generation(fresh, random_ids(5, seed=25), params).token_ids == first.token_ids


def test_stats_account_bytes(tiny_llama):
    out = generate(tiny_llama, rendered(random_ids(100, seed=27)), method="snapkv", budget="25%",
                   chunk_size=None, max_new_tokens=4)
    s = out.stats
    spec = tiny_llama.spec
    assert s.prompt_tokens == 100 and s.kv_tokens == 25
    assert s.kv_bytes == 25 * spec.kv_bytes_per_token and s.full_kv_bytes == 100 * spec.kv_bytes_per_token
    assert s.peak_kv_bytes >= s.kv_bytes and s.new_tokens == 4 and s.finish_reason == "length"
    # four tokens: the first from the prefill's logits, three decoding steps; the first timed apart
    assert s.decode_steps == 3 and 0 < s.first_step_seconds <= s.decode_seconds


def test_prompt_longer_than_the_window_says_what_fits(tiny_llama):
    window = tiny_llama.spec.max_positions
    check_fits(tiny_llama, window - 10, 10, get_method("full"))  # exactly fits
    with pytest.raises(PromptTooLongError) as err:
        generate(tiny_llama, rendered(random_ids(window - 5)), method="snapkv", budget=64, max_new_tokens=10)
    assert str(window) in str(err.value) and "--max-new-tokens 5" in str(err.value)


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0.0)])
def test_bad_sampling_values_are_user_errors(tiny_llama, bad):
    with pytest.raises(KvlabError):
        generate(tiny_llama, rendered(random_ids(10)), **{"max_new_tokens": 4, **bad})


def test_empty_context_is_a_user_error(tiny_llama):
    with pytest.raises(KvlabError, match="empty"):
        prefill_context(tiny_llama, [], "full")


def test_token_logprobs_full_equals_a_plain_forward(tiny):
    ids = random_ids(64, seed=28)
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0].float()
    expected = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1))[:, 0]
    torch.testing.assert_close(token_logprobs(tiny, ids, "full", None, chunk_size=16), expected,
                               rtol=1e-4, atol=1e-4)


def test_token_logprobs_under_eviction_differ_only_after_the_budget(tiny_llama):
    ids = random_ids(64, seed=29)
    full = token_logprobs(tiny_llama, ids, "full", None, chunk_size=16)
    evicted = token_logprobs(tiny_llama, ids, "streaming_llm", 24, chunk_size=16)
    torch.testing.assert_close(evicted[:15], full[:15], rtol=1e-4, atol=1e-4)  # first chunk: nothing evicted yet
    assert not torch.allclose(evicted[40:], full[40:])
