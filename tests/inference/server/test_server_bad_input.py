"""Every invalid body gets a 4xx in the OpenAI error shape naming the parameter; the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
HI = [{"role": "user", "content": "Hi"}]


def _post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kwargs)


def _assert_error(response: httpx.Response, status: int, param: str | None, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": MODEL_NAME}, "messages", ["required"]),
        ({"messages": "hello"}, "messages", ["list"]),
        ({"messages": []}, "messages", ["at least 1"]),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", ["wizard"]),
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content", []),
        ({"messages": HI, "temperature": 3.5}, "temperature", ["2", "3.5"]),
        ({"messages": HI, "temperature": "hot"}, "temperature", ["hot"]),
        ({"messages": HI, "top_p": 1.5}, "top_p", ["1.5"]),
        ({"messages": HI, "top_p": -0.5}, "top_p", ["greater than or equal to 0"]),
        ({"messages": HI, "max_tokens": 0}, "max_tokens", ["greater than or equal to 1"]),
        ({"messages": HI, "max_tokens": 5000}, "max_tokens", ["5000", "2048"]),
        ({"messages": HI, "max_completion_tokens": -3}, "max_completion_tokens", []),
        ({"messages": HI, "n": 2}, "n", ["n=2", "n=1"]),
        ({"messages": HI, "stop": 7}, "stop", []),
        ({"messages": HI, "stop": [""]}, "stop", ["empty"]),
        ({"messages": HI, "logprobs": True}, "logprobs", ["not supported"]),
        ({"messages": HI, "stream": "yes please"}, "stream", []),
        ({"messages": HI, "response_format": {"type": "json_object"}}, "response_format", ["json_object"]),
        ({"messages": HI, "logit_bias": {"42": 5}}, "logit_bias", ["not supported"]),
        ({"messages": HI, "frequency_penalty": 0.5}, "frequency_penalty", ["only accepts 0"]),
        ({"messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", ["tool calling"]),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
            ["image_url"],
        ),
    ],
)
def test_invalid_chat_bodies_get_400_naming_the_parameter(server, body, param, words):
    _assert_error(_post(server, "/v1/chat/completions", json=body), 400, param, *words)


def test_body_that_is_not_json(server):
    response = _post(server, "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    _assert_error(response, 400, None, "JSON")


def test_body_that_is_not_an_object(server):
    _assert_error(_post(server, "/v1/chat/completions", json=[1, 2]), 400, None)


def test_body_over_the_size_limit(server):
    huge = {"messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    _assert_error(_post(server, "/v1/chat/completions", json=huge), 400, None, "limit")


def test_prompt_longer_than_the_context(server):
    long = {"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 1}
    _assert_error(_post(server, "/v1/chat/completions", json=long), 400, "messages", "2048")
    _assert_error(_post(server, "/v1/completions", json={"prompt": "word " * 3000}), 400, "prompt", "2048")


def test_unknown_model_is_404(server):
    error = _assert_error(
        _post(server, "/v1/chat/completions", json={"model": "gpt-9", "messages": HI}),
        404,
        "model",
        "gpt-9",
        MODEL_NAME,
    )
    assert error["code"] == "model_not_found"


def test_completion_and_generate_bodies(server):
    _assert_error(_post(server, "/v1/completions", json={"max_tokens": 3}), 400, "prompt", "required")
    _assert_error(_post(server, "/v1/completions", json={"prompt": ["a", "b"]}), 400, "prompt", "one prompt")
    _assert_error(_post(server, "/v1/completions", json={"prompt": [1, 10**9]}), 400, "prompt", "token ids")
    _assert_error(_post(server, "/generate", json={"prompt": ""}), 400, "prompt")
    _assert_error(_post(server, "/generate", json={"prompt": "hi", "temperature": -1}), 400, "temperature")


def test_unknown_route_and_method_use_the_error_shape(server):
    _assert_error(httpx.get(server.url + "/v1/nothing"), 404, None)
    _assert_error(httpx.get(server.url + "/v1/chat/completions"), 405, None)


def test_openai_client_raises_typed_errors_and_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL_NAME, messages=HI, temperature=9)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HI)
    reply = client.chat.completions.create(model=MODEL_NAME, messages=HI, max_tokens=3)
    assert reply.choices[0].message.content
