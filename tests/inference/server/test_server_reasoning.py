"""<think> splitting: the splitter alone, and through a server with the reasoning parser forced on."""

from __future__ import annotations

import json

import httpx
import pytest

from inference.server.loading import is_reasoning_model
from inference.server.reasoning import ThinkSplitter, prompt_opens_thinking, split_reasoning

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py


def _stream(text: str, starts_in_thinking: bool, size: int) -> tuple[str, str]:
    splitter = ThinkSplitter(starts_in_thinking)
    reasoning, content = "", ""
    for i in range(0, len(text), size):
        r, c = splitter.push(text[i : i + size])
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return reasoning + r, content + c


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_tags_split_across_chunks(size):
    text = "<think>\nLet me add: 2+2=4.\n</think>\n\nThe answer is 4."
    assert _stream(text, False, size) == ("Let me add: 2+2=4.\n", "The answer is 4.")


@pytest.mark.parametrize("size", [1, 4, 100])
def test_template_opened_thinking_has_only_a_closing_tag(size):
    assert _stream("Hmm, 2+2 is 4.</think>Four.", True, size) == ("Hmm, 2+2 is 4.", "Four.")


def test_no_tags_is_all_content_and_unclosed_thinking_is_all_reasoning():
    assert split_reasoning("Paris is the capital.") == (None, "Paris is the capital.")
    assert split_reasoning("still thinking <", starts_in_thinking=True) == ("still thinking <", "")
    assert split_reasoning("<thi") == (None, "<thi")
    assert split_reasoning("a <think> in the middle is content") == (None, "a <think> in the middle is content")


def test_prompt_that_ends_inside_think():
    assert prompt_opens_thinking("<|Assistant|><think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("deepseek-r1-distill-qwen-7b", True),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", True),
        ("DeepSeek-R1", True),
        ("smollm2", False),
        ("deepseek-v3", False),
    ],
)
def test_reasoning_models_are_recognised_by_name(name, expected):
    assert is_reasoning_model(name, object()) is expected


@pytest.mark.slow
def test_server_returns_reasoning_content_beside_content(small_server):
    """small_server forces the parser on and opens <think> in its chat template, so all output is thinking."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "max_tokens": 6,
        "temperature": 0,
        "ignore_eos": True,
    }
    reply = httpx.post(small_server.url + "/v1/chat/completions", json=body, timeout=60).json()
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"]
    assert message["content"] == ""
    with httpx.stream(
        "POST", small_server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as response:
        deltas = [
            json.loads(line[6:])["choices"][0]["delta"] for line in response.iter_lines() if line.startswith("data: {")
        ]
    streamed = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert streamed == message["reasoning_content"]
    assert not any(d.get("content") for d in deltas)


@pytest.mark.slow
def test_reasoning_is_off_by_default_for_smollm2(client):
    reply = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert "reasoning_content" not in (reply.choices[0].message.model_extra or {})
