"""Hostile and odd clients and upstreams: bodies that never finish, clients that stop reading, nested or
loosely typed JSON, repeated policy headers, a malformed `usage`, a cached cloud answer. The router
answers each with a clear 4xx (or a clean cut), never a 500 or a hang, and restricted data stays home."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "the restricted plan"}]


def raw_post(url: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, dict[str, str], dict]:
    """POST with headers exactly as given (repeats included), which urllib and openai cannot send."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers]:
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b'{"messages":[{"role":"user","content":' + b"[" * 50_000 + b"]" * 50_000 + b"}]}", "invalid_json", None),
        (b'\xef\xbb\xbf{"messages":[{"role":"user","content":"hi"}]}', "invalid_json", None),  # a BOM
        (json.dumps({"messages": MSG, "max_tokens": "5"}).encode(), "invalid_value", "max_tokens"),
        (json.dumps({"messages": MSG, "temperature": True}).encode(), "invalid_value", "temperature"),
        (json.dumps({"messages": MSG, "temperature": "0"}).encode(), "invalid_value", "temperature"),
        (json.dumps({"messages": MSG, "n": "2"}).encode(), "invalid_value", "n"),
    ],
)
def test_nested_and_loosely_typed_json_get_a_400_never_a_500(ups, tmp_path, body, code, param):
    with run_router(router_config([ups["a"].url], None, tmp_path / "a.jsonl")) as r:
        status, headers, err = raw_post(r.url, body, [])
        assert status == 400, err
        assert err["error"]["code"] == code and err["error"]["param"] == param
        assert headers["x-dsdeploy-route"] == "local"
    assert ups["a"].requests() == []


def test_a_body_that_never_finishes_gets_a_408(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", timeouts={"body_s": 0.5})
    with run_router(cfg) as r:
        port = int(r.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 500\r\n\r\n{"messa'
            )  # 7 of 500 bytes, then nothing
            answer = b""
            while b"timeouts.body_s" not in answer:  # the error body names the setting
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b'"code": "request_timeout"' in answer, answer[:300]
        line = r.audit_lines()[-1]
        assert line["status"] == 408 and line["error"] == "request_timeout"
        assert not r.app.body_deadlines.reading and not r.app.body_deadlines.expired
        # the router goes on serving
        status, _, _ = raw_post(r.url, json.dumps({"messages": MSG}).encode(), [])
        assert status == 200
    assert len(ups["a"].requests()) == 1


def test_a_client_that_stops_reading_a_stream_is_cut_and_frees_the_upstream(ups, tmp_path):
    ups["a"].control(chunks=200_000)  # ~40 MB of events: far beyond every socket buffer on the way
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", timeouts={"stream_idle_s": 0.5})
    with run_router(cfg) as r:
        port = int(r.url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        try:
            body = json.dumps({"model": "fake-model", "messages": MSG, "stream": True}).encode()
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert sock.recv(200).startswith(b"HTTP/1.1 200")  # then it reads nothing more
            upstream = r.app.pool.upstreams[0]
            assert wait_until(lambda: upstream.in_flight == 0, timeout=15), "the stalled stream still holds its slot"
            line = r.audit_lines()[-1]
            assert line["error"] == "client_stalled" and line["status"] == 200
        finally:
            sock.close()


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Data-Class", "restricted"), ("X-Data-Class", "public")],
        [("X-Data-Class", "public"), ("X-Data-Class", "restricted")],
        [("X-Data-Class", "public, restricted")],
    ],
)
def test_repeated_data_class_headers_resolve_to_the_strictest(ups, tmp_path, headers):
    ups["a"].control(mode="status", status=500)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        status, resp_headers, err = raw_post(r.url, json.dumps({"messages": MSG}).encode(), headers)
        assert status == 503 and err["error"]["code"] == "local_pool_unavailable"
        assert "'restricted' may not leave" in err["error"]["message"]
        assert resp_headers["x-dsdeploy-route"] == "local"
        assert r.audit_lines()[-1]["data_class"] == "restricted"
    assert ups["cloud"].requests() == []


def test_two_authorization_headers_are_refused(ups, tmp_path):
    with run_router(router_config([ups["a"].url], None, tmp_path / "a.jsonl")) as r:
        status, _, err = raw_post(
            r.url,
            json.dumps({"messages": MSG}).encode(),
            [("Authorization", "Bearer one"), ("Authorization", "Bearer two")],
        )
        assert status == 400 and err["error"]["param"] == "Authorization"
    assert ups["a"].requests() == []


def test_a_malformed_usage_from_an_upstream_is_not_a_router_error(ups, tmp_path):
    ups["a"].control(usage={"prompt_tokens": "lots", "completion_tokens": -3})
    with run_router(router_config([ups["a"].url], None, tmp_path / "a.jsonl")) as r:
        status, _, answer = raw_post(r.url, json.dumps({"messages": MSG}).encode(), [])
        assert status == 200 and answer["choices"][0]["message"]["content"] == "answer from a"
        line = r.audit_lines()[-1]
        assert line["status"] == 200 and line["error"] is None
        assert line["prompt_tokens"] == 0 and line["completion_tokens"] == 0  # unknown, not invented


def test_a_cache_hit_names_where_the_stored_answer_was_made(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl", cache={"enabled": True})
    body = json.dumps({"model": "fake-model", "messages": MSG, "temperature": 0}).encode()
    with run_router(cfg) as r:
        status, headers, first = raw_post(r.url, body, [("X-Data-Class", "public")])
        assert status == 200 and headers["x-dsdeploy-route"] == "cloud"
        status, headers, again = raw_post(r.url, body, [("X-Data-Class", "restricted")])
        assert status == 200 and again == first
        assert headers["x-dsdeploy-route"] == "cloud" and headers["x-dsdeploy-cache"] == "hit"
        line = r.audit_lines(at_least=2)[-1]
        assert line["cache"] == "hit" and line["upstream"] == "cache" and line["route"] == "cloud"
    assert len(ups["cloud"].requests()) == 1  # the hit reached no upstream, local or cloud
