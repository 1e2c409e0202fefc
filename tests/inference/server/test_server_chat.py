"""The OpenAI API through the real `openai` client against the real SmolLM2 server."""

from __future__ import annotations

import json

import httpx
import pytest

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]


def test_chat_answers_with_true_usage(client, tokenizer):
    reply = client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=24, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    prompt_ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    prompt_ids = prompt_ids["input_ids"] if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys") else prompt_ids
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert 1 <= reply.usage.completion_tokens <= 24


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_is_honoured_by_true_count(client, tokenizer, field):
    reply = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
        temperature=0, extra_body={"ignore_eos": True}, **{field: 7},
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 7
    assert len(tokenizer(reply.choices[0].message.content, add_special_tokens=False)["input_ids"]) <= 8


def test_seed_makes_sampling_repeatable(client):
    def ask() -> str:
        return client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=12, temperature=1.0,
                                              top_p=0.9, seed=1234).choices[0].message.content

    assert ask() == ask()


def test_stop_string_cuts_the_answer(client):
    full = client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    cut = client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=24, temperature=0,
                                         stop=[stop, "zzzz-never"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert stop not in cut.choices[0].message.content


def test_stream_matches_whole_answer_and_reports_usage(client):
    whole = client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_event_stream_is_ordered_and_ends_with_done(server):
    body = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 6, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads[:-1])
    assert len({p["id"] for p in payloads}) == 1


def test_text_completion_and_stream(client):
    reply = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=5,
                                      temperature=0)
    assert reply.choices[0].text.strip()
    assert reply.usage.completion_tokens <= 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL_NAME, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == reply.choices[0].text


def test_generate_keeps_the_articles_contract(server):
    response = httpx.post(server.url + "/generate", json={"prompt": "The capital of France is", "max_tokens": 5,
                                                          "temperature": 0}, timeout=60)
    assert response.status_code == 200
    assert set(response.json()) == {"response"} and response.json()["response"].strip()


def test_health_ready_and_metrics(server, client):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").status_code == 200
    client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=3)
    text = httpx.get(server.url + "/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_count",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:kv_cache_usage_perc",
                 "dsdeploy:model_weight_bytes"):
        assert f"{name}{{" in text, name
    weight = [line for line in text.splitlines() if line.startswith("dsdeploy:model_weight_bytes{")]
    assert float(weight[0].split()[-1]) > 100e6  # 135M parameters in float32
