"""The study as plain tables (headers + rows of strings), rendered by rich (terminal) or Markdown (report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.decision.currency import format_money, format_volume

if TYPE_CHECKING:
    from infra.decision.compliance import ComplianceMatrix
    from infra.decision.cost_model import LocalOption
    from infra.decision.study import CostStudy

Table = tuple[str, list[str], list[list[str]]]  # title, headers, rows


def cost_table(study: CostStudy) -> Table:
    cur = study.currency
    headers = ["option"] + [f"{format_volume(r.calls_per_year)} calls/yr" for r in study.rows]
    rows = [[f"API ({study.api_sheet} / {study.api_model})"] + [format_money(r.api, cur) for r in study.rows]]
    for o in study.options:
        cells = []
        for r in study.rows:
            cost = r.local[o.key]
            cells.append("not priced" if cost is None else format_money(cost, cur))
        rows.append([o.key] + cells)
    rows.append(["cheapest"] + [r.cheapest for r in study.rows])
    rows.append(["replicas needed"] + [", ".join(f"{t} {n}" for t, n in r.replicas.items()) for r in study.rows])
    return f"Annual cost ({cur})", headers, rows


def tco_table(study: CostStudy) -> Table:
    """Total cost over the amortization period: what the article's "3-year local TCO" column compares."""
    cur, years = study.currency, study.amortization_years
    headers = ["option"] + [f"{format_volume(r.calls_per_year)} calls/yr" for r in study.rows]
    rows = [[f"API ({study.api_sheet} / {study.api_model})"] + [format_money(r.api_tco, cur) for r in study.rows]]
    for o in study.options:
        rows.append(
            [o.key] + ["not priced" if (c := r.local_tco[o.key]) is None else format_money(c, cur) for r in study.rows]
        )
    return (
        f"Total cost over {years:g} years, the amortization period ({cur}; on-prem = purchase + running costs)",
        headers,
        rows,
    )


def breakeven_table(study: CostStudy) -> Table:
    cur = study.currency
    rows = []
    for b in study.break_evens:
        opt = next(o for o in study.options if o.key == b.option)
        unit = _unit(opt)
        unit_cost = "-" if opt.unit_cost_per_year is None else f"{format_money(opt.unit_cost_per_year, cur)} per {unit}"
        rows.append(
            [
                b.option,
                format_volume(b.volume) if b.volume is not None else "none",
                format_money(b.annual_cost, cur) if b.annual_cost is not None else "-",
                unit_cost,
                b.reason if b.volume is None else _crossing_note(b.volume, b.first_crossing),
            ]
        )
    return (
        "Break-even volume per local option (calls per year)",
        ["option", "break-even", "annual cost there", "cost per unit-year", "note"],
        rows,
    )


def _unit(opt: LocalOption) -> str:
    holds = (
        f"{opt.replicas_per_node} replica(s)"
        if opt.nodes_per_replica == 1
        else f"{opt.pods_per_unit} pod(s) of a {opt.nodes_per_replica}-node replica"
    )
    return f"server ({holds})" if opt.kind == "on-prem" else f"node ({opt.machine_type}, {holds})"


def _crossing_note(volume: float, first: float | None) -> str:
    if first is None or first >= volume * 0.999:
        return "local is cheaper from here on"
    return (
        f"first cheaper at {format_volume(first)}, dearer again just after some capacity steps, "
        "never dearer from the break-even on"
    )


def capacity_table(study: CostStudy) -> Table:
    rows = [
        [
            c.tier,
            f"{c.gpus_per_replica}x {c.gpu}",
            f"{c.tokens_per_s:,.0f}",
            format_volume(c.calls_per_replica_year),
            c.source,
        ]
        for c in study.capacities
    ]
    return "Capacity of one replica", ["tier", "GPUs", "decode tokens/s", "calls/yr at target", "source"], rows


def article_comparison_table(study: CostStudy) -> Table | None:
    if study.article_table is None:
        return None
    rows = []
    for r in study.article_table.rows:
        local = "-" if r.this_study_local_3y is None else f"¥{r.this_study_local_3y:,.0f} ({r.this_study_local_option})"
        rows.append(
            [
                f"{r.calls_per_year:,}",
                f"¥{r.article_api:,.0f}",
                f"¥{r.basis_api:,.0f}",
                f"{r.difference_pct:+.1f}%",
                "-" if r.this_study_api is None else f"¥{r.this_study_api:,.0f}",
                f"¥{r.article_local_3y:,.0f}",
                local,
            ]
        )
    return (
        "The article's cost table (section 3.1) against its own basis",
        [
            "calls/yr",
            "article API/yr",
            "basis API/yr",
            "article vs basis",
            "this run API/yr",
            "article local 3-yr TCO",
            "this run local x 3 yr",
        ],
        rows,
    )


def compliance_table(matrix: ComplianceMatrix) -> Table:
    return (
        f"Compliance matrix: {matrix.mode}",
        ["dimension", "answer", "rule / source"],
        [[r.dimension, r.answer, r.rule] for r in matrix.rows],
    )


def to_markdown(table: Table) -> str:
    title, headers, rows = table

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(esc(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def option_notes(study: CostStudy) -> list[str]:
    """Each distinct note once, prefixed with the options it applies to."""
    seen: dict[str, list[str]] = {}
    for o in study.options:
        for n in o.notes:
            seen.setdefault(n, []).append(o.key)
    return [f"{', '.join(keys)}: {note}" for note, keys in seen.items()]
