"""The Grafana dashboard's PromQL parses (promtool), reads metrics the router and server really expose, shows a
namespace on a fresh install, and its GPU panel finds the DCGM series as kube-prometheus-stack labels them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inference.router.config import parse_router_config
from inference.router.metrics import RouterMetrics
from inference.router.pool import UpstreamPool
from inference.router.record import RequestRecord
from inference.server.metrics import ServerMetrics
from tests.charts.conftest import NAMESPACE, Rendered
from tests.support.promtool import check_rules, run_rule_tests

# Series of other exporters the dashboard reads (the DCGM exporter's framebuffer gauges).
EXTERNAL = {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}


@pytest.fixture(scope="module")
def board(rendered: dict[str, Rendered]) -> dict:
    config_map = rendered["gke-base"].one("ConfigMap", "monitoring")
    return json.loads(next(iter(config_map["data"].values())))


def targets(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL with the Grafana variables filled in) of every query, the variables' included."""
    out = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            out.append((f"variable {variable['name']}", _label_values_selector(variable["query"])))
    return [(title, expr.replace("$namespace", NAMESPACE)) for title, expr in out]


def _label_values_selector(query: str) -> str:
    match = re.fullmatch(r"label_values\((.+), *\w+\)", query)
    assert match, f"variable query {query!r} is not label_values(series, label)"
    return match.group(1)


def router_metrics(requests: bool) -> str:
    config = parse_router_config(
        {
            "upstreams": [{"url": "http://127.0.0.1:9"}],
            "cloud": {
                "base_url": "http://127.0.0.1:9",
                "api_key": "${K}",
                "models": {"*": "deepseek-chat"},
                "prices": {"deepseek-chat": {"input_usd_per_mtok": 0.27, "output_usd_per_mtok": 1.1}},
            },
        },
        environ={"K": "sk-test"},
    )
    metrics = RouterMetrics(True, UpstreamPool(config), config.cloud)
    if requests:
        metrics.request(
            RequestRecord("a", 0.0, "/v1/chat/completions", status=200, prompt_tokens=10, completion_tokens=5), 0.1
        )
        metrics.request(
            RequestRecord(
                "b",
                0.0,
                "/v1/chat/completions",
                route="cloud",
                status=200,
                prompt_tokens=10,
                completion_tokens=5,
                cloud_model="deepseek-chat",
                cloud_prompt_tokens=10,
                cloud_completion_tokens=5,
            ),
            0.2,
        )
        metrics.fallback("local_unavailable")
    return metrics.render().decode()


def exposed_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_query_parses_in_promtool(board: dict, tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(targets(board))]
    assert len(rules) >= 10
    proc = check_rules([{"name": "dashboard", "rules": rules}], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_the_dashboard_reads_is_exposed(board: dict) -> None:
    server = ServerMetrics("m")
    server.request_finished("stop", 5, 3, 0.5, 0.1)
    exposed = exposed_names(router_metrics(requests=True)) | exposed_names(server.render().decode()) | EXTERNAL
    for title, expr in targets(board):
        names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
        if re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
            names.add(expr)  # a bare series name (the variable's)
        assert names, (title, expr)
        assert names <= exposed, f"{title}: {sorted(names - exposed)} is exposed by neither router nor server"


def test_namespace_variable_has_a_series_before_the_first_request(board: dict) -> None:
    [variable] = [v for v in board["templating"]["list"] if v["name"] == "namespace"]
    metric = _label_values_selector(variable["query"])
    fresh = router_metrics(requests=False)
    assert any(line.startswith(metric + "{") for line in fresh.splitlines()), (
        f"{metric} has no series on a router that has answered nothing: a fresh install shows no namespace"
    )


def test_gpu_panel_reads_both_dcgm_labellings(board: dict, tmp_path: Path) -> None:
    [(_, expr)] = [(t, e) for t, e in targets(board) if "DCGM_FI_DEV_FB_USED" in e]
    exported = 'exported_namespace="dsdeploy",exported_pod="e-1",namespace="gpu-operator",gpu="0",Hostname="n1"'
    honored = 'namespace="dsdeploy",pod="e-2",gpu="1",Hostname="n2"'
    elsewhere = 'exported_namespace="other",exported_pod="o-1",namespace="gpu-operator",gpu="2",Hostname="n3"'
    series = []
    for labels, used, free in ((exported, 60, 20), (honored, 20, 60), (elsewhere, 80, 0)):
        series += [
            {"series": f"DCGM_FI_DEV_FB_USED{{{labels}}}", "values": f"{used}x5"},
            {"series": f"DCGM_FI_DEV_FB_FREE{{{labels}}}", "values": f"{free}x5"},
        ]
    test = {
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [
            {
                "expr": expr,
                "eval_time": "2m",
                "exp_samples": [
                    {"labels": '{Hostname="n1",gpu="0"}', "value": 0.75},
                    {"labels": '{Hostname="n2",gpu="1"}', "value": 0.25},
                ],
            }
        ],
    }
    proc = run_rule_tests([], [test], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
