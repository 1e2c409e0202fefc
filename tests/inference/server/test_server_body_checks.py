"""Bodies are read strictly (no coercion of types), refused fields say so, prompts far beyond the context are
refused before they are tokenized, and harmless unknown fields are still accepted."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
HI = [{"role": "user", "content": "Hi"}]
SURROGATE = "\ud800"  # json.dumps escapes it as \ud800, which JSON decoders turn into a lone surrogate


def _post(server, path: str, body, **headers: str) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    return httpx.post(
        server.url + path, content=raw, timeout=60, headers={"content-type": "application/json", **headers}
    )


def _assert_error(response: httpx.Response, status: int, param: str | None, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]
    return error


def _chat(**fields) -> dict:
    return {"messages": HI, "max_tokens": 2, **fields}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (_chat(seed=2**64), "seed", ["9223372036854775807"]),
        (_chat(seed=-(2**63) - 1), "seed", []),
        (_chat(max_tokens="2"), "max_tokens", ["integer", "'2'"]),
        (_chat(max_tokens=True), "max_tokens", ["integer"]),
        (_chat(temperature="0"), "temperature", ["number"]),
        (_chat(top_p=True), "top_p", ["number"]),
        (_chat(stream="true"), "stream", ["boolean"]),
        (_chat(stream=1), "stream", ["boolean"]),
        (_chat(n=True), "n", ["integer"]),
        (_chat(n=1.0), "n", ["integer"]),
        (_chat(ignore_eos=1), "ignore_eos", ["boolean"]),
        (_chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage", ["boolean"]),
        (_chat(stream_options={"include_usage": True}), "stream_options", ["stream is true"]),
        (_chat(tool_choice="required"), "tool_choice", ["required", "does not call tools"]),
        (_chat(tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice", ["named tool"]),
        (_chat(top_logprobs=2), "top_logprobs", ["not supported"]),
        (_chat(stop=["x" * 257]), "stop", ["256"]),
        (_chat(stop=[f"s{i}" for i in range(17)]), "stop", ["16"]),
        (_chat(stop=["ok", "a" + SURROGATE]), "stop.1", ["surrogate"]),
        ({"messages": [{"role": "user"}]}, "messages.0.content", ["required"]),
        ({"messages": [{"role": "user", "content": None}]}, "messages.0.content", ["needs content"]),
        ({"messages": [{"role": "user", "content": []}]}, "messages.0.content", ["needs content"]),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content", ["'text' string"]),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}]},
            "messages.0.tool_calls",
            ["tool calls"],
        ),
        ({"messages": [{"role": "user", "content": SURROGATE}]}, "messages.0.content", ["surrogate", "\\ud800"]),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" + SURROGATE}]}]},
            "messages.0.content.0.text",
            ["surrogate"],
        ),
        ({"messages": HI * 2049}, "messages", ["2048"]),
    ],
)
def test_chat_fields_are_strict_and_refusals_name_the_parameter(server, body, param, words):
    _assert_error(_post(server, "/v1/chat/completions", body), 400, param, *words)


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/v1/completions", {"prompt": "a" + SURROGATE}, "prompt", ["surrogate"]),
        ("/v1/completions", {"prompt": "Hi", "best_of": 2}, "best_of", ["best_of=2"]),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": "5"}, "max_tokens", ["integer"]),
        ("/v1/completions", {"prompt": "Hi", "echo": 0}, "echo", ["boolean"]),
        ("/generate", {"prompt": SURROGATE}, "prompt", ["surrogate"]),
        ("/generate", {"prompt": "Hi", "temperature": "0.5"}, "temperature", ["number"]),
    ],
)
def test_completion_and_generate_fields_are_strict(server, path, body, param, words):
    _assert_error(_post(server, path, body), 400, param, *words)


def test_seeds_in_the_signed_64_bit_range_are_accepted(server):
    for seed in (-(2**63), -1, 0, 2**63 - 1):
        reply = _post(server, "/v1/chat/completions", _chat(seed=seed, temperature=1.0))
        assert reply.status_code == 200, (seed, reply.text)


def test_harmless_fields_the_openai_client_may_send_are_accepted(server):
    body = _chat(
        user="u-1",
        metadata={"team": "a"},
        store=False,
        parallel_tool_calls=True,
        tool_choice="none",
        service_tier="auto",
        logprobs=False,
        top_logprobs=0,
        stream_options=None,
        seed=7,
    )
    assert _post(server, "/v1/chat/completions", body).status_code == 200
    assert _post(server, "/v1/chat/completions", _chat(tool_choice="auto")).status_code == 200
    assert (
        _post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 2, "best_of": 1, "user": "u"}).status_code
        == 200
    )


def test_text_parts_are_joined_with_newlines(server):
    parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]
    by_parts = _post(
        server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": parts}], "max_tokens": 4, "temperature": 0},
    ).json()
    joined = _post(
        server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say\nhello."}], "max_tokens": 4, "temperature": 0},
    ).json()
    assert by_parts["usage"]["prompt_tokens"] == joined["usage"]["prompt_tokens"]
    assert by_parts["choices"][0]["message"] == joined["choices"][0]["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        # the audit's three bodies (each under the 4 MiB body limit)
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 780_000}]}, "messages"),
        ("/v1/completions", {"prompt": [1] * 1_900_000}, "prompt"),
        ("/v1/completions", {"prompt": "word " * 400_000}, "prompt"),
    ],
)
def test_prompts_far_beyond_the_context_are_refused_without_tokenizing(server, path, body, param):
    error = _assert_error(_post(server, path, body), 400, param, "2048")
    assert error["code"] == "context_length_exceeded"


def test_too_many_messages_or_values_are_refused(server):
    _assert_error(_post(server, "/v1/chat/completions", {"messages": HI * 60_000}), 400, "messages", "2048")
    many = {"messages": HI, "metadata": {"tags": list(range(200_000))}}
    _assert_error(_post(server, "/v1/chat/completions", many), 400, None, "JSON values")


@pytest.mark.parametrize(
    ("raw", "headers", "param", "words"),
    [
        (b"", {}, None, ["empty", "JSON object"]),
        (b"   ", {}, None, ["empty"]),
        (
            b'{"messages": [{"role": "user", "content": "Hi"}]}',
            {"content-type": "text/plain"},
            None,
            ["Content-Type: application/json", "text/plain"],
        ),
        (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}', {}, None, ["NaN"]),
        (b"[" * 100 + b"]" * 100, {}, None, ["JSON object", "list"]),
        (b'{"messages":' + b"[" * 100 + b"]" * 100 + b"}", {}, "messages", ["nested", "64"]),
        (b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, None, ["nested too deeply"]),
    ],
)
def test_bodies_that_are_not_a_usable_json_object(server, raw, headers, param, words):
    error = _assert_error(_post(server, "/v1/chat/completions", raw, **headers), 400, param, *words)
    assert error["type"] == "invalid_request_error"


def test_missing_messages_says_so(server):
    _assert_error(
        _post(server, "/v1/chat/completions", {"model": MODEL_NAME}), 400, "messages", "'messages' is required"
    )


def test_models_names_the_model_without_local_paths(server, model_folder):
    entry = httpx.get(server.url + "/v1/models", timeout=10).json()["data"][0]
    assert entry["root"] == model_folder.name and "/" not in entry["root"]
