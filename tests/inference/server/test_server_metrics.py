"""/metrics moves by what known requests did, with vLLM's meanings (see docs/server.md)."""

from __future__ import annotations

import httpx
import pytest

from tests.inference.server.http_threads import Stream
from tests.inference.server.test_server_metric_names import only_vllm_colon_names
from tests.support.prometheus_text import scrape, value, wait_for
from tests.support.promtool import check_metrics

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _idle(url: str) -> None:
    wait_for(url + "/metrics", "vllm:num_requests_running", lambda v: v == 0)
    wait_for(url + "/metrics", "vllm:num_requests_waiting", lambda v: v == 0)


def _sum(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_counters_and_histograms_move_by_the_requests_made(server, client):
    metrics = server.url + "/metrics"
    _idle(server.url)
    before = scrape(metrics)
    replies = [
        client.chat.completions.create(
            model=MODEL_NAME, messages=QUESTION, max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
        )
        for _ in range(2)
    ]
    after = scrape(metrics)

    def delta(name: str, **labels: str) -> float:
        return _sum(after, name, **labels) - _sum(before, name, **labels)

    prompt = sum(r.usage.prompt_tokens for r in replies)
    assert [r.usage.completion_tokens for r in replies] == [5, 5]
    assert delta("vllm:request_success_total", finished_reason="length") == 2
    assert delta("vllm:request_success_total") == 2
    assert delta("vllm:prompt_tokens_total") == prompt
    assert delta("vllm:generation_tokens_total") == 10
    assert delta("vllm:request_prompt_tokens_sum") == prompt
    assert delta("vllm:request_generation_tokens_sum") == 10
    assert delta("vllm:prefix_cache_queries_total") == prompt
    assert delta("vllm:prefix_cache_hits_total") > 0  # the second prompt is the first one again
    for name in (
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
        "vllm:request_time_per_output_token_seconds_count",
    ):
        assert delta(name) == 2, name
    # one inter-token interval per token after the first (the deprecated name is the same histogram)
    assert delta("vllm:inter_token_latency_seconds_count") == 8
    assert delta("vllm:time_per_output_token_seconds_count") == 8
    # per request, the time per output token leaves the first token out: 4 intervals fit in e2e - TTFT
    tpot = delta("vllm:request_time_per_output_token_seconds_sum")
    assert (
        0
        < 4 * tpot
        <= delta("vllm:e2e_request_latency_seconds_sum") - delta("vllm:time_to_first_token_seconds_sum") + 1e-6
    )
    assert abs(4 * tpot - delta("vllm:inter_token_latency_seconds_sum")) < 1e-6


def test_no_created_series(server):
    assert "_created" not in httpx.get(server.url + "/metrics").text


def test_a_request_cancelled_before_prefill_adds_no_prompt_tokens(small_server):
    """small_server: one batch slot, a queue of one, a 4 s timeout. A request waits behind a running one, its
    client gives up, and it leaves the queue as an abort without being prefilled."""
    url, metrics = small_server.url, small_server.url + "/metrics"
    _idle(url)
    before = scrape(metrics)
    body = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 1000, "ignore_eos": True, "temperature": 0}
    runner = Stream(url, body)
    runner.start()
    assert runner.first_token.wait(60)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    wait_for(
        metrics,
        "vllm:request_success_total",
        lambda v: v >= _sum(before, "vllm:request_success_total", finished_reason="abort") + 1,
        finished_reason="abort",
    )
    runner.join(60)  # then the runner times out (an abort too)
    _idle(url)
    after = scrape(metrics)
    requested = _sum(after, "vllm:request_prompt_tokens_sum") - _sum(before, "vllm:request_prompt_tokens_sum")
    prefilled = _sum(after, "vllm:prompt_tokens_total") - _sum(before, "vllm:prompt_tokens_total")
    assert (
        _sum(after, "vllm:request_success_total", finished_reason="abort")
        - _sum(before, "vllm:request_success_total", finished_reason="abort")
        == 2
    )
    assert requested == 2 * prefilled > 0  # two requests of the same prompt finished; one was prefilled
    assert value(metrics, "vllm:num_requests_waiting") == 0


def test_live_metrics_pass_promtool_check_metrics(server, client):
    client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=2, temperature=0)
    text = httpx.get(server.url + "/metrics").text
    assert "dsdeploy_server_ready{" in text and "dsdeploy:" not in text
    only_vllm_colon_names(check_metrics(text))
