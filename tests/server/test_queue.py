"""The single worker's bounded queue (429 beyond it) and cancellation when a client disconnects.

Long generations keep the worker busy: counting continues for thousands of tokens (minutes on
CPU), so a job that ends within the deadlines below was cancelled, which the worker's
``cancelled`` counter confirms (a generation cannot reach that state on its own).
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_helpers import MODEL

pytestmark = pytest.mark.slow

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
FREED_WITHIN_S = 15.0  # the cancelled generation alone would run for minutes


def long_stream(client, **kwargs):
    return client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=4000, temperature=0, stream=True,
                                     **kwargs)


def first_text(stream) -> str:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            return chunk.choices[0].text
    pytest.fail("the stream ended before any text")


def wait_for(server, predicate, deadline_s: float) -> dict:
    end = time.monotonic() + deadline_s
    while True:
        state = server.health()
        if predicate(state):
            return state
        if time.monotonic() > end:
            pytest.fail(f"condition not reached in {deadline_s} s: {state}")
        time.sleep(0.05)


def test_disconnect_cancels_the_generation_and_frees_the_worker(server, client):
    before = server.wait_idle()["worker"]
    stream = long_stream(client)
    assert first_text(stream)
    assert server.health()["worker"]["busy"]
    stream.close()  # the client goes away mid-generation
    after = server.wait_idle(FREED_WITHIN_S)["worker"]
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["completed"] == before["completed"]
    out = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, temperature=0)
    assert out.usage.completion_tokens >= 1


def test_non_streaming_disconnect_also_cancels(server):
    before = server.wait_idle()["worker"]
    impatient = server.client(timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model=MODEL, prompt=COUNTING, max_tokens=4000, temperature=0)
    after = server.wait_idle(FREED_WITHIN_S)["worker"]
    assert after["cancelled"] == before["cancelled"] + 1


def test_full_queue_answers_429_and_recovers(server, client):
    """--max-queue 1: one request runs, one waits, the next is refused with 429."""
    before = server.wait_idle()["worker"]
    running = long_stream(client)
    assert first_text(running)
    waiting = long_stream(client)  # returns once the headers arrive; the job waits in the queue
    wait_for(server, lambda s: s["worker"]["waiting"] == 1, 10)
    try:
        with pytest.raises(openai.RateLimitError) as info:
            client.completions.create(model=MODEL, prompt="Hello", max_tokens=1)
        error = info.value.response.json()["error"]
        assert error["code"] == "queue_full" and "--max-queue 1" in error["message"]
        assert info.value.response.headers["retry-after"]
    finally:
        waiting.close()
        running.close()
    after = server.wait_idle(FREED_WITHIN_S)["worker"]
    assert after["rejected"] == before["rejected"] + 1
    assert after["cancelled"] == before["cancelled"] + 2
    out = client.completions.create(model=MODEL, prompt="Hello", max_tokens=1, temperature=0)
    assert out.usage.completion_tokens == 1
