"""One replica's capacity in a cost study: planned for the workload's calls, measured figures validated."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dsdeploy.cli import main
from infra.decision.cost_model import SECONDS_PER_YEAR, Workload, calls_per_replica_year
from infra.decision.currency import DecisionInputError
from infra.decision.study import CostRequest, run_study


def _study(capsys, *argv):
    assert main(["cost", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_workload_plans_1024_tokens_and_counts_prefill(capsys):
    data = _study(capsys, "--tier", "base")
    cap = data["capacities"][0]
    # 500 + 500 tokens per call -> max model length 1,024 (next power of two), not the planner's 32,768.
    assert cap["max_model_len"] == 1024
    # 7B bf16 on one A100 40GB: 353,240 KV tokens // 1,024 = 344 sequences, capped at vLLM's 256.
    # decode bound: 256 x 1,555 GB/s / (14,141,238,272 streamed weight bytes + 256 x 1,024 x 57,344 KV bytes)
    decode = 256 * 1555e9 / (14_141_238_272 + 256 * 1024 * 57_344)
    assert cap["tokens_per_s"] == pytest.approx(decode, abs=0.01) and round(decode) == 13_645
    # prefill bound: 312 TFLOP/s / (2 x 7,615,616,512 active parameters) = 20,484 tokens/s
    prefill = 312e12 / (2 * 7_615_616_512)
    assert cap["prefill_tokens_per_s"] == pytest.approx(prefill, abs=0.01)
    # one call holds the replica 500/13,645 s (decode) + 500/20,484 s (prefill); at utilization 0.6, peak x2:
    seconds = 500 / decode + 500 / prefill  # 0.06105 s
    calls = 0.6 * SECONDS_PER_YEAR / (seconds * 2)  # 155.0M calls per replica-year
    assert cap["calls_per_replica_year"] == pytest.approx(calls, rel=1e-4) and round(calls / 1e6) == 155
    assert "max_model_len 1,024" in cap["source"] and "prefill 20,484 tokens/s" in cap["source"]


def test_long_calls_plan_a_longer_context_and_too_long_calls_are_refused(capsys):
    data = _study(capsys, "--tier", "base", "--prompt-tokens", "3000", "--completion-tokens", "1000")
    assert data["capacities"][0]["max_model_len"] == 4096
    data = _study(capsys, "--tier", "base", "--context", "8192")
    assert data["capacities"][0]["max_model_len"] == 8192  # an explicit --context wins
    assert main(["cost", "--tier", "base", "--context", "512"]) == 2
    err = capsys.readouterr().err
    assert "--context 512: a call of 500 prompt + 500 completion = 1,000 tokens does not fit" in err
    assert main(["cost", "--tier", "base", "--prompt-tokens", "200000"]) == 2
    assert "longer than deepseek-ai/DeepSeek-R1-Distill-Qwen-7B's maximum context of 131,072" in capsys.readouterr().err


def test_measured_throughput_keeps_the_plans_layout_and_skips_prefill(capsys):
    data = _study(capsys, "--tier", "pro", "--throughput-tokens-per-s", "2000")
    cap = data["capacities"][0]
    assert cap["source"].startswith("measured") and "TP 1" in cap["source"]
    assert cap["gpus_per_replica"] == 1 and cap["prefill_tokens_per_s"] is None
    # a measured output rate already includes prompt time: 2,000 x 0.6 x 31,536,000 / (500 x 2) = 37.8M
    assert cap["calls_per_replica_year"] == pytest.approx(2000 * 0.6 * SECONDS_PER_YEAR / 1000)
    per_unit = {o["key"]: o["replicas_per_node"] for o in data["options"]}
    assert per_unit["pro on-prem"] == 4 and per_unit["pro eks on-demand"] == 8 and per_unit["pro gke spot"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nosuchmodel", "--quantization", "int3"], "--model 'nosuchmodel': unknown model"),
        (["--quantization", "int3"], "--quantization 'int3': unknown; allowed: bf16, fp8"),
        (["--context", "10"], "--context 10"),
        (
            ["--model", "v3", "--quantization", "bf16"],
            "--throughput-tokens-per-s: v3 cannot run on tier pro at max model length 1,024",
        ),
    ],
)
def test_measured_throughput_does_not_bypass_the_model_checks(capsys, argv, message):
    assert main(["cost", "--tier", "pro", "--throughput-tokens-per-s", "100", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_report_refuses_to_price_a_plan_that_does_not_fit(capsys):
    rc = main(
        [
            "report",
            "--model",
            "v3",
            "--quantization",
            "bf16",
            "--tier",
            "pro",
            "--volume",
            "1e6",
            "--throughput-tokens-per-s",
            "100",
        ]
    )
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "does not fit tier pro" in captured.err


def test_calls_per_replica_year_by_hand_and_its_limits():
    w = Workload(prompt_tokens=1000, completion_tokens=250, peak_to_average=4)
    # 250 / 500 s decode + 1,000 / 10,000 s prefill = 0.6 s per call; 0.5 x 31,536,000 / (0.6 x 4) = 6.57M
    assert calls_per_replica_year(500, w, 0.5, prefill_tokens_per_s=10_000) == pytest.approx(6_570_000)
    assert calls_per_replica_year(500, w, 0.5) == pytest.approx(0.5 * SECONDS_PER_YEAR / (0.5 * 4))
    with pytest.raises(DecisionInputError, match="finite number > 0"):
        calls_per_replica_year(float("inf"), w, 0.5)


def test_library_callers_get_the_same_checks():
    with pytest.raises(DecisionInputError, match="--model 'nosuch': unknown model"):
        run_study(CostRequest(model="nosuch", tiers=["base"], throughput_tokens_per_s=100))
    for field in ("model", "quantization", "api_prices", "api_model", "local_prices"):
        with pytest.raises(ValidationError, match=field):
            CostRequest(**{field: ""})
    for field in ("amortization_years", "usd_cny", "power_kw", "throughput_tokens_per_s"):
        with pytest.raises(ValidationError, match="finite number"):
            CostRequest(**{field: float("inf")})
    with pytest.raises(ValidationError, match="finite number"):
        Workload(prompt_tokens=float("nan"))


def test_a_model_no_node_holds_is_priced_as_the_nodes_of_its_replica(capsys):
    data = _study(capsys, "--model", "r1", "--tier", "pro", "--tier", "base", "--volumes", "1e6")
    [cap] = data["capacities"]  # base is left out: not even 4 nodes hold R1
    assert cap["tier"] == "pro" and cap["gpus_per_replica"] == 12
    assert "TP 4 x PP 3 over 3 nodes" in cap["source"]
    assert any("tier base" in w and "not even across 4 nodes" in w for w in data["warnings"])
    options = {o["key"]: o for o in data["options"]}
    gke, eks, onprem = options["pro gke spot"], options["pro eks on-demand"], options["pro on-prem"]
    assert (gke["nodes_per_replica"], gke["pods_per_node"], gke["replicas_per_node"]) == (3, 1, 0)
    assert (eks["nodes_per_replica"], eks["pods_per_node"]) == (3, 2)  # two 4-GPU pods per p5.48xlarge
    assert onprem["nodes_per_replica"] == 3 and any("priced as 3 servers" in n for n in onprem["notes"])
    row = data["rows"][0]
    assert row["replicas"]["pro"] == 1
    # one replica: 3 a3-highgpu-4g Spot nodes, 2 p5.48xlarge; plus the fixed operations cost
    assert row["local"]["pro gke spot"] == pytest.approx(gke["fixed_cost_per_year"] + 3 * gke["unit_cost_per_year"])
    assert row["local"]["pro eks on-demand"] == pytest.approx(
        eks["fixed_cost_per_year"] + 2 * eks["unit_cost_per_year"]
    )
