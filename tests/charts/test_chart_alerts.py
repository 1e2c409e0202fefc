"""The chart's alerts run in promtool: every scenario's rules load, and each alert fires above its threshold and
stays quiet below it, on synthetic series labelled as the ServiceMonitors, kube-state-metrics and the DCGM
exporter label them (promtool test rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.charts.conftest import NAMESPACE, SCENARIOS, helm_template, parse, scenario_file
from tests.support.promtool import check_rules, run_rule_tests

ROUTER = {"namespace": NAMESPACE, "service": "ds-dsdeploy-router"}
ENGINE = {"namespace": NAMESPACE, "service": "ds-dsdeploy-engine"}
DEPLOYMENT = {"namespace": NAMESPACE, "deployment": "ds-dsdeploy-engine"}
OTHER_ROUTER = {"namespace": NAMESPACE, "service": "other-dsdeploy-router"}  # another release, same namespace
OTHER_ENGINE = {"namespace": NAMESPACE, "service": "other-dsdeploy-engine"}
# kube-prometheus-stack scrapes the DCGM exporter with honorLabels false: the GPU's pod is in exported_*.
DCGM_EXPORTED = {
    "exported_namespace": NAMESPACE,
    "exported_pod": "ds-dsdeploy-engine-7d9f-x2x4q",
    "namespace": "gpu-operator",
    "pod": "nvidia-dcgm-exporter-abcde",
    "gpu": "0",
    "Hostname": "gpu-1",
}
DCGM_HONORED = {"namespace": NAMESPACE, "pod": "ds-dsdeploy-engine-7d9f-x2x4q", "gpu": "1", "Hostname": "gpu-2"}
DCGM_OTHER = {**DCGM_EXPORTED, "exported_pod": "other-dsdeploy-engine-5c4b-abcde", "gpu": "2"}

FALLBACK_HINT = (
    "Local engines are failing or saturated; cloud spend rises. See dsdeploy_router_fallbacks_total by reason."
)


def rules_of(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> list[dict]:
    proc = helm_template("--set", "monitoring.prometheusRule.enabled=true", *args, values=values, tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    [rule] = parse(proc.stdout).kind("PrometheusRule")
    return rule["spec"]["groups"]


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def fires(alert: str, at: str, *expected: dict) -> dict:
    return {"eval_time": at, "alertname": alert, "exp_alerts": list(expected)}


def quiet(alert: str, at: str = "40m") -> dict:
    return fires(alert, at)


def case(input_series: list[dict], *checks: dict) -> dict:
    return {"interval": "1m", "input_series": input_series, "alert_rule_test": list(checks)}


def requests(labels: dict[str, str], route: str, per_minute: int) -> dict:
    return series("dsdeploy_router_requests_total", {**labels, "route": route, "status": "200"}, f"0+{per_minute}x60")


def dcgm(labels: dict[str, str], used: int, free: int) -> list[dict]:
    return [series("DCGM_FI_DEV_FB_USED", labels, f"{used}x60"), series("DCGM_FI_DEV_FB_FREE", labels, f"{free}x60")]


def available(replicas: int) -> dict:
    return series("kube_deployment_status_replicas_available", DEPLOYMENT, f"{replicas}x60")


def run(groups: list[dict], tests: list[dict], folder: Path) -> None:
    proc = run_rule_tests(groups, tests, folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenarios_rules_pass_promtool_check_rules(scenario: str, tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file(scenario)))
    proc = check_rules(groups, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "rules found" in proc.stdout


def test_thresholds_read_as_percentages() -> None:
    # Helm's `mul` truncated 0.2 to "0%" and 0.97 to "0%".
    rules = {r["alert"]: r for r in rules_of("-f", str(scenario_file("gke-pro")))[0]["rules"]}
    assert (
        rules["DsdeployFallbackRateHigh"]["annotations"]["summary"] == "More than 20% of requests go to the cloud API"
    )
    assert rules["DsdeployGpuMemoryHigh"]["annotations"]["summary"] == "GPU framebuffer above 97% (DCGM exporter)"


def test_cpu_engines_get_no_gpu_alerts() -> None:
    alerts = {r["alert"] for r in rules_of("-f", str(scenario_file("onprem-cpu")))[0]["rules"]}
    assert "DsdeployQueueSaturated" in alerts
    assert not {"DsdeployGpuMemoryHigh", "DsdeployGpuMetricsAbsent"} & alerts


def test_fallback_alert_fires_above_its_threshold_only(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))
    high = {
        "exp_labels": {"severity": "warning", **ROUTER},
        "exp_annotations": {
            "summary": "More than 20% of requests go to the cloud API",
            "description": "Over 10 minutes the cloud API answered 30% of the requests to ds-dsdeploy-router "
            f"(cache hits are not counted as cloud). {FALLBACK_HINT}",
        },
    }
    run(
        groups,
        [
            case(
                [requests(ROUTER, "cloud", 30), requests(ROUTER, "local", 70)],
                quiet("DsdeployFallbackRateHigh", "5m"),  # above the threshold, but not yet for 10 minutes
                fires("DsdeployFallbackRateHigh", "30m", high),
            ),
            case([requests(ROUTER, "cloud", 10), requests(ROUTER, "local", 90)], quiet("DsdeployFallbackRateHigh")),
            # cache hits (route="cache") are answers nobody paid the cloud for: 10% cloud, not 60%
            case(
                [requests(ROUTER, "cloud", 10), requests(ROUTER, "cache", 50), requests(ROUTER, "local", 40)],
                quiet("DsdeployFallbackRateHigh"),
            ),
            # another release in the same namespace falling back entirely does not fire this release's alert
            case(
                [requests(ROUTER, "local", 100), requests(OTHER_ROUTER, "cloud", 100)],
                quiet("DsdeployFallbackRateHigh"),
            ),
        ],
        tmp_path,
    )


def test_queue_alert_sums_this_releases_engines(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))

    def waiting(labels: dict[str, str], pod: str, n: int) -> dict:
        return series("vllm:num_requests_waiting", {**labels, "pod": pod, "model_name": "m"}, f"{n}x60")

    high = {
        "exp_labels": {"severity": "warning", **ENGINE},
        "exp_annotations": {
            "summary": "Engines have more than 20 requests waiting",
            "description": "Now 25 requests wait for a batch slot on ds-dsdeploy-engine. Add engine replicas "
            "(engine.autoscaling) or GPUs; the router spills over to the cloud only for allowed "
            "data classes.",
        },
    }
    run(
        groups,
        [
            case(
                [waiting(ENGINE, "e-1", 12), waiting(ENGINE, "e-2", 13)], fires("DsdeployQueueSaturated", "10m", high)
            ),
            case([waiting(ENGINE, "e-1", 10), waiting(ENGINE, "e-2", 9)], quiet("DsdeployQueueSaturated")),
            case([waiting(ENGINE, "e-1", 3), waiting(OTHER_ENGINE, "o-1", 100)], quiet("DsdeployQueueSaturated")),
        ],
        tmp_path,
    )


def test_gpu_alert_reads_both_dcgm_labellings(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))

    def high(gpu: str, host: str, percent: str) -> dict:
        return {
            "exp_labels": {"severity": "warning", **ENGINE, "gpu": gpu, "Hostname": host},
            "exp_annotations": {
                "summary": "GPU framebuffer above 97% (DCGM exporter)",
                "description": f"GPU {gpu} on {host} has {percent} of its framebuffer in use. Out-of-memory "
                "risk; lower engine.gpuMemoryUtilization or engine.maxModelLen.",
            },
        }

    run(
        groups,
        [
            case(dcgm(DCGM_EXPORTED, 79000, 1000), fires("DsdeployGpuMemoryHigh", "20m", high("0", "gpu-1", "98.75%"))),
            case(dcgm(DCGM_HONORED, 79000, 1000), fires("DsdeployGpuMemoryHigh", "20m", high("1", "gpu-2", "98.75%"))),
            case(dcgm(DCGM_EXPORTED, 70000, 10000), quiet("DsdeployGpuMemoryHigh")),
            case(dcgm(DCGM_OTHER, 79900, 100), quiet("DsdeployGpuMemoryHigh")),
        ],
        tmp_path,
    )


def test_engine_not_ready(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))
    down = {
        "exp_labels": {"severity": "critical", **DEPLOYMENT},
        "exp_annotations": {
            "summary": "No ready engine pod for deepseek-r1-distill-llama-70b (ds-dsdeploy-engine)",
            "description": "The router is answering from the cloud (if allowed) or failing. Check the download "
            "Job, GPU scheduling and engine logs.",
        },
    }
    run(
        groups,
        [
            case([available(0)], quiet("DsdeployEngineNotReady", "10m"), fires("DsdeployEngineNotReady", "20m", down)),
            case([available(1)], quiet("DsdeployEngineNotReady")),
        ],
        tmp_path,
    )


def test_absent_guards_fire_when_a_metric_source_is_gone(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))
    annotations = {r["alert"]: r["annotations"] for r in groups[0]["rules"]}

    def alert(name: str, **labels: str) -> dict:
        return {"exp_labels": {"severity": "warning", **labels}, "exp_annotations": annotations[name]}

    healthy = series("dsdeploy_router_upstream_healthy", {**ROUTER, "upstream": "engine"}, "1x60")
    waiting = series("vllm:num_requests_waiting", {**ENGINE, "model_name": "m"}, "0x60")
    run(
        groups,
        [
            # nothing scraped at all: each guard names its source
            case(
                [series("up", {"job": "unrelated"}, "1x60")],
                fires("DsdeployRouterMetricsAbsent", "20m", alert("DsdeployRouterMetricsAbsent", **ROUTER)),
                fires("DsdeployKubeStateMetricsAbsent", "20m", alert("DsdeployKubeStateMetricsAbsent", **DEPLOYMENT)),
                fires("DsdeployEngineMetricsAbsent", "20m", alert("DsdeployEngineMetricsAbsent", **ENGINE)),
                fires("DsdeployGpuMetricsAbsent", "20m", alert("DsdeployGpuMetricsAbsent", **ENGINE)),
            ),
            # the engine is up (kube-state-metrics says so) but its metrics and its GPUs' are missing
            case(
                [healthy, available(1)],
                quiet("DsdeployRouterMetricsAbsent"),
                quiet("DsdeployKubeStateMetricsAbsent"),
                fires("DsdeployEngineMetricsAbsent", "20m", alert("DsdeployEngineMetricsAbsent", **ENGINE)),
                fires("DsdeployGpuMetricsAbsent", "20m", alert("DsdeployGpuMetricsAbsent", **ENGINE)),
            ),
            # no engine pod: DsdeployEngineNotReady speaks, the engine-metric guards stay quiet
            case([healthy, available(0)], quiet("DsdeployEngineMetricsAbsent"), quiet("DsdeployGpuMetricsAbsent")),
            # everything scraped: all quiet; another release's series do not count
            case(
                [healthy, available(1), waiting, *dcgm(DCGM_EXPORTED, 1000, 79000)],
                quiet("DsdeployRouterMetricsAbsent"),
                quiet("DsdeployEngineMetricsAbsent"),
                quiet("DsdeployKubeStateMetricsAbsent"),
                quiet("DsdeployGpuMetricsAbsent"),
            ),
            case(
                [series("dsdeploy_router_upstream_healthy", {**OTHER_ROUTER, "upstream": "e"}, "1x60")],
                fires("DsdeployRouterMetricsAbsent", "20m", alert("DsdeployRouterMetricsAbsent", **ROUTER)),
            ),
        ],
        tmp_path,
    )


def test_thresholds_follow_the_values(tmp_path: Path) -> None:
    values = {
        "engine": {"gpusPerReplica": 1},
        "monitoring": {
            "prometheusRule": {
                "fallbackRatioThreshold": 0.35,
                "queueSaturatedThreshold": 4,
                "gpuMemoryThreshold": 0.905,
            }
        },
    }
    groups = rules_of(values=values, tmp=tmp_path)
    rules = {r["alert"]: r for r in groups[0]["rules"]}
    assert (
        rules["DsdeployFallbackRateHigh"]["annotations"]["summary"] == "More than 35% of requests go to the cloud API"
    )
    assert rules["DsdeployGpuMemoryHigh"]["annotations"]["summary"] == "GPU framebuffer above 90.5% (DCGM exporter)"
    assert rules["DsdeployQueueSaturated"]["annotations"]["summary"] == "Engines have more than 4 requests waiting"

    def alerted(name: str, **labels: str) -> dict:
        annotations = dict(rules[name]["annotations"])
        return {"exp_labels": {"severity": "warning", **labels}, "exp_annotations": annotations}

    fallback = alerted("DsdeployFallbackRateHigh", **ROUTER)
    fallback["exp_annotations"]["description"] = fallback["exp_annotations"]["description"].replace(
        "{{ $value | humanizePercentage }}", "40%"
    )
    run(
        groups,
        [
            case(
                [requests(ROUTER, "cloud", 40), requests(ROUTER, "local", 60)],
                fires("DsdeployFallbackRateHigh", "30m", fallback),
            ),
            case([requests(ROUTER, "cloud", 30), requests(ROUTER, "local", 70)], quiet("DsdeployFallbackRateHigh")),
            case(dcgm(DCGM_EXPORTED, 900, 100), quiet("DsdeployGpuMemoryHigh")),
        ],
        tmp_path,
    )


def test_budget_alert_fires_on_refusals_and_is_quiet_without(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))
    labels = {**ROUTER, "reason": "budget_exhausted", "scope": "total", "period": "day"}
    spent = {
        "exp_labels": {"severity": "warning", **ROUTER, "scope": "total", "period": "day"},
        "exp_annotations": {
            "summary": "The cloud budget total per day is spent (ds-dsdeploy-router)",
            "description": "Requests that may leave no longer go to the cloud; local engines serve them, or "
            "they get 429 with Retry-After until the UTC day starts anew. Raise limits.budgets "
            "(router.limits.budgets) or add local capacity.",
        },
    }
    run(
        groups,
        [
            case(
                [series("dsdeploy_router_budget_refused_total", labels, "0x10 0+3x50")],
                quiet("DsdeployCloudBudgetExhausted", "5m"),
                fires("DsdeployCloudBudgetExhausted", "30m", spent),
            ),
            # budgets set but none spent: the counter exists and stays flat
            case(
                [series("dsdeploy_router_budget_refused_total", labels, "0x60")], quiet("DsdeployCloudBudgetExhausted")
            ),
            # not countable (Redis down) is the other alert's business; another release's refusals are its own
            case(
                [
                    series(
                        "dsdeploy_router_budget_refused_total", {**labels, "reason": "budget_unavailable"}, "0+3x60"
                    ),
                    series("dsdeploy_router_budget_refused_total", {**labels, **OTHER_ROUTER}, "0+3x60"),
                ],
                quiet("DsdeployCloudBudgetExhausted"),
            ),
        ],
        tmp_path,
    )


def test_shared_state_alert_fires_when_a_router_pod_loses_redis(tmp_path: Path) -> None:
    groups = rules_of("-f", str(scenario_file("gke-pro")))
    down = {
        "exp_labels": {"severity": "critical", **ROUTER},
        "exp_annotations": {
            "summary": "Router pods of ds-dsdeploy-router cannot reach their Redis (router.limits.redis)",
            "description": "1 router pod(s) cannot count cloud spend: no request leaves for the cloud (budgets "
            "fail closed) and rate limits are counted per pod. Check Redis, its password Secret "
            "and the router's NetworkPolicy egress.",
        },
    }
    up = series("dsdeploy_router_shared_state_up", {**ROUTER, "pod": "r-1"}, "1x60")
    run(
        groups,
        [
            case(
                [up, series("dsdeploy_router_shared_state_up", {**ROUTER, "pod": "r-2"}, "1x5 0x55")],
                quiet("DsdeployRouterSharedStateDown", "6m"),
                fires("DsdeployRouterSharedStateDown", "20m", down),
            ),
            case(
                [up, series("dsdeploy_router_shared_state_up", {**OTHER_ROUTER, "pod": "o-1"}, "0x60")],
                quiet("DsdeployRouterSharedStateDown"),
            ),
        ],
        tmp_path,
    )
