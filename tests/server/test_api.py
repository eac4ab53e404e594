"""The OpenAI routes through the official client: chat and completions, streaming and not, sampling
fields, per-request method override and context reuse."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

import httpx
from serve_helpers import MODEL, contract

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France? Answer in one word."


def kvlab_info(obj) -> dict:
    info = obj.model_extra["kvlab"]
    assert info is not None
    return info


def chat(client, content: str = QUESTION, **kwargs):
    kwargs.setdefault("max_tokens", 8)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].model_extra["max_model_len"] == 8192
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_answers_with_usage_and_kvlab_stats(client):
    out = chat(client)
    assert out.object == "chat.completion" and out.model == MODEL
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert "paris" in choice.message.content.lower()
    assert choice.finish_reason in ("stop", "length")
    info = kvlab_info(out)
    assert info["method"] == "full" and info["budget"] == "full"
    assert out.usage.prompt_tokens == info["context_tokens"] + info["suffix_tokens"]
    assert 1 <= out.usage.completion_tokens <= 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert info["kv_bytes"] == info["full_kv_bytes"] > 0  # the full cache holds the whole prompt


def test_chat_stream_matches_non_stream(client):
    whole = chat(client, max_tokens=12)
    chunks = list(chat(client, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert kvlab_info(finals[0])["method"] == "full"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_stream_matches_non_stream_and_respects_max_tokens(client):
    kwargs = dict(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
    whole = client.completions.create(**kwargs)
    assert whole.object == "text_completion"
    assert whole.usage.completion_tokens == 5 and whole.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length" and kvlab_info(chunks[-1])["reused"] in (True, False)


def test_stream_ends_with_done(server):
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body,
                      headers={"Authorization": "Bearer sk-kvlab-test"}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 2


def test_stop_string_cuts_the_text(client):
    base = client.completions.create(model=MODEL, prompt="One, two, three, four,", max_tokens=12, temperature=0)
    text = base.choices[0].text
    stop = text.strip()[2:5]
    assert stop and stop in text
    cut = client.completions.create(model=MODEL, prompt="One, two, three, four,", max_tokens=12, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(client):
    a, b = (chat(client, "Tell me a story.", temperature=1.0, top_p=0.9, seed=7, max_tokens=10) for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content


def test_method_and_budget_override_per_request(client):
    document = contract()
    messages = [{"role": "system", "content": document}, {"role": "user", "content": "Who signs for the Buyer?"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0,
                                         extra_body={"kvlab": {"method": "snapkv", "budget": "64"}})
    info = kvlab_info(out)
    assert info["method"] == "snapkv" and info["budget"] == "64"
    assert info["context_tokens"] > 200 and info["kv_tokens"] <= 64 + info["suffix_tokens"]
    assert info["kv_bytes"] < info["full_kv_bytes"] / 2
    default = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    assert kvlab_info(default)["method"] == "full"
    assert kvlab_info(default)["kv_bytes"] == kvlab_info(default)["full_kv_bytes"]


@pytest.mark.parametrize("method", ["full", "snapkv"])
def test_shared_document_is_prefilled_once_and_reused(client, server, method):
    """Same document, different questions: the second request reuses the compressed document and
    answers exactly as a request that prefills it from scratch (reuse: false)."""
    document = contract(("Fabrikam " + method, "Litware"))
    options = {"method": method, "budget": "96"}

    def ask(question: str, **extra):
        messages = [{"role": "system", "content": document}, {"role": "user", "content": question}]
        return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                              extra_body={"kvlab": {**options, **extra}})

    hits = server.health()["context_cache"]["hits"]
    first = ask("Who is the Supplier?")
    second = ask("How many units are in batch 3?")
    fresh = ask("How many units are in batch 3?", reuse=False)
    assert [kvlab_info(r)["reused"] for r in (first, second, fresh)] == [False, True, False]
    assert kvlab_info(second)["context_tokens"] == kvlab_info(first)["context_tokens"]
    assert second.choices[0].message.content == fresh.choices[0].message.content
    assert kvlab_info(second)["kv_bytes"] == kvlab_info(fresh)["kv_bytes"]
    assert server.health()["context_cache"]["hits"] == hits + 1


def test_completion_context_marks_the_shared_prefix(client):
    document = contract(("Adatum", "Tailspin")) + "\n\n"
    kwargs = dict(model=MODEL, max_tokens=4, temperature=0)
    first = client.completions.create(prompt=document + "Question: who is the Buyer?\nAnswer:",
                                      extra_body={"kvlab": {"context": document}}, **kwargs)
    second = client.completions.create(prompt=document + "Question: who is the Supplier?\nAnswer:",
                                       extra_body={"kvlab": {"context": document}}, **kwargs)
    assert (kvlab_info(first)["reused"], kvlab_info(second)["reused"]) == (False, True)
    assert kvlab_info(first)["suffix_tokens"] > 0
    assert kvlab_info(first)["context_tokens"] == kvlab_info(second)["context_tokens"]
