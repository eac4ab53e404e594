"""Every error status, in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

import httpx
from serve_helpers import API_KEY, MAX_PROMPT_TOKENS, MODEL

from kvlab.methods import METHODS

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(server.base_url + path, timeout=30, **kwargs)


def test_missing_or_wrong_api_key_is_401(server):
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        r = post(server, "/v1/chat/completions", headers=headers,
                 json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as info:
        server.client(api_key="wrong-key").models.list()
    assert "api key" in error_of(info.value)["message"].lower()
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200  # health needs no key


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    error = error_of(info.value)
    assert error["code"] == "model_not_found" and error["param"] == "model" and MODEL in error["message"]


def test_unknown_method_is_400_listing_valid_ones(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=1,
                                  extra_body={"kvlab": {"method": "snapkvv"}})
    error = error_of(info.value)
    assert error["param"] == "kvlab.method"
    assert all(name in error["message"] for name in METHODS.names())


@pytest.mark.parametrize("kvlab, param", [({"budget": "lots"}, "kvlab.budget"), ({"methd": "x"}, "kvlab.methd"),
                                          ({"context": "not the start"}, "kvlab.context")])
def test_bad_kvlab_options_are_400(client, kvlab, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=1, extra_body={"kvlab": kvlab})
    assert error_of(info.value)["param"] == param


def test_malformed_json_and_fields_are_400(server, client):
    r = post(server, "/v1/chat/completions", headers={**AUTH, "Content-Type": "application/json"},
             content=b'{"model": "x", "messages": [')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = post(server, "/v1/chat/completions", headers=AUTH, json={"model": MODEL, "messages": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=-1)
    assert error_of(info.value)["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2)
    assert error_of(info.value)["param"] == "n"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="hi", logprobs=2)
    assert error_of(info.value)["code"] == "unsupported_parameter"


def test_prompt_over_the_server_limit_is_400_with_the_limit(client):
    long_prompt = "word " * (MAX_PROMPT_TOKENS + 100)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=1)
    error = error_of(info.value)
    assert error["code"] == "context_length_exceeded" and str(MAX_PROMPT_TOKENS) in error["message"]


def test_generation_past_the_window_is_400_with_the_window(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=9000)
    error = error_of(info.value)
    assert error["code"] == "context_length_exceeded" and "8192" in error["message"]
    assert error["param"] == "max_tokens"


def test_unknown_route_is_404_in_openai_shape(server):
    r = httpx.get(server.base_url + "/v1/nothing", headers=AUTH, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_openapi_schema_is_served(server):
    schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    assert {"/v1/models", "/v1/completions", "/v1/chat/completions", "/health"} <= set(schema["paths"])
    assert "KvlabOptions" in schema["components"]["schemas"]
