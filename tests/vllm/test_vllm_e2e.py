"""The router in front of the real vLLM CPU engine serving SmolLM2, with the real openai client.

The engine is started once per session (tests/vllm/conftest.py) with an API key that only the router
holds. Saturation spill-over is driven by vLLM's own ``vllm:num_requests_waiting``; the engine is frozen
(SIGSTOP on its process group) and killed (SIGKILL) under load as the chaos tests do with stand-ins, and
sent SIGTERM as a rollout does. Those two are last: the next user of the engine would wait for a new start.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.inference.router.harness import router_config as harness_config
from tests.inference.router.harness import run_router, until
from tests.support.prometheus_text import value

from .conftest import ENGINE_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test waits for the engine's start

MSG = [{"role": "user", "content": "Say hello to the team."}]
THINKING = {"chat_template_kwargs": {"thinking": True}}  # deepseek_v3 parser: R1 parsing on for this request


def router_config(engine, cloud, audit: Path, **sections: Any):
    """The router as the chart configures it: the engine with its key from the environment, probes and
    deadlines relaxed for an engine that shares two cores with its load."""
    sections.setdefault("health", {"interval_s": 0.5, "timeout_s": 3.0})
    sections.setdefault("timeouts", {"first_byte_s": 120, "response_s": 180})
    return harness_config(
        [{"url": engine.url, "api_key": "${ENGINE_KEY}", "name": "vllm"}],
        cloud.url if cloud is not None else None,
        audit,
        environ={"ENGINE_KEY": ENGINE_KEY},
        **sections,
    )


def client(base: str, data_class: str = "internal", api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base, api_key=api_key, max_retries=0, timeout=300, default_headers={"X-Data-Class": data_class}
    )


def waiting(engine) -> float:
    return value(engine.url + "/metrics", "vllm:num_requests_waiting", model_name=MODEL)


def test_chat_and_stream_through_the_router(engine, deepseek, tmp_path):
    with run_router(router_config(engine, deepseek, tmp_path / "audit.jsonl")) as r:
        raw = client(r.v1).chat.completions.with_raw_response.create(
            model=MODEL, messages=MSG, max_tokens=8, temperature=0
        )
        answer = raw.parse()
        assert raw.headers["x-dsdeploy-route"] == "local"
        assert answer.choices[0].message.content and answer.usage.completion_tokens <= 8
        assert answer.model == MODEL
        stream = client(r.v1).chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert (
            text
            and chunks[-1].usage is not None
            and chunks[-1].usage.completion_tokens
            == len([c for c in chunks if c.choices and c.choices[0].delta.content])
        )
        lines = r.audit_lines(at_least=2)
    assert [(line["route"], line["status"], line["stream"]) for line in lines] == [
        ("local", 200, False),
        ("local", 200, True),
    ]
    assert lines[1]["completion_tokens"] == chunks[-1].usage.completion_tokens  # read from vLLM's usage
    assert deepseek.requests() == []


def test_the_engine_answers_only_the_router(engine, deepseek, tmp_path):
    for key in ("unused", "sk-engine-wrong"):
        with pytest.raises(openai.AuthenticationError):
            client(engine.url + "/v1", api_key=key).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    # vLLM's own --api-key leaves /invocations (the same inference) and /tokenize open; the chart's guard does not.
    body = {"model": MODEL, "messages": MSG, "max_tokens": 2}
    for path in ("/invocations", "/tokenize"):
        assert httpx.post(engine.url + path, json=body, timeout=60).status_code == 401, path
    keyed = httpx.post(
        engine.url + "/invocations", json=body, headers={"Authorization": f"Bearer {ENGINE_KEY}"}, timeout=300
    )
    assert keyed.status_code == 200 and keyed.json()["choices"], keyed.text
    for path in ("/health", "/metrics"):  # the kubelet's probes and Prometheus need no key
        assert httpx.get(engine.url + path, timeout=60).status_code == 200, path
    with run_router(router_config(engine, deepseek, tmp_path / "audit.jsonl")) as r:
        answer = client(r.v1).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert answer.choices[0].message.content
    # A router holding a stale key: clients are not told that their key is wrong.
    stale = harness_config(
        [{"url": engine.url, "api_key": "${ENGINE_KEY}"}],
        deepseek.url,
        tmp_path / "b.jsonl",
        environ={"ENGINE_KEY": "sk-engine-stale"},
    )
    with run_router(stale) as r:
        with pytest.raises(openai.APIStatusError) as info:
            client(r.v1).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert info.value.status_code == 503 and "local_key_rejected" in info.value.message
        public = client(r.v1, "public").chat.completions.with_raw_response.create(model=MODEL, messages=MSG)
        assert public.headers["x-dsdeploy-route"] == "cloud"


def test_reasoning_reaches_clients_as_reasoning_content_from_the_real_parser(engine, deepseek, tmp_path):
    # vLLM's own shape first, straight from the engine: its parser fills `reasoning`.
    direct = client(engine.url + "/v1", api_key=ENGINE_KEY).chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=8, temperature=0, extra_body=THINKING
    )
    vllm_message = direct.choices[0].message.model_dump()
    assert vllm_message.get("reasoning") and not vllm_message.get("reasoning_content")
    deepseek.control(reasoning=True)
    with run_router(router_config(engine, deepseek, tmp_path / "audit.jsonl")) as r:
        plain = (
            client(r.v1)
            .chat.completions.create(model=MODEL, messages=MSG, max_tokens=8, temperature=0, extra_body=THINKING)
            .choices[0]
            .message.model_dump()
        )
        assert plain["reasoning_content"] and not plain["content"] and "reasoning" not in plain
        deltas = [
            c.choices[0].delta.model_dump()
            for c in client(r.v1).chat.completions.create(
                model=MODEL, messages=MSG, max_tokens=8, temperature=0, extra_body=THINKING, stream=True
            )
            if c.choices
        ]
        assert "".join(d.get("reasoning_content") or "" for d in deltas)
        assert not any("reasoning" in d for d in deltas)
        no_thinking = client(r.v1).chat.completions.create(model=MODEL, messages=MSG, max_tokens=8)
        assert no_thinking.choices[0].message.content  # the parser leaves answers without thinking alone
        # The cloud route (the DeepSeek API's own shape) gives clients the same field.
        cloud_only = harness_config([], deepseek.url, tmp_path / "c.jsonl")
    with run_router(cloud_only) as c:
        cloud = client(c.v1, "public").chat.completions.create(model=MODEL, messages=MSG).choices[0].message
        assert cloud.model_dump()["reasoning_content"] == "thinking in cloud"


def test_saturation_spills_over_on_vllms_own_waiting_metric(engine, deepseek, tmp_path):
    """Fill the engine (4 sequences at once) from outside the router until vLLM itself reports requests
    waiting; then public requests go to the cloud and restricted ones queue locally."""
    direct = openai.OpenAI(base_url=engine.url + "/v1", api_key=ENGINE_KEY, max_retries=0, timeout=600)
    load = [
        threading.Thread(
            target=direct.chat.completions.create,
            daemon=True,
            kwargs={
                "model": MODEL,
                "messages": MSG,
                "max_tokens": 160,
                "temperature": 0,
                "extra_body": {"ignore_eos": True},
            },
        )
        for _ in range(10)
    ]
    cfg = router_config(
        engine, deepseek, tmp_path / "audit.jsonl", saturation={"max_waiting": 2, "poll_interval_s": 0.2}
    )
    with run_router(cfg) as r:
        for t in load:
            t.start()
        deadline = time.monotonic() + 120
        while waiting(engine) < 4:
            assert time.monotonic() < deadline, "vLLM never reported waiting requests"
            time.sleep(0.2)
        # the router's next poll of /metrics has read it
        until(lambda: r.app.pool.upstreams[0].waiting >= 3, "the router saw vLLM's waiting requests", 60)
        assert [u["waiting"] for u in httpx.get(r.url + "/ready").json()["upstreams"]][0] >= 3
        spilled = client(r.v1, "public").chat.completions.with_raw_response.create(
            model=MODEL, messages=MSG, max_tokens=4
        )
        assert spilled.headers["x-dsdeploy-route"] == "cloud"
        kept = client(r.v1, "restricted").chat.completions.with_raw_response.create(
            model=MODEL, messages=MSG, max_tokens=4
        )
        assert kept.headers["x-dsdeploy-route"] == "local"  # queued on the busy engine, never left
        for t in load:
            t.join(timeout=600)
        deadline = time.monotonic() + 60
        while r.app.pool.upstreams[0].waiting > 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        after = client(r.v1, "public").chat.completions.with_raw_response.create(
            model=MODEL, messages=MSG, max_tokens=4
        )
        assert after.headers["x-dsdeploy-route"] == "local"  # drained: local again
        lines = r.audit_lines(at_least=3)
    assert [line["fallback_reason"] for line in lines] == ["saturated", None, None]
    assert len(deepseek.requests()) == 1


async def _load(url: str, total: int, concurrency: int, on_progress, stream_every: int) -> list[dict[str, Any]]:
    """``total`` public requests, ``concurrency`` at a time: route, whether it was answered in full, and
    for streams whether they ended with the router's error event."""
    api = openai.AsyncOpenAI(
        base_url=url, api_key="unused", max_retries=0, timeout=300, default_headers={"X-Data-Class": "public"}
    )
    sem = asyncio.Semaphore(concurrency)
    done = 0
    results: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        nonlocal done
        stream = i % stream_every == 0
        async with sem:
            result: dict[str, Any] = {"stream": stream, "ok": False, "route": None, "error_event": None}
            try:
                if stream:
                    out = await api.chat.completions.create(model=MODEL, messages=MSG, max_tokens=24, stream=True)
                    result["route"] = out.response.headers["x-dsdeploy-route"]
                    finished = False
                    async for chunk in out:
                        finished = finished or bool(chunk.choices and chunk.choices[0].finish_reason)
                    result["ok"] = finished
                else:
                    raw = await api.chat.completions.with_raw_response.create(model=MODEL, messages=MSG, max_tokens=24)
                    result["route"] = raw.headers["x-dsdeploy-route"]
                    result["ok"] = bool(raw.parse().choices[0].message.content)
            except openai.APIError as exc:
                result["error_event"] = getattr(exc, "code", None) or repr(exc)
            results.append(result)
            done += 1
            on_progress(done)

    await asyncio.gather(*(one(i) for i in range(total)))
    await api.close()
    return results


def _check_nothing_lost(results: list[dict[str, Any]], total: int, lines: list[dict[str, Any]]) -> None:
    """Every public request is answered in full: before the fault by the engine, after it by the cloud, and a
    stream the engine had begun is continued from the cloud (chat prefix completion), never cut."""
    assert len(results) == total
    assert [r for r in results if not r["ok"]] == [], json.dumps([line for line in lines if line["error"]])
    assert {r["route"] for r in results} == {"local", "cloud"}
    continued = [line for line in lines if line["continuation"] == "cloud"]
    assert all(line["route"] == "local" and line["stream"] and line["status"] == 200 for line in continued)


def test_frozen_engine_under_load_loses_nothing(engine, deepseek, tmp_path):
    events: dict[str, float] = {}

    def progress(done: int) -> None:
        if done == 4 and "frozen" not in events:
            engine.signal_group(signal.SIGSTOP)
            events["frozen"] = time.monotonic()

    try:
        # Streams the frozen engine had begun are continued from the cloud once found stalled.
        cfg = router_config(
            engine,
            deepseek,
            tmp_path / "audit.jsonl",
            timeouts={"first_byte_s": 120, "response_s": 180, "stream_idle_s": 15},
        )
        with run_router(cfg) as r:
            results = asyncio.run(_load(r.v1, 24, 6, progress, stream_every=4))
            lines = r.audit_lines(at_least=24)
            assert r.app.pool.upstreams[0].circuit.state == "open"
    finally:
        engine.signal_group(signal.SIGCONT)
    _check_nothing_lost(results, 24, lines)
    assert any("vllm:unresponsive" in line["failures"] for line in lines)  # found by the probes, retried
    assert all(line["status"] == 200 for line in lines)


def test_killed_engine_under_load_loses_nothing(engine, deepseek, tmp_path):
    events: dict[str, float] = {}

    def progress(done: int) -> None:
        if done == 4 and "killed" not in events:
            engine.signal_group(signal.SIGKILL)
            events["killed"] = time.monotonic()

    with run_router(router_config(engine, deepseek, tmp_path / "audit.jsonl")) as r:
        results = asyncio.run(_load(r.v1, 24, 6, progress, stream_every=4))
        lines = r.audit_lines(at_least=24)
    _check_nothing_lost(results, 24, lines)
    failures = {f.split(":", 1)[1] for line in lines for f in line["failures"] if f.startswith("vllm:")}
    # The engine's streams cut by the kill are recorded as such (and were continued, above).
    assert failures and failures <= {
        "connect_refused",
        "connection_reset",
        "unresponsive",
        "connect_error",
        "stream_interrupted",
        "stream_stalled",
    }
    assert [line["route"] for line in lines].count("cloud") >= 24 - 4 - 6  # all after the kill


# The draining stream lasts about this long: long enough for the checks made while vLLM drains (a public
# request, /health, a restricted one waiting out the queue's deadline: about 4 s), well inside the
# --shutdown-timeout of 30 s (past it vLLM aborts the stream). Its length in tokens is sized to this box's
# decode rate, measured just before: a fixed 400 tokens outlasted the timeout on a loaded CI box.
DRAIN_STREAM_S = 10.0


def decode_rate(base: str, tokens: int = 32) -> float:
    """Streamed tokens per second of one restricted request on the engine (its chunks after the first)."""
    stamps = []
    stream = client(base, "restricted").chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=tokens, stream=True, extra_body={"ignore_eos": True}
    )
    for chunk in stream:
        if chunk.choices:
            stamps.append(time.monotonic())
    return (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-3)


def test_a_sigtermed_engine_finishes_its_stream_and_new_requests_wait_or_leave_instead_of_failing(
    engine, deepseek, tmp_path
):
    """A rollout with the real vLLM, started with --shutdown-timeout as the chart starts it: SIGTERM while a
    restricted stream is open. The stream ends whole. While it drains, vLLM answers new requests 500 "cannot
    schedule new futures after shutdown" with its /health still 200: the router takes that answer as the drain
    (upstream_draining), so public requests go to the cloud and restricted ones wait for a ready engine (here
    until the queue's deadline: no replacement comes) instead of getting a 503 at once."""
    cfg = router_config(engine, deepseek, tmp_path / "audit.jsonl", wait_queue={"deadline_s": 3})
    with run_router(cfg) as r:
        chunks: list[Any] = []
        length = int(min(400, max(48, decode_rate(r.v1) * DRAIN_STREAM_S)))

        def long_stream() -> str:
            out = client(r.v1, "restricted").chat.completions.create(
                model=MODEL, messages=MSG, max_tokens=length, stream=True, extra_body={"ignore_eos": True}
            )
            chunks.extend(ch.choices[0] for ch in out if ch.choices)
            return out.response.headers["x-dsdeploy-route"]

        routes: list[str] = []
        t = threading.Thread(target=lambda: routes.append(long_stream()))
        t.start()
        until(lambda: len(r.app.pool.upstreams[0].streams) == 1, "the stream relayed", 300)
        assert engine.process is not None
        engine.signal(signal.SIGTERM)  # to the API server's process, as the kubelet signals a container
        public = client(r.v1, "public").chat.completions.with_raw_response.create(
            model=MODEL, messages=MSG, max_tokens=4
        )
        assert public.headers["x-dsdeploy-route"] == "cloud"
        assert httpx.get(engine.url + "/health", timeout=10).status_code == 200  # what vLLM says while it drains
        with pytest.raises(openai.InternalServerError) as info:
            client(r.v1, "restricted").chat.completions.create(model=MODEL, messages=MSG, max_tokens=4)
        assert info.value.status_code == 503 and info.value.body["code"] == "local_pool_not_ready"  # it waited
        assert engine.process.poll() is None  # all of that while the engine was still draining
        t.join()
        lines = r.audit_lines(at_least=4)
    assert routes == ["local"]
    assert chunks[-1].finish_reason == "length"  # the open stream ended whole
    stream_line = [line for line in lines if line["stream"]][-1]  # the long one (the rate's ended first)
    assert (stream_line["status"], stream_line["error"], stream_line["completion_tokens"]) == (200, None, length)
    assert any("vllm:upstream_draining" in line["failures"] for line in lines)
    assert engine.process.wait(60) == 0  # and it exits once drained
