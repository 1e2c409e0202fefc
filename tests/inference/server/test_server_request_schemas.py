"""The request bodies as the OpenAI API's schema states them (no model needed): null is "unset" on every
optional field the API marks nullable, refused features name their field, and the token limit comes from
the field the API prefers."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from inference.server.api.body import validate
from inference.server.api.errors import APIError
from inference.server.api.schemas import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
)
from inference.server.engine.sampling import SamplingParams, choose_token, is_greedy, make_generator
from tests.support.openai_schema import schema

HI = [{"role": "user", "content": "Hi"}]


def _api_properties(name: str) -> dict[str, dict]:
    """Properties of a request schema, its allOf parts (and theirs) merged, later parts winning."""
    out: dict[str, dict] = {}

    def collect(node: dict) -> None:
        if "$ref" in node:
            node = schema(node["$ref"].rsplit("/", 1)[-1])
        for part in node.get("allOf", []):
            collect(part)
        out.update(node.get("properties", {}))

    collect(schema(name))
    return out


def _nullable(prop: dict) -> bool:
    if "$ref" in prop:
        prop = schema(prop["$ref"].rsplit("/", 1)[-1])
    branches = prop.get("anyOf", []) + prop.get("oneOf", [])
    return bool(prop.get("nullable")) or any(b.get("type") == "null" for b in branches)


@pytest.mark.parametrize(
    ("model", "api", "required"),
    [
        (ChatCompletionRequest, "CreateChatCompletionRequest", {"messages": HI}),
        (CompletionRequest, "CreateCompletionRequest", {"prompt": "Once"}),
    ],
)
def test_every_field_the_api_marks_nullable_takes_null_as_unset(model, api, required) -> None:
    nullable = {name for name, prop in _api_properties(api).items() if _nullable(prop)} & set(model.model_fields)
    assert {
        "temperature",
        "top_p",
        "n",
        "stream",
        "presence_penalty",
        "frequency_penalty",
        "max_tokens",
        "stop",
        "seed",
        "logprobs",
        "stream_options",
    } <= nullable
    defaults = model.model_validate(required)
    for name in sorted(nullable - set(required)):
        body = model.model_validate({**required, name: None})
        assert getattr(body, name) == getattr(defaults, name), name
        assert name not in body.model_fields_set, f"{name}: null must mean 'not sent'"


def test_null_on_a_required_field_is_still_refused() -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": None})
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"prompt": None})


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("functions", [{"name": "get_weather", "parameters": {}}], "function calling"),
        ("function_call", {"name": "get_weather"}, "named function"),
        ("function_call", "required", "'required'"),
        ("modalities", ["text", "audio"], "text only"),
        ("audio", {"voice": "alloy", "format": "wav"}, "audio output"),
        ("web_search_options", {}, "web search"),
        ("web_search_options", {"search_context_size": "low"}, "web search"),
    ],
)
def test_unsupported_features_are_refused_naming_the_field(field, value, words) -> None:
    with pytest.raises(APIError) as info:
        validate(ChatCompletionRequest, {"messages": HI, field: value})
    assert info.value.status == 400 and info.value.param == field
    assert words in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("function_call", "none"),
        ("function_call", "auto"),
        ("modalities", ["text"]),
        ("functions", []),
        ("audio", None),
        ("web_search_options", None),
    ],
)
def test_what_means_plain_text_is_accepted(field, value) -> None:
    validate(ChatCompletionRequest, {"messages": HI, field: value})


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    both = ChatCompletionRequest.model_validate({"messages": HI, "max_tokens": 20, "max_completion_tokens": 3})
    assert both.token_limit() == (3, "max_completion_tokens")
    assert ChatCompletionRequest.model_validate({"messages": HI, "max_tokens": 20}).token_limit() == (20, "max_tokens")
    assert ChatCompletionRequest.model_validate({"messages": HI}).token_limit() == (None, "max_tokens")


def test_completions_default_to_16_tokens_as_the_api() -> None:
    api_default = _api_properties("CreateCompletionRequest")["max_tokens"]["default"]
    assert COMPLETIONS_DEFAULT_MAX_TOKENS == api_default == 16
    assert CompletionRequest.model_validate({"prompt": "Once"}).token_limit() == (16, "max_tokens")
    assert CompletionRequest.model_validate({"prompt": "Once", "max_tokens": None}).token_limit() == (16, "max_tokens")
    assert CompletionRequest.model_validate({"prompt": "Once", "max_tokens": 40}).token_limit() == (40, "max_tokens")


def test_top_p_zero_is_allowed_and_greedy() -> None:
    api = _api_properties("CreateChatCompletionRequest")["top_p"]
    assert any(branch.get("minimum") == 0 for branch in api["anyOf"])  # the API's range includes 0
    body = ChatCompletionRequest.model_validate({"messages": HI, "top_p": 0, "temperature": 1})
    assert body.top_p == 0
    assert is_greedy(SamplingParams(max_tokens=1, temperature=1.0, top_p=0.0))
    assert not is_greedy(SamplingParams(max_tokens=1, temperature=1.0, top_p=0.5))
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": HI, "top_p": -0.1})
    # nearly flat logits: sampling at temperature 1 would pick all over; top_p 0 always takes the argmax
    logits = torch.linspace(0.0, 0.1, 50)
    params = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.0, seed=7)
    generator = make_generator(params.seed)
    assert {choose_token(logits, params, generator) for _ in range(20)} == {49}
