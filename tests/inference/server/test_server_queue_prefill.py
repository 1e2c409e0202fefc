"""The queue limit counts the requests being prefilled: one that arrives during a long prefill is refused at
once when the slots and the queue are taken, not queued past ``--max-queue``."""

from __future__ import annotations

import threading

import httpx
import pytest

from inference.server.engine.kv_batch import KVBatch
from tests.inference.server.http_threads import Post
from tests.inference.server.test_server_engine_failure import _wait

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
SHORT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def test_a_request_arriving_during_prefill_counts_the_prefilling_one(inprocess_server, monkeypatch):
    server = inprocess_server(max_num_seqs=1, max_queue=1)
    engine = server.runtime.engine
    real_prefill = KVBatch.prefill
    entered, release = threading.Event(), threading.Event()

    def held_prefill(*args, **kwargs):
        entered.set()
        release.wait(60)
        return real_prefill(*args, **kwargs)

    monkeypatch.setattr(KVBatch, "prefill", held_prefill)
    first = Post(server.url, SHORT)
    first.start()
    try:
        assert entered.wait(30)  # the first request holds the only slot, in prefill
        waiting = Post(server.url, SHORT)
        waiting.start()
        _wait(lambda: engine.num_waiting == 1)  # the second takes the queue's one place
        refused = httpx.post(server.url + "/v1/chat/completions", json=SHORT, timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
    finally:
        release.set()
    first.join(60)
    waiting.join(60)
    assert first.response.status_code == 200 and waiting.response.status_code == 200
    _wait(lambda: engine.idle)
