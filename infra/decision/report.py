"""``dsdeploy report``: one Markdown document for a decision meeting - plan, cost (with chart), compliance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from infra.catalog.schema import CLOUD_PLATFORMS
from infra.decision.compliance import compliance_matrix
from infra.decision.currency import DecisionInputError, format_money, format_volume
from infra.decision.study import CostRequest, CostStudy, run_study
from infra.decision.tables import (
    article_comparison_table,
    breakeven_table,
    capacity_table,
    compliance_table,
    cost_table,
    option_notes,
    tco_table,
    to_markdown,
)


def _plan_section(req: CostRequest, study: CostStudy) -> list[str]:
    """The plan per tier: the very plans the cost study priced (same max model length)."""
    out = ["## 1. Deployment plan", ""]
    if req.context is None:
        out += [
            f"Max model length {study.max_model_len:,} tokens: one call of {req.workload.tokens_per_call:g} "
            "tokens (prompt + completion), rounded up to a power of two.",
            "",
        ]
    for tier in req.tiers:
        plan = study.plans.get(tier)
        if plan is None:
            out += [f"**{tier}**: does not fit. {study.unfit[tier]}", ""]
            continue
        out += [
            f"**{plan.served_model_name}** (`{plan.model_id}`) on tier **{tier}**",
            "",
            "| item | value |",
            "|---|---|",
            f"| GPUs per replica | {plan.gpus_per_replica}x {plan.gpu} (tensor parallel {plan.tensor_parallel_size}"
            + (
                f" x pipeline parallel {plan.pipeline_parallel_size} over {plan.nodes_per_replica} nodes"
                if plan.nodes_per_replica > 1
                else ""
            )
            + ") |",
            f"| quantization | {plan.quantization} |",
            f"| max model length | {plan.max_model_len:,} tokens |",
            f"| concurrent sequences | {plan.max_num_seqs} |",
            f"| weights | {plan.weight_bytes / 1e9:,.1f} GB |",
            f"| decode bound, one sequence | {plan.decode_tokens_per_s_per_seq:,.0f} tokens/s |",
            f"| decode bound, full batch | {plan.decode_tokens_per_s_batch:,.0f} tokens/s |",
            f"| engine | {'vLLM' if plan.engine == 'vllm' else 'dsdeploy serve'} |",
            f"| engine flags | `{' '.join(plan.engine_args) or '(dsdeploy serve)'}` |",
            "",
        ]
        for platform in CLOUD_PLATFORMS:
            m = plan.machine(platform)
            if m.substitution:
                out += [f"- {platform.upper()}: {m.substitution}"]
        out += [f"- warning: {w}" for w in plan.warnings] + [""]
    return out


def _cost_section(study: CostStudy, chart_name: str | None) -> list[str]:
    cur = study.currency
    out = ["## 2. Cost", ""]
    w = study.workload
    out += [
        f"Per call: {w.prompt_tokens:g} prompt + {w.completion_tokens:g} completion tokens, cache-hit ratio "
        f"{w.cache_hit_ratio:g}, peak-to-average {w.peak_to_average:g}. API cost per call "
        f"{format_money(study.api_cost_per_call, cur)}. Local: replicas sized for the peak at utilization "
        f"{study.utilization:g}, hardware depreciated over {study.amortization_years:g} years, all costs per year.",
        "",
    ]
    if chart_name:
        out += [f"![Annual cost against volume, break-even points marked]({chart_name})", ""]
    out += [
        to_markdown(cost_table(study)),
        "",
        to_markdown(tco_table(study)),
        "",
        to_markdown(breakeven_table(study)),
        "",
        to_markdown(capacity_table(study)),
        "",
    ]
    cheapest = {format_volume(r.calls_per_year): r.cheapest for r in study.rows}
    out += ["Cheapest at each volume: " + "; ".join(f"{v}: {k}" for v, k in cheapest.items()) + ".", ""]
    comparison = article_comparison_table(study)
    if comparison is not None and study.article_table is not None:
        out += [to_markdown(comparison), ""] + [f"- {n}" for n in study.article_table.notes] + [""]
    out += ["Assumptions:", ""] + [f"- {a}" for a in study.assumptions]
    out += [f"- {n}" for n in option_notes(study)]
    out += [f"- warning: {x}" for x in study.warnings] + [""]
    return out


def build_report(
    req: CostRequest, *, mode: str = "hybrid", router_config: str | None = None, output: str | None = None
) -> tuple[str, list[Path]]:
    """The Markdown text, and the files written (report, chart) when ``output`` is given."""
    matrix = compliance_matrix(mode, router_config)  # validate cheap inputs before the heavier work
    study = run_study(req)
    written: list[Path] = []
    chart_name = None
    out_path = Path(output) if output else None
    if out_path is not None:
        if not out_path.parent.exists():
            raise DecisionInputError(f"-o {output!r}: folder {str(out_path.parent)!r} does not exist")
        from infra.decision.plot import build_figure, save_plot

        chart = out_path.with_name(out_path.stem + "-cost.png")
        save_plot(build_figure(study), chart)
        chart_name = chart.name
        written.append(chart)
    volumes = ", ".join(format_volume(v) for v in req.volumes)
    lines: list[str] = [
        f"# Deployment decision: {req.model} on {', '.join(req.tiers)}",
        "",
        f"Generated by `dsdeploy report` on {dt.date.today().isoformat()} for {volumes} calls per year, "
        f"deployment mode **{mode}**. Prices carry their source and date; figures marked as assumptions must be "
        "replaced by your own quotes before a purchase decision.",
        "",
    ]
    lines += _plan_section(req, study)
    lines += _cost_section(study, chart_name)
    lines += ["## 3. Compliance", "", to_markdown(compliance_table(matrix)), ""]
    lines += [f"- warning: {w}" for w in matrix.warnings]
    lines += ["Sources:", ""] + [f"- {s}" for s in matrix.sources] + [""]
    text = "\n".join(lines)
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
        written.insert(0, out_path)
    return text, written
