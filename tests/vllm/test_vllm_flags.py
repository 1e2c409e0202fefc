"""Every engine command line the project can produce is parsed by the pinned vLLM itself.

For every catalog model x tier x quantization the planner accepts: the plan's own argument lists (every
``*_args`` field, so leader/worker lists of multi-node plans are covered as they appear) and every
``vllm serve`` container the chart renders from that plan's values (Deployment, LeaderWorkerSet
templates, whatever carries a pod template); plus the chart's defaults and its ci/ scenarios. They go
through `vllm serve`'s own parser and validation, and the parser names through the parsers that release
registers (tests/support/vllm_flag_check.py), and so does every vLLM value the chart's schema offers.
No server is started. Controls with a made-up flag or
parser must be refused, so a check that accepts everything fails here too.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsdeploy.local_stack import VLLM_SERVER_MODULE, LocalStack, LocalStackOptions
from infra.catalog import load_catalog
from infra.chart_values import CHART_DIR, ChartOptions, ChartValuesError, chart_values
from infra.planner import DeploymentPlan, PlanError, plan_deployment
from infra.planner.quantization import QUANTIZATIONS
from infra.vllm_release import pinned_vllm_version
from tests.charts.conftest import helm_path, parse
from tests.support.vllm_engine import LWS_ENV, check_flags, installed_vllm_version, vllm_serve_commands

MODEL_DIR = "/models/model"  # what the positional model argument is; vLLM does not open it while parsing
# A stand-in repository for the plans whose pre-quantized weights the catalog does not record (the chart
# then needs one named; it does not change the engine flags).
CHECKPOINT = "example-org/prequantized-weights"
LEADER = LWS_ENV["LWS_LEADER_ADDRESS"]


def accepted_plans() -> list[DeploymentPlan]:
    catalog = load_catalog()
    plans = []
    for model in catalog.models:
        for tier in catalog.tiers:
            for quantization in QUANTIZATIONS:
                try:
                    plans.append(plan_deployment(model, tier, quantization))
                except PlanError:  # PlanDoesNotFit included: not something the project would deploy
                    continue
    return plans


def plan_arg_lists(plan: DeploymentPlan) -> dict[str, list[str]]:
    """Every argument list the plan carries (engine_args, and any leader/worker lists)."""
    return {
        name: list(value)
        for name, value in plan.model_dump().items()
        if name.endswith("args") and isinstance(value, list) and all(isinstance(v, str) for v in value)
    }


def label(plan: DeploymentPlan) -> str:
    return f"{plan.model_id} {plan.tier} {plan.quantization}"


def render(values: dict[str, Any] | None, values_file: Path | None, work: Path) -> list[dict[str, Any]]:
    cmd = [helm_path(), "template", "ds", str(CHART_DIR), "--namespace", "dsdeploy"]
    if values is not None:
        work.write_text(yaml.safe_dump(values))
        values_file = work
    if values_file is not None:
        cmd += ["-f", str(values_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, f"helm template failed for {values_file}:\n{proc.stderr}"
    return parse(proc.stdout).docs


def plan_values(plan: DeploymentPlan) -> dict[str, Any] | None:
    """The chart values `dsdeploy values` / Pulumi give this plan with vLLM; None where the chart does not
    run vLLM for it (GGUF files go to the project's server)."""
    try:
        return chart_values(plan, ChartOptions(platform="existing"))
    except ChartValuesError:
        try:
            return chart_values(plan, ChartOptions(platform="existing", checkpoint=CHECKPOINT))
        except ChartValuesError:
            return None


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("vllm-flags")
    plans = accepted_plans()
    assert plans, "the planner accepted no model x tier x quantization"
    cases: list[tuple[str, list[str]]] = []
    for plan in plans:
        for name, args in plan_arg_lists(plan).items():
            cases.append((f"plan {label(plan)} {name}", ["serve", MODEL_DIR, *args]))

    renders: list[tuple[str, dict[str, Any] | None, Path | None]] = [("chart defaults", None, None)]
    renders += [(f"chart ci/{path.name}", None, path) for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))]
    renders += [(f"chart {label(plan)}", values, None) for plan in plans if (values := plan_values(plan)) is not None]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        docs = list(
            pool.map(lambda job: render(job[1][1], job[1][2], work / f"values-{job[0]}.yaml"), enumerate(renders))
        )
    containers: dict[str, int] = {}
    for (what, _, _), rendered in zip(renders, docs, strict=True):
        found = list(vllm_serve_commands(rendered))
        containers[what] = len(found)
        cases += [(f"{what} {where}", argv) for where, argv in found]

    # Each rank of a multi-node plan, as the chart starts it (rank and the leader's address added).
    for plan in plans:
        if plan.nodes_per_replica > 1:
            for rank, args in ((0, plan.engine_args), (1, plan.worker_engine_args)):
                cases.append(
                    (
                        f"multinode {label(plan)} rank {rank}",
                        ["serve", MODEL_DIR, *args, "--node-rank", str(rank), "--master-addr", LEADER],
                    )
                )

    # `make run ENGINE=vllm` (dsdeploy local up --engine vllm), with and without the user's options.
    for extra in ({}, {"max_num_seqs": 8, "max_model_len": 4096}):
        stack = LocalStack(LocalStackOptions(engine="vllm", vllm_python=Path("/venv/bin/python"), **extra))
        argv = stack.server_args(Path(MODEL_DIR))
        assert argv[1:3] == ["-m", VLLM_SERVER_MODULE]
        cases.append((f"local stack {sorted(extra)}", ["serve", *argv[3:]]))

    # What the chart's schema offers for vLLM values must be what the release accepts.
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]["engine"]["properties"]
    for value_name, flag in (("quantization", "--quantization"), ("reasoningParser", "--reasoning-parser")):
        cases += [
            (f"schema engine.{value_name} {v}", ["serve", MODEL_DIR, f"{flag}={v}"])
            for v in schema[value_name]["enum"]
            if v
        ]

    controls = [
        ("control unknown flag", ["serve", MODEL_DIR, "--max-model-length", "4096"]),
        ("control unknown reasoning parser", ["serve", MODEL_DIR, "--reasoning-parser", "deepseek_r9"]),
        (
            "control unknown tool parser",
            ["serve", MODEL_DIR, "--enable-auto-tool-choice", "--tool-call-parser", "deepseek_v9"],
        ),
        ("control unknown quantization", ["serve", MODEL_DIR, "--quantization", "int3"]),
    ]
    result = check_flags(cases + controls)
    result["containers"] = containers
    result["plans"] = plans
    result["by_label"] = {r["label"]: r for r in result["results"]}
    return result


def test_the_installed_vllm_is_the_release_the_chart_pins():
    assert installed_vllm_version() == pinned_vllm_version()


def test_flags_were_parsed_by_the_pinned_release(checked):
    assert checked["version"] == pinned_vllm_version()


def test_every_plans_argument_lists_parse(checked):
    planned = [r for r in checked["results"] if r["label"].startswith("plan ")]
    assert len(planned) >= len(checked["plans"])  # at least engine_args of each plan
    assert [f"{r['label']}: {r['error']}" for r in planned if not r["ok"]] == []


def test_every_vllm_container_the_chart_renders_parses(checked):
    rendered = [r for r in checked["results"] if r["label"].startswith("chart ")]
    assert [f"{r['label']}: {r['error']}" for r in rendered if not r["ok"]] == []
    # Each plan's values and the defaults give at least one `vllm serve` container: a template that stopped
    # rendering one (or renders it in a shape the finder misses) fails here instead of passing unchecked.
    assert [what for what, n in checked["containers"].items() if n == 0 and not what.startswith("chart ci")] == []


def test_parser_names_the_project_uses_are_registered(checked):
    used = {"reasoning": set(), "tool": set()}
    for plan in checked["plans"]:
        for args in plan_arg_lists(plan).values():
            for flag, kind in (("--reasoning-parser", "reasoning"), ("--tool-call-parser", "tool")):
                for i, token in enumerate(args):
                    if token == flag and i + 1 < len(args):
                        used[kind].add(args[i + 1])
                    elif token.startswith(flag + "="):
                        used[kind].add(token.split("=", 1)[1])
    assert used["reasoning"], "no plan names a reasoning parser (the R1 distills do)"
    assert used["reasoning"] <= set(checked["reasoning_parsers"])
    assert used["tool"] <= set(checked["tool_parsers"])
    documented = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["engine"]["reasoningParser"]
    assert documented in ("", *checked["reasoning_parsers"])


def test_make_run_with_vllm_starts_it_with_flags_it_accepts(checked):
    local = [r for r in checked["results"] if r["label"].startswith("local stack ")]
    assert len(local) == 2 and [f"{r['label']}: {r['error']}" for r in local if not r["ok"]] == []


def test_every_vllm_value_the_chart_schema_allows_is_accepted(checked):
    offered = [r for r in checked["results"] if r["label"].startswith("schema ")]
    assert offered and [f"{r['label']}: {r['error']}" for r in offered if not r["ok"]] == []


@pytest.mark.parametrize(
    "control", ["unknown flag", "unknown reasoning parser", "unknown tool parser", "unknown quantization"]
)
def test_what_vllm_does_not_know_is_refused(checked, control):
    verdict = checked["by_label"][f"control {control}"]
    assert not verdict["ok"] and verdict["error"]


def test_each_rank_of_a_multi_node_plan_means_the_planned_layout(checked):
    multi = [p for p in checked["plans"] if p.nodes_per_replica > 1]
    assert multi, "no accepted plan spans nodes (the 671B family on pro does)"
    for plan in multi:
        for rank in (0, 1):
            verdict = checked["by_label"][f"multinode {label(plan)} rank {rank}"]
            assert verdict["ok"], verdict["error"]
            got = verdict["parsed"]
            assert (got["nnodes"], got["pipeline_parallel_size"]) == (plan.nodes_per_replica,) * 2, label(plan)
            assert got["tensor_parallel_size"] == plan.tensor_parallel_size
            assert (got["node_rank"], got["headless"]) == (rank, rank > 0)


def test_the_charts_leader_and_workers_get_their_rank_and_the_leaders_address(checked):
    group = [r for r in checked["results"] if r["label"].startswith("chart ") and "LeaderWorkerSet/" in r["label"]]
    leaders = [r for r in group if "leaderTemplate" in r["label"]]
    workers = [r for r in group if "workerTemplate" in r["label"]]
    assert leaders and len(leaders) == len(workers), [r["label"] for r in group]
    for r in leaders + workers:
        assert r["ok"], f"{r['label']}: {r['error']}"
        got = r["parsed"]
        assert got["master_addr"] == LEADER and got["master_port"] == 29501
        assert got["nnodes"] == got["pipeline_parallel_size"] > 1
    assert {(r["parsed"]["node_rank"], r["parsed"]["headless"]) for r in leaders} == {(0, False)}
    assert {(r["parsed"]["node_rank"], r["parsed"]["headless"]) for r in workers} == {
        (int(LWS_ENV["LWS_WORKER_INDEX"]), True)
    }


def test_each_plans_parsers_and_speculative_method_are_what_vllm_reads(checked):
    for plan in checked["plans"]:
        if plan.engine != "vllm":
            continue
        got = checked["by_label"][f"plan {label(plan)} engine_args"]["parsed"]
        assert (got["reasoning_parser"] or None) == plan.reasoning_parser, label(plan)
        assert (got["tool_call_parser"] or None) == plan.tool_call_parser, label(plan)
        assert bool(got["enable_auto_tool_choice"]) == (plan.tool_call_parser is not None), label(plan)
        method = (got["speculative_config"] or {}).get("method")
        assert method == plan.speculative_decoding, label(plan)


def test_every_catalog_models_parsers_exist_in_the_pinned_release(checked):
    """The models the planner refuses (facts missing) included: their parsers must exist already."""
    for spec in load_catalog().models.values():
        assert spec.vllm.reasoning_parser in (None, *checked["reasoning_parsers"]), spec.id
        assert spec.vllm.tool_call_parser in (None, *checked["tool_parsers"]), spec.id
        assert spec.vllm.tokenizer_mode in (None, *checked["tokenizer_modes"]), spec.id


def test_sparse_attention_needs_hopper_as_the_planner_says(checked):
    """vLLM's sparse MLA kernels (V3.2, V4) run on compute capability 9.0, not on the base tier's A100."""
    assert checked["sparse_mla_on"] == {"8.0": False, "9.0": True}
    with pytest.raises(PlanError, match="does not run on tier base"):
        plan_deployment("deepseek-v3.2", "base")
