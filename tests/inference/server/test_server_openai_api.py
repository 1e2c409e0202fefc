"""The server as OpenAI clients use it: the official `openai` client with the real model, every answer checked
against the official OpenAPI document (tests/support/openai_openapi/)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.openai_schema import validate_completion_chunk, validate_openai

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
HI = [{"role": "user", "content": "Say hi."}]


def test_chat_answer_matches_the_api_schema_with_refusal_null(client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL_NAME, messages=HI, max_tokens=4)
    body = json.loads(raw.text)
    validate_openai("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None
    assert raw.parse().choices[0].message.refusal is None


def test_streamed_chat_and_completions_match_the_api_schema(server):
    def chat_chunk(event: dict) -> None:
        validate_openai("CreateChatCompletionStreamResponse", event)

    for path, check, body in (
        ("/v1/chat/completions", chat_chunk, {"messages": HI}),
        ("/v1/completions", validate_completion_chunk, {"prompt": "Once upon a time"}),
    ):
        payload = {
            "model": MODEL_NAME,
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            **body,
        }
        with httpx.stream("POST", server.url + path, json=payload, timeout=60) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert len(events) >= 3
        for event in events[:-1]:
            check(json.loads(event))
    whole = httpx.post(
        server.url + "/v1/completions", json={"model": MODEL_NAME, "prompt": "Once", "max_tokens": 2}, timeout=60
    ).json()
    validate_openai("CreateCompletionResponse", whole)


def test_null_fields_from_the_client_mean_unset(client):
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=HI,
        max_tokens=3,
        temperature=None,
        top_p=None,
        n=None,
        stream=None,
        presence_penalty=None,
        frequency_penalty=None,
        stop=None,
        seed=None,
        logprobs=None,
        top_logprobs=None,
        max_completion_tokens=None,
        logit_bias=None,
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    text = client.completions.create(
        model=MODEL_NAME,
        prompt="Once",
        max_tokens=2,
        echo=None,
        temperature=None,
        top_p=None,
        n=None,
        best_of=None,
        suffix=None,
        presence_penalty=None,
    )
    assert text.usage.completion_tokens <= 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("functions", [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]),
        ("function_call", {"name": "get_weather"}),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("web_search_options", {}),
    ],
)
def test_unsupported_features_are_refused_naming_the_field(client, field, value):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=HI, max_tokens=2, **{field: value})
    error = info.value.body
    validate_openai("ErrorResponse", {"error": error})
    assert error["param"] == field and error["code"] == "invalid_value"


def test_completions_default_to_16_tokens(client):
    reply = client.completions.create(
        model=MODEL_NAME, prompt="Count: 1, 2, 3,", temperature=0, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 16 and reply.choices[0].finish_reason == "length"


def test_max_completion_tokens_wins_over_max_tokens(client):
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=HI,
        max_tokens=20,
        max_completion_tokens=3,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage.completion_tokens == 3
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=HI, max_tokens=5, max_completion_tokens=5000)
    assert info.value.body["param"] == "max_completion_tokens"


def test_top_p_zero_is_greedy(client):
    question = [{"role": "user", "content": "Name three colours."}]

    def ask(**sampling) -> str:
        return (
            client.chat.completions.create(model=MODEL_NAME, messages=question, max_tokens=12, **sampling)
            .choices[0]
            .message.content
        )

    greedy = ask(temperature=0)
    assert ask(temperature=1.0, top_p=0, seed=1) == greedy
    assert ask(temperature=1.0, top_p=0, seed=2) == greedy


def test_models_retrieve(client):
    model = client.models.retrieve(MODEL_NAME)
    assert model.id == MODEL_NAME and model.object == "model"
    raw = client.models.with_raw_response.retrieve(MODEL_NAME)
    validate_openai("Model", json.loads(raw.text))
    validate_openai("ListModelsResponse", json.loads(client.models.with_raw_response.list().text))
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-9")
    assert info.value.body["code"] == "model_not_found"


def test_every_answer_has_a_request_id(client, server):
    reply = client.chat.completions.create(model=MODEL_NAME, messages=HI, max_tokens=2)
    assert reply._request_id and reply._request_id.startswith("req-")
    other = client.chat.completions.create(model=MODEL_NAME, messages=HI, max_tokens=2)
    assert other._request_id != reply._request_id
    # the caller's own id (the router's) comes back; a malformed one is replaced
    sent = httpx.get(server.url + "/v1/models", headers={"X-Request-Id": "router-7f3a:42"}, timeout=10)
    assert sent.headers["x-request-id"] == "router-7f3a:42"
    odd = httpx.get(server.url + "/v1/models", headers={"X-Request-Id": "a b" + "x" * 200}, timeout=10)
    assert odd.headers["x-request-id"].startswith("req-")
    # errors too, including those the gate answers before any route
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=[], max_tokens=2)
    assert info.value.request_id and info.value.request_id.startswith("req-")
    not_json = httpx.post(server.url + "/v1/chat/completions", content=b"x", timeout=10)
    assert not_json.status_code == 400 and not_json.headers["x-request-id"].startswith("req-")
