"""bitsandbytes 8-bit and 4-bit load on CPU and answer; the weight-memory gauge shows the saving."""

from __future__ import annotations

import httpx
import pytest

from tests.support.prometheus_text import value

pytestmark = pytest.mark.slow

FP32_BYTES = 134_515_008 * 4  # SmolLM2-135M parameters in float32


@pytest.mark.parametrize(("quantization", "max_fraction"), [("bnb-8bit", 0.6), ("bnb-4bit", 0.45)])
def test_quantized_model_loads_and_answers(server_factory, quantization, max_fraction):
    proc = server_factory("--quantization", quantization)
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    reply = httpx.post(proc.url + "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].strip()
    weight = value(proc.url + "/metrics", "dsdeploy_server_model_weight_bytes")
    assert 0 < weight < FP32_BYTES * max_fraction
    assert f"weights {weight / 2**20:.1f} MiB" in proc.log_tail(20000)
