"""One reasoning shape for clients: DeepSeek's ``reasoning_content``, from the local engine (vLLM's
``reasoning`` or our server's ``reasoning_content``) and from the cloud, whole and streamed."""

from __future__ import annotations

import json

import openai
import pytest

from inference.router.proxy import Reply
from inference.router.reasoning_shape import for_clients, reshape_json

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "hi"}]


def _client(router, data_class: str = "internal") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.v1, api_key="unused", max_retries=0, timeout=20, default_headers={"X-Data-Class": data_class}
    )


def _streamed(client: openai.OpenAI) -> tuple[str, str, list[dict]]:
    """(reasoning, content, raw deltas) of a streamed answer."""
    deltas = []
    for chunk in client.chat.completions.create(model="fake-model", messages=MSG, stream=True):
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.model_dump())
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    return reasoning, content, deltas


@pytest.mark.parametrize("local_field", ["reasoning", "reasoning_content"])
def test_clients_read_reasoning_content_whichever_route_and_shape(ups, tmp_path, local_field):
    ups["a"].control(reasoning=True, reasoning_field=local_field)
    ups["cloud"].control(reasoning=True)  # the DeepSeek API's own shape
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        reasoning, content, deltas = _streamed(_client(r))
        assert reasoning == "thinking in a" and content.startswith("answer from a part 0")
        assert not any("reasoning" in d for d in deltas)
        for name in ("a", "cloud"):
            if name == "cloud":
                ups["a"].control(mode="status", status=503)
            raw = _client(r, "public").chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
            assert raw.headers["x-dsdeploy-route"] == ("local" if name == "a" else "cloud")
            message = raw.parse().choices[0].message.model_dump()
            assert message["reasoning_content"] == f"thinking in {name}"
            assert "reasoning" not in message  # one field, not two
            assert message["content"] == f"answer from {name}"


def test_streamed_cloud_answer_keeps_its_shape(ups, tmp_path):
    ups["a"].control(mode="status", status=503)
    ups["cloud"].control(reasoning=True)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        reasoning, content, _ = _streamed(_client(r, "public"))
    assert reasoning == "thinking in cloud" and content.startswith("answer from cloud part 0")


def test_answers_without_reasoning_pass_byte_for_byte():
    body = b'{"choices":[{"message":{"content":"say \\"reasoning\\": no"}}],  "usage": {}}'
    assert reshape_json(body) is body
    garbage = b'{"reasoning": broken'
    assert reshape_json(garbage) is garbage


def test_whole_answer_is_renamed_and_an_existing_reasoning_content_wins():
    both = json.dumps({"choices": [{"message": {"reasoning": "vllm", "reasoning_content": "ds", "content": "x"}}]})
    out = json.loads(reshape_json(both.encode()))
    assert out["choices"][0]["message"] == {"reasoning_content": "ds", "content": "x"}
    reply = for_clients("/v1/completions", Reply(200, "application/json", body=both.encode()))
    assert reply.body == both.encode()  # text completions carry no reasoning: untouched
