"""The OpenAI API as clients use it, through the router: request ids, one error vocabulary with the model
server, 405 with Allow, stream headers for proxies, and ``client.models.retrieve``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from inference.openai_errors import ERROR_TYPES
from inference.router.errors import error_body as router_error_body
from inference.server.api.errors import error_body as server_error_body

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "hi"}]


def client(router) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.v1, api_key="unused", max_retries=0, timeout=20)


def call(method: str, url: str) -> tuple[int, dict[str, str], dict]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read() or b"{}")


def test_router_and_server_name_every_error_status_alike():
    for status in (*ERROR_TYPES, 418, 507):
        router = json.loads(router_error_body(status, "m"))["error"]["type"]
        assert router == server_error_body(status, "m")["error"]["type"], status


def test_request_id_reaches_the_client_and_the_engine(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        raw = client(router).chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
        answer = raw.parse()
        rid = raw.headers["x-request-id"]
        assert answer._request_id == rid == raw.headers["x-dsdeploy-request-id"]
        # the engine gets the same id, so its logs and the router's audit line meet
        assert ups["a"].requests()[-1]["headers"]["x-request-id"] == rid
        assert router.audit_lines()[-1]["request_id"] == rid
        stream = client(router).chat.completions.create(model="fake-model", messages=MSG, stream=True)
        assert stream.response.headers["x-request-id"]
        list(stream)


def test_relayed_stream_tells_proxies_not_to_buffer(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "audit.jsonl")
    with (
        run_router(cfg) as router,
        client(router).chat.completions.with_streaming_response.create(
            model="fake-model", messages=MSG, stream=True
        ) as resp,
    ):
        assert resp.headers["x-accel-buffering"] == "no"
        assert resp.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/completions", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/ready", "GET, HEAD"),
        ("POST", "/v1/models", "GET"),
        ("POST", "/metrics", "GET"),
        ("DELETE", "/v1/models/fake-model", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(ups, tmp_path, method, path, allow):
    cfg = router_config([ups["a"].url], None, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        status, headers, body = call(method, router.url + path)
    assert status == 405 and headers["allow"] == allow, (status, headers)
    assert body["error"]["type"] == "invalid_request_error" and headers["x-request-id"]


def test_unknown_path_stays_404_without_allow(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        status, headers, body = call("GET", router.url + "/v1/nothing")
    assert status == 404 and "allow" not in headers and body["error"]["type"] == "not_found_error"


def test_models_retrieve_answers_one_model_or_404(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        listed = [m.id for m in client(router).models.list()]
        assert listed
        model = client(router).models.retrieve(listed[0])
        assert model.id == listed[0] and model.object == "model"
        with pytest.raises(openai.NotFoundError) as info:
            client(router).models.retrieve("no-such-model")
        assert info.value.body["code"] == "model_not_found"
        # a hostile id: bounded in the answer, no lookup
        status, _, body = call("GET", router.url + "/v1/models/" + "x" * 5000)
        assert status == 404 and len(body["error"]["message"]) < 400
