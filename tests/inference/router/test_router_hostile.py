"""Hostile clients and upstreams (issue 14, items 1-9): each test sends what a reviewer sent and fails on the
router before the fix. Raw sockets where a well-behaved HTTP client could not misbehave enough."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import psutil
import pytest

from inference.router.config import RouterConfigError, parse_router_config

from .harness import router_config, run_router, until

MSG = [{"role": "user", "content": "hi"}]
BODY = json.dumps({"model": "fake-model", "messages": MSG}).encode()


def port_of(router) -> int:
    return int(router.url.rsplit(":", 1)[1])


def read_answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the router sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except (TimeoutError, ConnectionResetError):
        return got


def post_request(body: bytes = BODY, headers: str = "Content-Type: application/json\r\n", close: bool = False) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + headers.encode()
        + (b"Connection: close\r\n" if close else b"")
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ----------------------------------------------------------------------------- 1: headers, slow clients, connections
def test_huge_headers_get_a_431_before_they_are_held_in_memory(ups, tmp_path):
    with run_router(router_config([ups["a"].url], None, tmp_path / "a.jsonl")) as r:
        me = psutil.Process()
        before = me.memory_info().rss
        with socket.create_connection(("127.0.0.1", port_of(r))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            answer = b""
            sock.settimeout(0.01)
            try:
                for _ in range(1024):  # up to 64 MiB of one header value, 64 KiB at a time
                    sock.sendall(b"a" * 65536)
                    try:
                        answer += sock.recv(65536)
                    except TimeoutError:
                        continue
                    if answer:
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer += read_answer(sock, 5)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"server.max_header_bytes" in answer
        assert me.memory_info().rss - before < 32 * 2**20  # not the 64 MiB sent
        # too many header fields, each small
        with socket.create_connection(("127.0.0.1", port_of(r))) as sock:
            sock.sendall(post_request(headers="".join(f"X-H{i}: v\r\n" for i in range(150))))
            assert read_answer(sock).startswith(b"HTTP/1.1 431")
        status, _ = http_post(r.url + "/v1/chat/completions", BODY)
        assert status == 200  # the router goes on serving
    assert len(ups["a"].requests()) == 1


def test_clients_trickling_headers_or_a_body_or_nothing_are_cut_off(ups, tmp_path):
    cfg = router_config(
        [ups["a"].url], None, tmp_path / "a.jsonl", server={"header_timeout_s": 1.0}, timeouts={"body_s": 1.0}
    )
    with run_router(cfg) as r:
        socks = [socket.create_connection(("127.0.0.1", port_of(r))) for _ in range(12)]
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
        started = time.monotonic()
        try:
            for i in range(len(request)):  # one byte a tenth of a second on 8 of them; 4 say nothing at all
                for s in socks[:8]:
                    with contextlib.suppress(OSError):
                        s.send(request[i : i + 1])
                if time.monotonic() - started > 4:
                    break
                time.sleep(0.1)
            answers = [read_answer(s, 3) for s in socks]
        finally:
            for s in socks:
                s.close()
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), [a[:40] for a in answers]
        assert time.monotonic() - started < 8
        # a body the router does not read (POST to /health), sent a byte at a time: the connection is closed
        with socket.create_connection(("127.0.0.1", port_of(r))) as sock:
            sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            started = time.monotonic()
            answer = read_answer(sock, 10)
            assert time.monotonic() - started < 5 and answer.startswith(b"HTTP/1.1 405")  # answered, then closed


def test_open_connections_per_process_are_bounded(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", server={"max_connections": 4})
    with run_router(cfg) as r:
        held = [socket.create_connection(("127.0.0.1", port_of(r))) for _ in range(4)]
        until(lambda: r.open_connections() == 4, "the four connections accepted")
        try:
            with socket.create_connection(("127.0.0.1", port_of(r))) as extra:
                answer = read_answer(extra)
            assert answer.startswith(b"HTTP/1.1 503") and b"server.max_connections" in answer
        finally:
            for s in held:
                s.close()
        until(lambda: r.open_connections() == 0, "the connections closed")
        assert http_post(r.url + "/v1/chat/completions", BODY)[0] == 200  # freed again


# ----------------------------------------------------------------------------- 2: body deadlines never leak
def test_oversized_bodies_leave_no_body_deadline_behind(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", limits={"max_body_bytes": 4096})
    with run_router(cfg) as r:
        for declared in (True, False):  # a Content-Length over the limit, and a chunked body growing past it
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port_of(r))) as sock:
                    if declared:
                        sock.sendall(post_request(b"x" * 5000, close=True))
                    else:
                        sock.sendall(
                            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            b"\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + b"1000\r\n"
                            + b"x" * 4096
                            + b"\r\n"
                            + b"10\r\n"
                            + b"x" * 16
                            + b"\r\n0\r\n\r\n"
                        )
                    assert b"body_too_large" in read_answer(sock, 5)
        assert r.app.body_deadlines.reading == {} and not r.app.body_deadlines.expired


# ----------------------------------------------------------------------------- 3: answers without end
@pytest.mark.parametrize("where", ["local", "cloud"])
def test_an_endless_answer_is_cut_at_the_limit_and_counted_against_the_upstream(ups, tmp_path, where):
    a, cloud = ups["a"], ups["cloud"]
    if where == "local":
        a.control(mode="endless")
    else:
        a.control(mode="status", status=503)
        cloud.control(mode="endless")
    cfg = router_config([a.url], cloud.url, tmp_path / "a.jsonl", limits={"max_answer_bytes": 1_000_000})
    with run_router(cfg) as r:
        me = psutil.Process()
        before = me.memory_info().rss
        raw = openai.OpenAI(
            base_url=r.v1, api_key="x", max_retries=0, timeout=30, default_headers={"X-Data-Class": "public"}
        ).chat.completions.with_raw_response
        if where == "local":
            answer = raw.create(model="fake-model", messages=MSG)
            assert answer.headers["x-dsdeploy-route"] == "cloud"
            line = r.audit_lines()[-1]
            assert line["failures"][0] == f"127.0.0.1:{a.port}:answer_too_large"
            assert r.app.pool.upstreams[0].circuit.failures >= 1
        else:
            with pytest.raises(openai.APIStatusError) as info:
                raw.create(model="fake-model", messages=MSG)
            assert info.value.status_code == 502 and "answer_too_large" in info.value.message
        assert me.memory_info().rss - before < 64 * 2**20


# ----------------------------------------------------------------------------- 4: a client that never reads
def test_a_client_that_pipelines_and_never_reads_frees_its_upstream_slots(ups, tmp_path):
    a = ups["a"]
    a.control(text="word " * 200_000, chunks=1)  # ~1 MB answers
    cfg = router_config([a.url], None, tmp_path / "a.jsonl", timeouts={"stream_idle_s": 1.0})
    with run_router(cfg) as r:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port_of(r)))
        try:
            sock.sendall(post_request() * 10)  # ten requests at once, then it reads nothing
            upstream = r.app.pool.upstreams[0]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (len(a.requests()) >= 1 and upstream.in_flight == 0):
                time.sleep(0.1)
            assert upstream.in_flight == 0
            time.sleep(3.0)  # the router gave up on the connection (timeouts.stream_idle_s + 1 s)
            assert all(
                p.status() != psutil.CONN_ESTABLISHED
                for p in psutil.Process().net_connections()
                if p.laddr and p.laddr.port == port_of(r) and p.raddr and p.raddr.port == sock.getsockname()[1]
            )
        finally:
            sock.close()


# ----------------------------------------------------------------------------- 5: a client that leaves
@pytest.mark.parametrize("where", ["local", "cloud"])
def test_a_client_leaving_a_non_streamed_request_cancels_the_upstream_work(ups, tmp_path, where):
    a, cloud = ups["a"], ups["cloud"]
    busy = a if where == "local" else cloud
    if where == "cloud":
        a.control(mode="status", status=503)
    busy.control(delay=3.0)
    with run_router(router_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        with socket.create_connection(("127.0.0.1", port_of(r))) as sock:
            sock.sendall(post_request(headers="Content-Type: application/json\r\nX-Data-Class: public\r\n"))
            time.sleep(0.5)
        line = r.audit_lines()[-1]
        assert (line["status"], line["error"]) == (499, "client_disconnected")
        assert line["latency_ms"] < 2500 and r.app.pool.upstreams[0].in_flight == 0
        time.sleep(3.0)
        assert json.loads(urllib.request.urlopen(busy.url + "/_record").read())["served"] == 0  # it stopped


# ----------------------------------------------------------------------------- 6: numbers and bytes from upstreams
@pytest.mark.parametrize("value", ["inf", "1e999", "nan", "-inf", "1e300"])
def test_odd_retry_after_values_from_the_cloud_are_read_sanely(ups, tmp_path, value):
    ups["a"].control(mode="status", status=500)
    ups["cloud"].control(mode="status", status=429, retry_after=value)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        status, headers = http_post(r.url + "/v1/chat/completions", BODY, {"X-Data-Class": "public"})
        assert status == 429 and headers["x-dsdeploy-route"] == "cloud"
        assert 1 <= int(headers["retry-after"]) <= 86_400


def test_undecodable_cloud_headers_and_not_quite_json_answers(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="status", status=500)
    cloud.control(content_type="application/json; charset=\xff\xfe")
    cfg = router_config([a.url], cloud.url, tmp_path / "a.jsonl", cache={"enabled": True})
    with run_router(cfg) as r:
        status, headers = http_post(r.url + "/v1/chat/completions", BODY, {"X-Data-Class": "public"})
        assert status == 200 and headers["x-dsdeploy-route"] == "cloud"
        assert headers["content-type"] == "application/json"
        # a local 200 shaped {...} that is not JSON is neither passed on nor cached: the cloud's answer is
        a.control(mode="braces")
        cloud.control(content_type="application/json")
        body = json.dumps({"model": "fake-model", "messages": MSG, "temperature": 0}).encode()
        status, headers = http_post(r.url + "/v1/chat/completions", body, {"X-Data-Class": "public"})
        assert status == 200 and headers["x-dsdeploy-route"] == "cloud" and "x-dsdeploy-cache" not in headers
        assert r.audit_lines(at_least=2)[-1]["failures"] == [f"127.0.0.1:{a.port}:malformed_response"]
        status, headers = http_post(r.url + "/v1/chat/completions", body, {"X-Data-Class": "public"})
        assert (status, headers["x-dsdeploy-route"], headers["x-dsdeploy-cache"]) == (200, "cloud", "hit")
    # the first request's 500 and its retry, the malformed one; the hit reached none (the router's own
    # half-open probe of the circuit the 500s opened may come too, depending on timing: not a client request)
    assert len(a.client_requests()) == 3


def test_a_reused_connection_closed_without_a_byte_is_resent_and_counted(tmp_path):
    answer = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        }
    ).encode()
    served = {"n": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        on_this = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = next(
                (int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")), 0
            )
            await reader.readexactly(length)
            if head.startswith(b"POST") and on_this == 1:
                break  # the second completion on a kept-alive connection: closed without a byte
            if head.startswith(b"POST"):
                on_this += 1
                served["n"] += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(answer), answer)
            )
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = server.sockets[0].getsockname()[1]
        with run_router(router_config([f"http://127.0.0.1:{port}"], None, tmp_path / "a.jsonl")) as r:
            for _ in range(2):
                assert http_post(r.url + "/v1/chat/completions", BODY)[0] == 200
            first, second = r.audit_lines(at_least=2)
        assert (first["attempts"], first["failures"]) == (1, [])
        assert second["attempts"] == 2 and second["failures"] == [f"127.0.0.1:{port}:stale_connection_resent"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


# ----------------------------------------------------------------------------- 7: config that weakens the policy
@pytest.mark.parametrize(
    ("allowed", "match"),
    [
        (["public", "restricted"], "'restricted' may never leave"),
        (["internal"], "allows 'internal' but not the looser 'public'"),
    ],
)
def test_a_policy_that_lets_stricter_data_out_is_refused(allowed, match):
    with pytest.raises(RouterConfigError, match=match) as info:
        parse_router_config({"upstreams": [{"url": "http://127.0.0.1:9"}], "policy": {"cloud_allowed": allowed}})
    assert "policy.cloud_allowed" in str(info.value)


def test_keys_that_would_share_a_rate_limit_bucket_are_refused_and_shared_tenants_warned():
    digest = sha("k1")
    with pytest.raises(RouterConfigError, match="key ids must be unique"):
        parse_router_config(
            {
                "upstreams": [{"url": "http://127.0.0.1:9"}],
                "auth": {"keys_sha256": [digest], "keys": [{"id": "sha256:" + digest[:12], "sha256": sha("k2")}]},
            }
        )
    cfg = parse_router_config(
        {
            "upstreams": [{"url": "http://127.0.0.1:9"}],
            "auth": {
                "keys": [{"id": "legal", "sha256": sha("k1")}, {"id": "web", "sha256": sha("k2"), "tenant": "legal"}]
            },
        }
    )
    (warning,) = cfg.warnings()
    assert warning.startswith("auth.keys[1].tenant") and "shares that key's cache partition" in warning


# ----------------------------------------------------------------------------- 8: cross-site requests
def test_browser_style_cross_site_posts_are_refused_unless_the_origin_is_allowed(ups, tmp_path):
    cfg = router_config(
        [ups["a"].url], None, tmp_path / "a.jsonl", server={"allowed_origins": ["https://chat.example.com"]}
    )
    with run_router(cfg) as r:
        url = r.url + "/v1/chat/completions"
        status, _ = http_post(url, BODY, {"Content-Type": "text/plain", "Origin": "https://evil.example"})
        assert status == 403
        status, _ = http_post(url, BODY, {"Content-Type": "text/plain"})
        assert status == 415
        status, _ = http_post(url, BODY, {"Origin": "https://chat.example.com"})
        assert status == 200
    assert len(ups["a"].requests()) == 1


# ----------------------------------------------------------------------------- 9: the rest of the review
def test_models_are_rate_limited_and_ready_and_metrics_keep_their_details_for_key_holders(ups, tmp_path):
    keys = [{"id": "slow", "sha256": sha("k1"), "rpm": 2}]
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", auth={"keys": keys}, metrics={"require_key": True})
    with run_router(cfg) as r:
        c = openai.OpenAI(base_url=r.v1, api_key="k1", max_retries=0)
        c.models.list()
        c.models.list()
        with pytest.raises(openai.RateLimitError):
            c.models.list()
        anonymous = json.loads(urllib.request.urlopen(r.url + "/ready").read())
        assert anonymous == {"ready": True}
        keyed = json.loads(
            urllib.request.urlopen(
                urllib.request.Request(r.url + "/ready", headers={"Authorization": "Bearer k1"})
            ).read()
        )
        assert keyed["upstreams"][0]["upstream"] == f"127.0.0.1:{ups['a'].port}"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(r.url + "/metrics")
        assert info.value.code == 401
        text = (
            urllib.request.urlopen(urllib.request.Request(r.url + "/metrics", headers={"Authorization": "Bearer k1"}))
            .read()
            .decode()
        )
        assert "dsdeploy_router_cloud_spend_usd_total" in text


def test_redirects_from_the_cloud_are_not_followed(ups, tmp_path):
    a, b, cloud = ups["a"], ups["b"], ups["cloud"]
    a.control(mode="status", status=503)
    cloud.control(redirect_to=b.url + "/v1/chat/completions")
    with run_router(router_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        status, _ = http_post(r.url + "/v1/chat/completions", BODY, {"X-Data-Class": "public"})
        assert status == 502
        assert r.audit_lines()[-1]["failures"][-1] == "cloud:upstream_redirect"
    assert b.requests() == [] and len(cloud.requests()) == 1  # the key went nowhere else, and once


@pytest.mark.parametrize("preamble", ["retry: 3000\n\n", "id: 1\n", ": keep-alive\n\n", "event: message\n"])
def test_event_streams_may_start_with_any_sse_field(ups, tmp_path, preamble):
    ups["a"].control(sse_preamble=preamble)
    with run_router(router_config([ups["a"].url], None, tmp_path / "a.jsonl")) as r:
        out = openai.OpenAI(base_url=r.v1, api_key="x", max_retries=0).chat.completions.create(
            model="fake-model", messages=MSG, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in out if c.choices).startswith("answer from a part 0")
        line = r.audit_lines()[-1]
        assert (line["route"], line["error"]) == ("local", None)


def test_metric_labels_of_departed_engine_pods_are_dropped():
    from inference.router.metrics import RouterMetrics
    from inference.router.pool import UpstreamPool

    cfg = parse_router_config({"upstreams": [{"url": "http://engine:8000", "name": "engine", "discover": True}]})
    pool = UpstreamPool(cfg)
    metrics = RouterMetrics(True, pool, None)
    for i in range(200):  # pods replaced one after another
        (up,) = pool.set_addresses(0, {f"10.0.{i // 250}.{i % 250}"})[0]
        metrics.local_failure(up.label, "connect_refused")
        pool.expire_pending(0.0)
    text = metrics.render().decode()
    assert text.count("dsdeploy_router_local_failures_total{") == 1


def test_the_audit_buffer_is_bounded_and_its_writer_survives_a_bad_write(capsys):
    from inference.router.audit import AuditLog
    from inference.router.config import AuditConfig

    class Flaky:
        def __init__(self) -> None:
            self.lines: list[str] = []
            self.calls = 0

        def write(self, text: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise ValueError("a bug in one batch")
            self.lines.append(text)

        def flush(self) -> None:
            pass

    async def main() -> None:
        stream = Flaky()
        log = AuditLog(AuditConfig(max_buffered=100, flush_interval_s=0.05), stream)
        fields = (
            "id",
            1.0,
            None,
            None,
            "public",
            "POST",
            "/v1/chat/completions",
            "m",
            False,
            "local",
            "u",
            200,
            1,
            1,
            1.0,
            None,
            1,
            [],
            None,
            None,
            None,
            None,
            None,
            None,
        )
        await log.start()
        for _ in range(150):
            log.record(fields, None)
        assert log.dropped == 50
        await asyncio.sleep(0.2)  # the first write fails ...
        log.record(fields, None)
        await asyncio.sleep(0.2)  # ... and the writer goes on
        await log.stop()
        assert len(stream.lines) == 1 and stream.lines[0].count("\n") == 1

    asyncio.run(main())
    assert "writing 100 records failed: ValueError" in capsys.readouterr().err


def http_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=body, method="POST", headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}
