"""Engine behaviour seen from outside: batching, the bounded queue, timeouts, disconnects, draining."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import httpx
import openai
import pytest

from tests.inference.server.http_threads import Post, Stream
from tests.support.prometheus_text import scrape, value, wait_for

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
LONG = {
    "model": MODEL_NAME,
    "messages": [{"role": "user", "content": "Count to one thousand."}],
    "max_tokens": 1000,
    "ignore_eos": True,
    "temperature": 0,
}


def _idle(url: str) -> None:
    wait_for(url + "/metrics", "vllm:num_requests_running", lambda v: v == 0)
    wait_for(url + "/metrics", "vllm:num_requests_waiting", lambda v: v == 0)


def test_sixteen_concurrent_requests_all_answered_faster_than_one_by_one(server):
    questions = [f"Name a fruit that starts with the letter {chr(ord('A') + i)}." for i in range(16)]
    kwargs = {"model": MODEL_NAME, "max_tokens": 8, "temperature": 0, "extra_body": {"ignore_eos": True}}

    async def run() -> tuple[list, float, list, float]:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300) as api:

            async def ask(question: str):
                return await api.chat.completions.create(messages=[{"role": "user", "content": question}], **kwargs)

            started = time.perf_counter()
            sequential = [await ask(q) for q in questions]
            sequential_s = time.perf_counter() - started
            started = time.perf_counter()
            concurrent = await asyncio.gather(*(ask(q) for q in questions))
            return sequential, sequential_s, concurrent, time.perf_counter() - started

    metrics = server.url + "/metrics"
    _idle(server.url)
    batches_before = _batches_over_one(metrics)
    sequential, sequential_s, concurrent, concurrent_s = asyncio.run(run())
    assert len(concurrent) == 16
    assert all(r.usage.completion_tokens == 8 and r.choices[0].message.content for r in concurrent)
    # Batched greedy decoding computes the same tokens as one request at a time (padding is masked out).
    same = sum(
        a.choices[0].message.content == b.choices[0].message.content
        for a, b in zip(sequential, concurrent, strict=True)
    )
    assert same >= 15, [
        (a.choices[0].message.content, b.choices[0].message.content)
        for a, b in zip(sequential, concurrent, strict=True)
    ]
    assert concurrent_s < sequential_s, (concurrent_s, sequential_s)
    # they were decoded together: forward passes over more than one sequence happened, and one sequential
    # request never makes one (so every such pass came from the concurrent round)
    assert _batches_over_one(metrics) - batches_before > 0


def _batches_over_one(metrics_url: str) -> float:
    """Decode forward passes that carried more than one sequence so far."""
    samples = scrape(metrics_url)
    total = value(metrics_url, "dsdeploy_server_decode_batch_size_count")
    single = sum(
        v
        for (name, labels), v in samples.items()
        if name == "dsdeploy_server_decode_batch_size_bucket" and dict(labels).get("le") == "1.0"
    )
    return total - single


def test_queue_full_gets_429_at_once_and_slow_requests_time_out(small_server):
    """small_server: one batch slot, a queue of one, a 4 s request timeout."""
    url = small_server.url
    _idle(url)
    runner = Stream(url, LONG)
    runner.start()
    assert runner.first_token.wait(60)
    waiter = Post(url, LONG)
    waiter.start()
    wait_for(url + "/metrics", "vllm:num_requests_waiting", lambda v: v == 1)

    refused = httpx.post(url + "/v1/chat/completions", json=LONG, timeout=60)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    # refused at once: the request holding the slot and the one queued behind it are both still there
    assert runner.is_alive() and waiter.is_alive()
    assert value(url + "/metrics", "vllm:num_requests_waiting") == 1
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}])

    runner.join(60)
    waiter.join(60)
    assert waiter.response.status_code == 504  # 1000 tokens do not fit in the 4 s request timeout
    assert waiter.response.json()["error"]["code"] == "request_timeout"
    # the stream timed out after its first tokens: it ends with an error event, then [DONE]
    assert runner.events[-1] == "[DONE]"
    error = runner.events[-2]["error"]
    assert (error["code"], error["type"]) == ("request_timeout", "timeout_error"), error
    deltas = [e["choices"][0]["delta"] for e in runner.events[1:-2]]  # (small_server parses reasoning)
    assert any(d.get("content") or d.get("reasoning_content") for d in deltas)
    assert value(url + "/metrics", "dsdeploy_server_requests_rejected_total", reason="queue_full") >= 2
    assert value(url + "/metrics", "vllm:request_success_total", finished_reason="abort") >= 2
    _idle(url)


def test_client_disconnect_cancels_its_generation(server):
    metrics = server.url + "/metrics"
    _idle(server.url)
    cancelled = value(metrics, "vllm:request_success_total", finished_reason="abort")
    generated = value(metrics, "vllm:generation_tokens_total")
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**LONG, "stream": True}, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
    wait_for(metrics, "vllm:request_success_total", lambda v: v == cancelled + 1, finished_reason="abort")
    _idle(server.url)
    # a non-streaming client that gives up is noticed as well
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(60, read=1.5))
    wait_for(metrics, "vllm:request_success_total", lambda v: v == cancelled + 2, finished_reason="abort")
    _idle(server.url)
    assert value(metrics, "vllm:generation_tokens_total") - generated < 1000


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(server_factory):
    proc = server_factory("--drain-grace", "60")
    chunks: list[dict] = []
    started = threading.Event()

    def stream() -> None:
        body = {**LONG, "max_tokens": 120, "stream": True}  # long enough to still run after SIGTERM
        with httpx.stream("POST", proc.url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    chunks.append(json.loads(line[6:]) if line != "data: [DONE]" else {"done": True})
                    started.set()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert started.wait(60)
    proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while httpx.get(proc.url + "/ready").status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = httpx.post(proc.url + "/v1/chat/completions", json=LONG, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert httpx.get(proc.url + "/health").status_code == 200
    reader.join(120)
    assert chunks[-1] == {"done": True}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert proc.wait(timeout=60) == 0


def test_completion_stream_that_times_out_ends_with_an_error_event(small_server):
    """small_server: a 4 s request timeout."""
    _idle(small_server.url)
    body = {
        "model": MODEL_NAME,
        "prompt": "Count to one thousand:",
        "max_tokens": 1000,
        "ignore_eos": True,
        "temperature": 0,
    }
    stream = Stream(small_server.url, body, path="/v1/completions")
    stream.run()
    assert stream.events[-1] == "[DONE]"
    assert stream.events[-2]["error"]["code"] == "request_timeout"
    assert "".join(e["choices"][0]["text"] for e in stream.events[:-2])  # tokens went out before the timeout
    _idle(small_server.url)


def test_drain_grace_over_answers_open_requests_then_exits(server_factory):
    proc = server_factory("--drain-grace", "2")
    stream, whole = Stream(proc.url, LONG), Post(proc.url, LONG)  # far longer than the grace
    stream.start()
    whole.start()
    assert stream.first_token.wait(60)
    wait_for(proc.url + "/metrics", "vllm:num_requests_running", lambda v: v == 2)
    proc.signal(signal.SIGTERM)
    stream.join(30)
    whole.join(30)
    assert stream.events[-1] == "[DONE]"
    error = stream.events[-2]["error"]
    assert (error["code"], error["type"]) == ("shutting_down", "service_unavailable_error"), error
    assert whole.response.status_code == 503 and whole.response.json()["error"]["code"] == "shutting_down"
    assert proc.wait(timeout=30) == 0
