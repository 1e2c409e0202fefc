"""The server's metric names as promtool's linter reads them (no model needed: the exposition of every family)."""

from __future__ import annotations

from inference.server.metrics import ServerMetrics
from tests.support.promtool import check_metrics


def only_vllm_colon_names(problems: list[str]) -> None:
    """vLLM's names keep their colon so dashboards and autoscalers read both engines alike; promtool may flag
    only those, never the server's own dsdeploy_server_* series nor anything else."""
    assert problems, "promtool flagged nothing: it no longer sees the vllm:* names"
    for line in problems:
        assert line.startswith("vllm:") and line.endswith("metric names should not contain ':'"), line


def test_every_family_passes_promtool_but_vllms_colon_names() -> None:
    metrics = ServerMetrics("m")
    metrics.set_queue(1, 2)
    metrics.observe_inter_token(0.02)
    metrics.request_finished("stop", 5, 3, 0.5, 0.1)
    metrics.rejected.labels(reason="queue_full").inc()
    metrics.decode_batch_size.observe(2)
    metrics.ready.set(1)
    text = metrics.render().decode()
    assert "dsdeploy:" not in text
    for name in (
        "dsdeploy_server_ready",
        "dsdeploy_server_requests_rejected_total",
        "dsdeploy_server_max_queue",
        "dsdeploy_server_decode_batch_size_bucket",
        "dsdeploy_server_model_weight_bytes",
    ):
        assert name + "{" in text, name
    only_vllm_colon_names(check_metrics(text))
