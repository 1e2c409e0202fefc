"""inference/client.py and the shared backoff: full jitter capped at 10 s, Retry-After honoured."""

from __future__ import annotations

import random

import pytest

from inference.client import ApiError, ChatClient
from inference.router.backoff import backoff_delay, parse_retry_after

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "hi"}]


def test_backoff_is_full_jitter_capped_and_honours_retry_after():
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(10.0, 0.5 * 2**attempt)
        samples = [backoff_delay(attempt, 0.5, 10.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8 and min(samples) < ceiling * 0.2  # spread over [0, ceiling]
    assert backoff_delay(0, 0.5, 10.0, retry_after_s=3.0) == 3.0
    assert backoff_delay(0, 0.5, 10.0, retry_after_s=120.0) == 10.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_client_retries_5xx_and_429_then_succeeds(ups):
    cloud = ups["cloud"]
    cloud.control(fail_next=2, status=503)
    slept: list[float] = []
    with ChatClient(cloud.url, api_key="k", sleep=slept.append) as client:
        answer = client.chat(MSG)
        assert answer["choices"][0]["message"]["content"] == "answer from cloud"
        assert client.attempts == 3 and len(slept) == 2 and all(0 <= s <= 1.0 for s in slept)
        cloud.control(fail_next=1, status=429, retry_after="4")
        slept.clear()
        client.chat(MSG)
        assert slept == [4.0]


def test_client_does_not_retry_inside_a_wait_longer_than_its_cap(ups):
    cloud = ups["cloud"]
    cloud.control(mode="status", status=429, retry_after="60")
    slept: list[float] = []
    with ChatClient(cloud.url, max_attempts=5, backoff_max_s=10.0, sleep=slept.append) as client:
        with pytest.raises(ApiError) as info:
            client.chat(MSG)
        assert info.value.status == 429 and info.value.retry_after == 60.0
        assert client.attempts == 1 and slept == []  # raised at once: the caller decides about a minute's wait
    assert len(cloud.requests()) == 1


def test_client_gives_up_and_does_not_retry_other_4xx(ups):
    cloud = ups["cloud"]
    cloud.control(mode="status", status=503)
    with ChatClient(cloud.url, max_attempts=3, sleep=lambda s: None) as client:
        with pytest.raises(ApiError) as info:
            client.chat(MSG)
        assert info.value.status == 503 and client.attempts == 3
        cloud.control(mode="status", status=400)
        with pytest.raises(ApiError) as info:
            client.chat(MSG)
        assert info.value.status == 400 and client.attempts == 1 and "cloud says 400" in str(info.value)
    with ChatClient("http://127.0.0.1:9", max_attempts=2, sleep=lambda s: None) as client:
        with pytest.raises(ApiError) as info:
            client.chat(MSG)
        assert info.value.status is None and client.attempts == 2


def test_client_against_router_streams_and_reports_route(ups, tmp_path):
    ups["a"].control(chunks=3)
    with (
        run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r,
        ChatClient(r.url, data_class="public", sleep=lambda s: None) as client,
    ):
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in client.stream_chat(MSG) if c["choices"])
        assert text.startswith("answer from a part 0") and client.last_route == "local"
        ups["a"].control(mode="status", status=500)
        assert client.chat(MSG)["choices"][0]["message"]["content"] == "answer from cloud"
        assert client.last_route == "cloud" and len(client.last_request_id) == 32
        ups["a"].control(mode="cut_stream", chunks=4)
        with pytest.raises(ApiError, match="ended before the answer was complete"):
            list(client.stream_chat(MSG))
