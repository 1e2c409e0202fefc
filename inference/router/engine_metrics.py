"""The vLLM metric series the router reads from each local engine's ``/metrics``, parsed once per poll.

Names are vLLM V1's (https://docs.vllm.ai/en/latest/design/metrics.html; ``vllm/v1/metrics/loggers.py`` of
the pinned 0.32); the project's server exports the same. ``engine_sums`` sums each wanted series over its
label sets (one per served model); the saturation check, the prefill rate and the TTFT estimate all read
that one result.
"""

from __future__ import annotations

import contextlib
import math
import re

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"
TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
QUEUE_SUM = "vllm:request_queue_time_seconds_sum"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
PREFILL_SUM = "vllm:request_prefill_time_seconds_sum"
WANTED = frozenset({WAITING, RUNNING, TTFT_COUNT, TTFT_SUM, QUEUE_SUM, PROMPT_TOKENS, PREFILL_SUM})

# name, optional labels, value (an optional timestamp may follow)
_SAMPLE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+([0-9.eE+-]+|NaN)", re.MULTILINE)


def engine_sums(text: str) -> dict[str, float]:
    """The wanted series of a Prometheus text, each summed over its label sets; absent ones are left out."""
    sums: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        if name in WANTED:
            with contextlib.suppress(ValueError):
                v = float(value)
                if math.isfinite(v):
                    sums[name] = sums.get(name, 0.0) + v
    return sums
