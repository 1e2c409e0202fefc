"""Prometheus metrics under the names vLLM uses, so dashboards, the router and autoscalers treat both
engines alike. Every vLLM-named series carries the ``model_name`` label as vLLM's do.
The list with meanings is in docs/server.md.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # no *_created series (vLLM's /metrics has none either)

# Buckets as vLLM's (seconds).
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# The engine's finish reasons under vLLM V1's finished_reason values (stop, length, abort, error): a request
# cancelled by its client, timed out, or ended by the drain is an abort.
FINISHED_REASON = {"stop": "stop", "length": "length", "cancelled": "abort", "timeout": "abort", "error": "error"}

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        r, label = self.registry, {"model_name": model_name}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["model_name"], registry=r).labels(**label)

        def histogram(name: str, doc: str, buckets: tuple) -> Histogram:
            return Histogram(name, doc, ["model_name"], buckets=buckets, registry=r).labels(**label)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["model_name"], registry=r).labels(**label)

        self.num_running = gauge("vllm:num_requests_running", "Requests being generated (in the running batch).")
        self.num_waiting = gauge("vllm:num_requests_waiting", "Requests waiting in the queue for a batch slot.")
        self.kv_cache_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache slots in use (incl. padding) / (max_num_seqs * max_model_len), 0-1."
        )
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache (not recomputed)."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens prefilled (cached prefixes included).")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated.")
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Time from arrival to first token.", TTFT_BUCKETS)
        self.inter_token = histogram("vllm:inter_token_latency_seconds", "Time between two output tokens.", ITL_BUCKETS)
        self.time_per_output_token = histogram(
            "vllm:time_per_output_token_seconds",
            "Time between two output tokens (deprecated vLLM name of vllm:inter_token_latency_seconds).",
            ITL_BUCKETS,
        )
        self.request_time_per_output_token = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Per request: time from its first to its last token / (generated tokens - 1).",
            ITL_BUCKETS,
        )
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Time from arrival to the last token.", E2E_BUCKETS)
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting for a batch slot.", E2E_BUCKETS
        )
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS
        )
        self._success = Counter(
            "vllm:request_success", "Finished requests by finish reason.", ["model_name", "finished_reason"], registry=r
        )
        self._model_name = model_name
        self.weight_bytes = gauge(
            "dsdeploy_server_model_weight_bytes", "Memory held by the loaded weights (model.get_memory_footprint())."
        )
        self.max_num_seqs = gauge("dsdeploy_server_max_num_seqs", "Configured batch slots.")
        self.max_queue = gauge("dsdeploy_server_max_queue", "Configured waiting-queue bound.")
        self.ready = gauge("dsdeploy_server_ready", "1 when the model is loaded and the server accepts requests.")
        self.decode_batch_size = histogram(
            "dsdeploy_server_decode_batch_size", "Sequences decoded by one forward pass.", BATCH_BUCKETS
        )
        self.rejected = Counter(
            "dsdeploy_server_requests_rejected", "Requests refused before generation.", ["reason"], registry=r
        )

    def set_queue(self, running: int, waiting: int) -> None:
        self.num_running.set(running)
        self.num_waiting.set(waiting)

    def observe_inter_token(self, seconds: float) -> None:
        self.inter_token.observe(seconds)
        self.time_per_output_token.observe(seconds)

    def request_finished(
        self, reason: str, prompt_tokens: int, generated: int, seconds: float, decode_seconds: float
    ) -> None:
        """``decode_seconds``: from the request's first token to its last. Prompt tokens are counted at prefill."""
        label = FINISHED_REASON.get(reason, reason)
        self._success.labels(model_name=self._model_name, finished_reason=label).inc()
        self.request_prompt_tokens.observe(prompt_tokens)
        self.request_generation_tokens.observe(generated)
        if label != "error":
            self.e2e.observe(seconds)
            self.request_time_per_output_token.observe(decode_seconds / (generated - 1) if generated > 1 else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
