"""`dsdeploy plan` as a user runs it: output, exit codes, errors on stderr without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dsdeploy.cli import main


def dsdeploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsdeploy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_distill_7b_on_base_prints_tp1_and_concurrency() -> None:
    result = dsdeploy("plan", "--model", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "--tier", "base")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tensor parallel" in out and "│ 1 " in out.split("tensor parallel")[1].splitlines()[0]
    line = next(row for row in out.splitlines() if "concurrent sequences" in row)
    assert "10 at 32,768 tokens" in line
    assert "--tensor-parallel-size 1" in out and "--reasoning-parser deepseek_r1" in out
    # the EKS substitution is stated, never hidden
    assert "g6e.2xlarge has 1x L40S 48GB" in out and "cheapest shape that holds this plan" in out
    assert result.stderr == ""


def test_json_output_is_the_plan() -> None:
    result = dsdeploy("plan", "--model", "r1-distill-qwen-7b", "--tier", "base", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["tensor_parallel_size"] == 1 and plan["max_num_seqs"] > 0
    assert plan["model_id"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert plan["machines"]["gke"]["machine_type"] == "a2-highgpu-1g"
    assert plan["machines"]["eks"]["substitution"].startswith("g6e.2xlarge has 1x L40S 48GB")


def test_v3_bf16_on_pro_exits_nonzero_naming_the_shortfall() -> None:
    result = dsdeploy("plan", "--model", "deepseek-ai/DeepSeek-V3", "--tier", "pro", "--quantization", "bf16")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "does not fit tier pro, not even across 4 nodes" in result.stderr and "short by 185.2 GB" in result.stderr
    assert "Would fit: --quantization fp8 on tier pro across 3 nodes" in result.stderr
    assert "Traceback" not in result.stderr
    one_node = dsdeploy("plan", "--model", "v3", "--tier", "pro", "--quantization", "bf16", "--max-nodes", "1")
    assert one_node.returncode == 1 and "short by 1057.2 GB" in one_node.stderr


def test_a_replica_that_spans_nodes_says_so_in_text_and_json() -> None:
    text = dsdeploy("plan", "--model", "r1", "--tier", "pro")
    assert text.returncode == 0, text.stderr
    row = text.stdout.split("nodes per replica", 1)[1]
    assert row.lstrip(" │").startswith("3: one node of tier pro cannot hold the model")
    assert "vLLM flags (workers)" in text.stdout and "--headless" in text.stdout
    assert "LeaderWorkerSet" in text.stdout  # the warning
    result = dsdeploy("plan", "--model", "r1", "--tier", "pro", "--json")
    plan = json.loads(result.stdout)
    assert (plan["nodes_per_replica"], plan["pipeline_parallel_size"], plan["gpus_per_replica"]) == (3, 3, 12)
    assert plan["worker_engine_args"] == [*plan["engine_args"], "--headless"]
    assert plan["machines"]["eks"]["pods_per_node"] == 2 and plan["machines"]["gke"]["gpus_per_pod"] == 4
    single = json.loads(dsdeploy("plan", "--model", "r1-distill-qwen-7b", "--tier", "base", "--json").stdout)
    assert single["nodes_per_replica"] == 1 and single["worker_engine_args"] == []


def test_bad_inputs_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--model", "gpt-4", "--tier", "base"], "unknown model 'gpt-4'; allowed:"),
        (["--model", "v3", "--tier", "gold"], "unknown tier 'gold'; allowed: base, pro"),
        (["--model", "v3", "--tier", "pro", "--quantization", "q2"], "unknown quantization 'q2'; allowed:"),
        (
            ["--model", "r1-distill-qwen-7b", "--tier", "base", "--quantization", ""],
            "unknown quantization ''; allowed:",
        ),
        (["--model", "", "--tier", "base"], "unknown model ''; allowed:"),
        (["--model", "v2-lite", "--tier", "pro", "--context", "999999"], "context 999999 is out of range"),
        (["--model", "v2-lite", "--tier", "pro", "--gpu-memory-utilization", "0"], "out of range: allowed 0.10..0.99"),
        (["--model", "r1", "--tier", "pro", "--max-nodes", "5"], "max_nodes 5 is out of range: allowed 1..4"),
        (["--model", "r1", "--tier", "pro", "--max-nodes", "0"], "max_nodes 0 is out of range: allowed 1..4"),
    ]
    for args, message in cases:
        assert main(["plan", *args]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""
        assert captured.err.startswith("dsdeploy plan: error: ")


def test_argparse_rejects_non_numbers_without_traceback() -> None:
    result = dsdeploy("plan", "--model", "v3", "--tier", "pro", "--context", "lots")
    assert result.returncode == 2
    assert "invalid int value: 'lots'" in result.stderr and "Traceback" not in result.stderr


def test_json_error_for_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "r1", "--tier", "base", "--json"]) == 1
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["type"] == "does_not_fit" and error["shortfall_gb"] == 552.8  # at 4 base nodes
    assert "short by" in captured.err


def test_warnings_and_explanation_are_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", "--model", "v2-lite", "--tier", "base", "--quantization", "awq-int4"]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "no published awq-int4 weights" in out
    assert "How this was computed" in out and "MLA 27 layers" in out


def test_v4_flash_on_pro_fits_one_node_and_says_how() -> None:
    result = dsdeploy("plan", "--model", "deepseek-v4-flash", "--tier", "pro", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["tensor_parallel_size"], plan["gpus_per_replica"], plan["quantization"]) == (4, 4, "fp4-fp8")
    assert plan["speculative_decoding"] == "mtp" and plan["reasoning_parser"] == "deepseek_v4"
    assert plan["tool_call_parser"] == "deepseek_v4" and plan["kv_bytes_per_sequence"] > 0
    assert "--speculative-config" in plan["engine_args"]
    text = dsdeploy("plan", "--model", "deepseek-v4-flash", "--tier", "pro")
    assert "3,915 bytes + 18.7 MB per sequence" in text.stdout and "speculative decoding" in text.stdout


def test_full_r1_on_one_pro_node_is_refused_with_the_shortfall() -> None:
    # One node (--max-nodes 1): the single-node arithmetic and shortfall; by default R1 spans 3 nodes.
    result = dsdeploy("plan", "--model", "r1", "--tier", "pro", "--max-nodes", "1")
    assert result.returncode == 1
    assert "weights 684.9 GB" in result.stderr and "short by 400.1 GB" in result.stderr
    assert "Would fit: one replica across 3 nodes of tier pro (--max-nodes 3)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_with_unknown_facts_is_refused_as_unsupported() -> None:
    result = dsdeploy("plan", "--model", "deepseek-v4.1-flash", "--tier", "pro", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "unsupported" and "does not guess them" in error["message"]
