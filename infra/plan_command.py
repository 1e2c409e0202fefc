"""`dsdeploy plan`: print the capacity plan of a model on a tier (rich table or JSON).

Exit codes: 0 the plan fits; 1 it does not fit (the reason and what would fit on stderr);
2 bad input (unknown model, tier or quantization, context or utilization out of range).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from infra.catalog import PLATFORMS

if TYPE_CHECKING:
    from infra.planner import DeploymentPlan

EXIT_DOES_NOT_FIT = 1
EXIT_BAD_INPUT = 2


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The planner's inputs as flags, declared once for `dsdeploy plan` and `dsdeploy values` (defaults and
    ranges from infra/planner); ``plan_from_args`` plans with them."""
    from infra.planner import GPU_MEMORY_UTILIZATION, GPU_MEMORY_UTILIZATION_RANGE, MAX_NODES_PER_REPLICA
    from infra.planner.quantization import QUANTIZATIONS

    low, high = GPU_MEMORY_UTILIZATION_RANGE
    parser.add_argument("--model", required=True, help="Hugging Face repo id or alias (e.g. r1-distill-qwen-7b, v3)")
    parser.add_argument(
        "--tier", required=True, help="hardware tier of the catalog (infra/catalog/tiers.yaml; a wrong one lists them)"
    )
    parser.add_argument(
        "--quantization", default=None, help=f"one of {', '.join(QUANTIZATIONS)} (default: the model's native dtype)"
    )
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="max model length in tokens (default: min(model max, 32768), reduced if needed)",
    )
    parser.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=GPU_MEMORY_UTILIZATION,
        dest="gpu_memory_utilization",
        help=f"fraction of each GPU's memory vLLM may use ({low:.2f}..{high:.2f}, default {GPU_MEMORY_UTILIZATION:.2f})",
    )
    parser.add_argument(
        "--max-nodes",
        type=int,
        default=MAX_NODES_PER_REPLICA,
        dest="max_nodes",
        help=f"most nodes one replica may span when one node of the tier cannot hold the model "
        f"(1..{MAX_NODES_PER_REPLICA}, default {MAX_NODES_PER_REPLICA}; 1 = never span nodes; above 1 the "
        "engine is a LeaderWorkerSet)",
    )


def plan_from_args(args: argparse.Namespace) -> DeploymentPlan:
    """The plan of the flags ``add_plan_arguments`` declared (raises the planner's errors)."""
    from infra.planner import plan_deployment

    return plan_deployment(
        args.model,
        args.tier,
        quantization=args.quantization,
        context=args.context,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_nodes=args.max_nodes,
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan a model on a GPU tier: fit, tensor parallelism, concurrency, vLLM flags",
        description="Plan one engine replica of a DeepSeek model on a GPU tier. Exit 0: fits; "
        "1: does not fit (stderr says by how many GB and what would fit); 2: bad input.",
    )
    add_plan_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infra.planner import PlanDoesNotFit, PlanError
    from infra.planner.errors import PlanUnsupported

    try:
        plan = plan_from_args(args)
    except PlanDoesNotFit as exc:
        return _fail(args, "does_not_fit", str(exc), EXIT_DOES_NOT_FIT, exc.shortfall_bytes)
    except PlanUnsupported as exc:
        return _fail(args, "unsupported", str(exc), EXIT_BAD_INPUT, None)
    except PlanError as exc:
        return _fail(args, "invalid_input", str(exc), EXIT_BAD_INPUT, None)
    machines: dict[str, dict[str, Any]] = {p: _machine(plan.machine(p)) for p in PLATFORMS}
    if args.json:
        print(json.dumps({**plan.model_dump(), "machines": machines}, indent=2))
    else:
        _print_table(plan, machines)
    return 0


def _machine(mapping: Any) -> dict[str, Any]:
    """The machine mapping with the pod packing it implies (engine pods of gpus_per_pod GPUs per machine)."""
    return {**mapping.model_dump(), "gpus_per_pod": mapping.gpus_per_pod, "pods_per_node": mapping.pods_per_node}


def _fail(args: argparse.Namespace, kind: str, message: str, code: int, shortfall: int | None) -> int:
    print(f"dsdeploy plan: error: {message}", file=sys.stderr)
    if args.json:
        error: dict[str, Any] = {"type": kind, "message": message}
        if shortfall is not None:
            error["shortfall_gb"] = round(shortfall / 1e9, 1)
        print(json.dumps({"error": error}, indent=2))
    return code


def _print_table(plan: Any, machines: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    table = Table(title=f"Plan: {plan.model_id} ({plan.quantization}) on tier {plan.tier}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    rows = [
        ("served model name", plan.served_model_name),
        ("checkpoint", plan.checkpoint or "(none published, see warnings)"),
        ("GPU", f"{plan.gpus_per_replica}x {plan.gpu}"),
        ("tensor parallel", str(plan.tensor_parallel_size)),
        ("nodes per replica", _nodes_text(plan)),
        ("max model len", f"{plan.max_model_len:,} tokens"),
        (
            "concurrent sequences",
            f"{plan.max_num_seqs} at {plan.max_model_len:,} tokens ({plan.kv_cache_tokens:,} KV tokens)",
        ),
        ("weights", f"{plan.weight_bytes / 1e9:.2f} GB"),
        (
            "KV cache per token",
            f"{plan.kv_bytes_per_token:,} bytes"
            + (f" + {plan.kv_bytes_per_sequence / 1e6:,.1f} MB per sequence" if plan.kv_bytes_per_sequence else ""),
        ),
        ("speculative decoding", plan.speculative_decoding or "off"),
        ("reserve", f"{plan.reserve_bytes / 1e9:.2f} GB"),
        ("decode bound, 1 sequence", f"{plan.decode_tokens_per_s_per_seq:,.1f} tokens/s"),
        ("decode bound, full batch", f"{plan.decode_tokens_per_s_batch:,.1f} tokens/s"),
        ("engine", "vLLM" if plan.engine == "vllm" else "dsdeploy serve (the pinned vLLM does not load this format)"),
        ("vLLM flags", " ".join(plan.engine_args) or "(none: not a vLLM plan)"),
    ]
    if plan.worker_engine_args:
        rows[-1] = ("vLLM flags (leader)", rows[-1][1] + " --node-rank 0 --master-addr LEADER")
        rows.append(("vLLM flags (workers)", " ".join(plan.worker_engine_args) + " --node-rank N --master-addr LEADER"))
    for key, value in rows:
        table.add_row(key, value)
    for platform, m in machines.items():
        shape = m["machine_type"] or "your GPU nodes"
        labels = ", ".join(f"{k}={v}" for k, v in m["node_labels"].items())
        packing = (
            f"{m['replicas_per_node']} replica(s)/node"
            if m["nodes_per_replica"] == 1
            else f"{m['pods_per_node']} engine pod(s) of {m['gpus_per_pod']} GPU(s)/node"
        )
        text = f"{shape}, {m['accelerator_count']} GPU(s)/node, {packing}, node selector {labels}"
        if m["substitution"]:
            text += f"\nsubstitution: {m['substitution']}"
        if m["provisioning_note"]:
            text += f"\nprovisioning: {m['provisioning_note']}"
        table.add_row(f"machine ({platform})", text)
    console.print(table)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print("[bold]How this was computed:[/bold]")
    for step in plan.explanation:
        console.print(f"  - {step}", highlight=False)


def _nodes_text(plan: Any) -> str:
    if plan.nodes_per_replica == 1:
        return "1"
    per_node = plan.gpus_per_replica // plan.nodes_per_replica
    return (
        f"{plan.nodes_per_replica}: one node of tier {plan.tier} cannot hold the model, so each replica spans "
        f"{plan.nodes_per_replica} nodes of {per_node} GPU(s) (pipeline parallel {plan.pipeline_parallel_size} "
        f"across nodes, a LeaderWorkerSet group)"
    )
