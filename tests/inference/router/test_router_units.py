"""Small parts on their own: circuit breaker, pool choice, rate limiter, cache bounds, usage reading."""

from __future__ import annotations

import json

import pytest

from inference.router.backoff import retry_after_header
from inference.router.cache import ENTRY_OVERHEAD, ResponseCache, is_deterministic
from inference.router.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from inference.router.config import parse_router_config
from inference.router.engine_metrics import engine_sums
from inference.router.health import parse_waiting
from inference.router.pool import ALL_CIRCUITS_OPEN, SATURATED, UpstreamPool
from inference.router.proxy import AttemptFailed, answer_usage
from inference.router.ratelimit import RateLimiter


def test_circuit_opens_half_opens_and_closes():
    c = CircuitBreaker(failures_to_open=3, open_s=2.0)
    assert not c.record_failure(0.0) and not c.record_failure(0.1) and c.state == CLOSED
    assert c.record_failure(0.2) and c.state == OPEN and not c.allows_requests
    assert not c.probe_succeeded(1.0) and c.state == OPEN  # too early
    assert c.probe_succeeded(2.3) and c.state == HALF_OPEN and c.allows_requests
    assert c.record_failure(2.4) and c.state == OPEN  # one failure re-opens a half-open circuit
    c.probe_succeeded(5.0)
    c.record_success()
    assert c.state == CLOSED and c.failures == 0
    assert c.record_failure(6.0, immediate=True) and c.state == OPEN


def test_pool_picks_least_in_flight_and_reports_why_not():
    cfg = parse_router_config(
        {
            "upstreams": [{"url": "http://h:1"}, {"url": "http://h:2"}, {"url": "http://h:3"}],
            "saturation": {"max_waiting": 4},
        }
    )
    pool = UpstreamPool(cfg)
    a, b, c = pool.upstreams
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert pool.pick(allow_saturated=False) == (b, "")
    assert pool.pick({b}, allow_saturated=False) == (c, "")
    b.waiting = 5  # saturated by its vLLM queue
    assert pool.pick(allow_saturated=False) == (c, "")
    for up in (a, c):
        up.waiting = 9
    assert pool.pick(allow_saturated=False) == (None, SATURATED)
    assert pool.pick(allow_saturated=True) == (b, "")  # may not leave: queue on the least loaded
    for up in pool.upstreams:
        up.circuit.record_failure(0.0, immediate=True)
    assert pool.pick(allow_saturated=True) == (None, ALL_CIRCUITS_OPEN)


def test_rate_limiter_refills_and_says_when():
    limiter = RateLimiter()
    assert limiter.acquire("k", 2, now=0.0) is None
    assert limiter.acquire("k", 2, now=0.0) is None
    wait = limiter.acquire("k", 2, now=0.0)
    assert wait == pytest.approx(30.0)
    assert limiter.acquire("k", 2, now=30.0) is None
    assert limiter.acquire("other", 2, now=0.0) is None
    assert retry_after_header(0.2) == b"1"


def test_cache_bounds_ttl_and_tenants():
    one = ENTRY_OVERHEAD + len("application/json") + len("local") + 60  # what a 60-byte answer holds
    cache = ResponseCache(max_bytes=one + 100, ttl_s=10)
    data = {"messages": [{"role": "user", "content": "x"}], "temperature": 0}
    k1, k2 = cache.key("t1", "/v1/chat/completions", data), cache.key("t2", "/v1/chat/completions", data)
    assert k1 != k2
    cache.put(k1, b"a" * 60, "application/json", "local", now=0.0)
    assert cache.get(k2, now=1.0) is None and cache.get(k1, now=1.0) is not None
    cache.put(k2, b"b" * 60, "application/json", "local", now=1.0)  # evicts k1 (bytes bound)
    assert cache.get(k1, now=2.0) is None and cache.bytes == one
    assert cache.get(k2, now=11.5) is None and len(cache) == 0  # TTL
    cache.put(k1, b"c" * 500, "application/json", "local")  # larger than the bound: not kept
    assert len(cache) == 0
    assert is_deterministic(data) and not is_deterministic({**data, "stream": True})
    assert not is_deterministic({"temperature": 0.5}) and not is_deterministic({})


def test_cache_counts_each_entrys_overhead_so_tiny_answers_cannot_outgrow_it():
    cache = ResponseCache(max_bytes=64 * 1024, ttl_s=60)
    for i in range(10_000):  # 10 000 one-byte answers: 10 kB of bodies, but not 10 000 entries
        cache.put(("t", "/v1/completions", i.to_bytes(4, "big")), b"x", "application/json", "local", now=0.0)
    assert cache.bytes <= 64 * 1024 and len(cache) < 64 * 1024 // ENTRY_OVERHEAD


def test_usage_is_read_without_parsing_the_whole_answer():
    body = b'{"id":"x","choices":[{"message":{"content":"the \\"usage\\": {} trap"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    assert answer_usage(body) == {"prompt_tokens": 3, "completion_tokens": 2}
    assert answer_usage(b'{"id":"x","usage":null}') is None
    assert answer_usage(b' {"id":"x"}\n') is None
    for bad in (b'{"id": "x", "choices": [', b"<html>oops</html>", b"", b"[1]"):
        with pytest.raises(AttemptFailed):
            answer_usage(bad)


def test_parse_waiting_sums_models_and_ignores_other_metrics():
    text = (
        '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="a"} 3.0\n'
        'vllm:num_requests_waiting{model_name="b"} 2\nvllm:num_requests_waiting_total 99\n'
        'vllm:num_requests_running{model_name="a"} 7\n'
    )
    assert parse_waiting(engine_sums(text)) == 5.0
    assert parse_waiting(engine_sums("other 1\n")) is None


def test_failed_probe_does_not_open_a_busy_upstream():
    import time

    pool = UpstreamPool(parse_router_config({"upstreams": [{"url": "http://h:1"}]}))
    (up,) = pool.upstreams
    up.client.last_progress = time.monotonic()  # bytes just arrived on another request
    pool.probe_result(up, False, failures_to_open=1, window_s=0.75)
    assert up.circuit.allows_requests
    up.client.last_progress = time.monotonic() - 5  # silent: frozen
    pool.probe_result(up, False, failures_to_open=1, window_s=0.75)
    assert not up.circuit.allows_requests and not up.healthy


def test_discovered_members_follow_the_addresses():
    cfg = parse_router_config(
        {
            "upstreams": [
                {"url": "http://engine-headless:8000", "name": "engine", "discover": True},
                {"url": "http://h:1"},
            ]
        }
    )
    pool = UpstreamPool(cfg)
    assert [u.label for u in pool.upstreams] == ["h:1"]
    added, removed = pool.set_addresses(0, {"10.0.0.1", "10.0.0.2"})
    assert [u.label for u in added] == ["engine@10.0.0.1", "engine@10.0.0.2"] and removed == []
    assert added[0].base == "http://10.0.0.1:8000" and added[0].client.host == "10.0.0.1"
    busy = added[1]
    busy.in_flight = 1
    added, removed = pool.set_addresses(0, {"10.0.0.1", "fd00::3"})
    assert [u.label for u in added] == ["engine@fd00::3"] and added[0].base == "http://[fd00::3]:8000"
    assert removed == [busy] and busy not in pool.upstreams and pool.draining == [busy]
    busy.in_flight = 0
    pool.expire_pending(0.0)
    assert pool.draining == []
    assert sorted(u.label for u in pool.upstreams) == ["engine@10.0.0.1", "engine@fd00::3", "h:1"]


def test_audit_line_is_the_json_of_its_fields():
    import json

    from inference.router.audit import AUDIT_FIELDS, AuditLog
    from inference.router.config import AuditConfig

    values = (
        "ab12",
        1764363469.4291,
        "ops",
        't\u00e9am "x"',
        "public",
        "POST",
        "/v1/chat/completions",
        "m\n\u2603",
        True,
        "local",
        "127.0.0.1:1",
        200,
        7,
        3,
        0.868,
        None,
        2,
        ["a:b", "c\\d"],
        None,
        None,
        None,
        None,
        None,
        None,
    )
    usual = values[:19] + ("stream_interrupted", "cloud", "budget_exhausted", 1250.5, "all_circuits_open")  # fast path
    unusual = values[:19] + ({"odd": [1.5, None]}, None, None, None, None)  # anything else: the generic path
    for fields in (
        usual,
        unusual,
        values[:8] + (None, "cloud", None) + values[11:17] + ([], "hit", None, None, None, None, None),
    ):
        for mode, extra in (("off", {}), ("full", {"prompt": [{"role": "user", "content": "caf\u00e9"}]})):
            log = AuditLog(AuditConfig(prompts=mode))
            line = log.render(fields, {"messages": [{"role": "user", "content": "caf\u00e9"}]})
            expected = dict(zip(AUDIT_FIELDS, fields, strict=True), time="2025-11-28T20:57:49.429Z", **extra)
            assert line == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    hashed = json.loads(AuditLog(AuditConfig(prompts="hash")).render(values, {"prompt": "hi"}))
    assert list(hashed)[-1] == "prompt_sha256" and len(hashed["prompt_sha256"]) == 64
    odd_latency = json.loads(AuditLog(AuditConfig()).render(values[:14] + (float("nan"),) + values[15:], None))
    assert odd_latency["latency_ms"] != odd_latency["latency_ms"]  # NaN, written as the JSON encoder does


def test_keepalive_client_retries_a_reused_connection_closed_under_it_once():
    import asyncio

    from inference.router.upstream_http import UpstreamClosed, UpstreamHttpClient

    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    async def main() -> None:
        connections = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            served = 0
            while await reader.read(65536):
                if served == limit:  # closes without a byte, as a server whose idle timeout just fired
                    break
                writer.write(answer)
                served += 1
            writer.close()

        limit = 1
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamHttpClient("127.0.0.1", port, connect_timeout_s=1.0)
        raw = client.request_bytes(b"POST", "/v1/chat/completions", b"{}")
        for _ in range(3):  # the 2nd and 3rd reuse a connection the server drops: retried on a fresh one
            resp = await client.request(raw)
            assert resp.status == 200 and await resp.read() == b"{}"
            resp.close()
        assert len(connections) == 3
        limit = 0  # now every connection closes at once: a fresh one failing is an error, not a loop
        client.close()
        with pytest.raises(UpstreamClosed):
            await client.request(raw)
        assert len(connections) == 4
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_prefill_rate_is_read_from_vllm_and_from_our_servers_metrics():
    from inference.router.health import parse_prefill_rate

    vllm = (
        'vllm:prompt_tokens_total{model_name="m"} 40000.0\n'
        'vllm:request_prefill_time_seconds_sum{model_name="m"} 8.0\n'
        'vllm:time_to_first_token_seconds_sum{model_name="m"} 99.0\n'
    )
    assert parse_prefill_rate(engine_sums(vllm)) == 5000.0
    ours = (
        'vllm:prompt_tokens_total{model_name="m"} 3000\nvllm:time_to_first_token_seconds_sum{model_name="m"} 4.0\n'
        'vllm:request_queue_time_seconds_sum{model_name="m"} 1.0\n'
    )
    assert parse_prefill_rate(engine_sums(ours)) == 1000.0  # time to first token less the queue time
    assert (
        parse_prefill_rate(engine_sums('vllm:prompt_tokens_total{model_name="m"} 10\n')) is None
    )  # too little to tell


def test_first_byte_deadline_grows_with_the_prompt_and_waits_when_there_is_nowhere_else():
    from inference.router.fallback import FallbackPolicy
    from inference.router.metrics import RouterMetrics
    from inference.router.policy import DataClassPolicy

    cfg = parse_router_config(
        {"upstreams": [{"url": "http://h:1"}], "cloud": {"base_url": "http://127.0.0.1:9", "api_key": "${K}"}},
        environ={"K": "k"},
    )
    pool = UpstreamPool(cfg)
    (up,) = pool.upstreams
    policy = FallbackPolicy(cfg, pool, DataClassPolicy(cfg), RouterMetrics(True, pool, cfg.cloud), None)
    assert policy._first_byte_limit(up, 300, {up}, "deepseek-chat", 600.0) == pytest.approx(10.05)
    up.prefill_rate = 500.0  # from its metrics: a 30 kB prompt (~10k tokens) takes ~20 s to prefill
    assert policy._first_byte_limit(up, 30_000, {up}, "deepseek-chat", 600.0) == pytest.approx(30.0)
    assert policy._first_byte_limit(up, 300, {up}, None, 600.0) == 600.0  # nowhere else to go: it waits


def test_a_draining_answer_is_read_only_from_a_small_well_formed_5xx_error() -> None:
    from inference.router.proxy import DRAINING_MESSAGES, MAX_ERROR_BYTES, is_draining_answer

    vllm = json.dumps({"error": {"message": f"RuntimeError: {DRAINING_MESSAGES[0]}", "code": 500}}).encode()
    ours = b'{"error":{"message":"draining","type":"x","param":null,"code":"shutting_down"}}'
    assert is_draining_answer(500, vllm) and is_draining_answer(503, ours)
    assert not is_draining_answer(400, ours)  # not a 5xx
    assert not is_draining_answer(500, b'{"error":{"message":"out of memory","code":500}}')
    # hostile: a huge body that says it (not read for what it says), nesting past the parser's depth, garbage
    huge = json.dumps({"error": {"message": DRAINING_MESSAGES[0], "pad": "x" * MAX_ERROR_BYTES}}).encode()
    assert not is_draining_answer(500, huge)
    assert not is_draining_answer(500, b"[" * 100_000 + b"]" * 100_000)
    assert not is_draining_answer(500, b"\xff\xfe garbage")
    assert not is_draining_answer(500, b'{"error": "cannot schedule new futures after shutdown"}')  # not an object
