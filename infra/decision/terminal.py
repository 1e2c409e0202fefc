"""Terminal rendering of a cost study with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from infra.decision.tables import (
    Table,
    article_comparison_table,
    breakeven_table,
    capacity_table,
    compliance_table,
    cost_table,
    option_notes,
    tco_table,
)

if TYPE_CHECKING:
    from infra.decision.compliance import ComplianceMatrix
    from infra.decision.study import CostStudy


def _rich(table: Table, numeric: bool = True) -> RichTable:
    """A rich table; ``numeric`` right-aligns every column after the first and bolds the "cheapest" row."""
    title, headers, rows = table
    t = RichTable(title=title, title_justify="left", show_lines=False)
    for i, h in enumerate(headers):
        t.add_column(h, justify="right" if numeric and i else "left", overflow="fold")
    for row in rows:
        style = "bold" if numeric and row[0] == "cheapest" else None
        t.add_row(*(escape(cell) for cell in row), style=style)
    return t


def print_study(study: CostStudy, console: Console | None = None) -> None:
    c = console or Console(width=160)
    c.print(_rich(cost_table(study)))
    c.print(_rich(tco_table(study)))
    c.print(_rich(breakeven_table(study), numeric=False))
    c.print(_rich(capacity_table(study), numeric=False))
    comparison = article_comparison_table(study)
    if comparison is not None and study.article_table is not None:
        c.print(_rich(comparison))
        for note in study.article_table.notes:
            c.print(f"  - {escape(note)}")
    c.print("[bold]Assumptions[/bold]")
    for a in study.assumptions:
        c.print(f"  - {escape(a)}")
    for note in option_notes(study):
        c.print(f"  - {escape(note)}")
    for w in study.warnings:
        c.print(f"[yellow]warning:[/yellow] {escape(w)}")


def print_compliance(matrix: ComplianceMatrix, console: Console | None = None) -> None:
    c = console or Console(width=160)
    title, headers, rows = compliance_table(matrix)
    t = RichTable(title=title, title_justify="left", show_lines=True)
    for h, ratio in zip(headers, (1, 4, 2), strict=True):
        t.add_column(h, overflow="fold", ratio=ratio)
    for row in rows:
        t.add_row(*(escape(cell) for cell in row))  # answers quote config values such as [public]
    c.print(t)
    for w in matrix.warnings:
        c.print(f"[yellow]warning:[/yellow] {escape(w)}")
    c.print("[bold]Sources[/bold]")
    for source in matrix.sources:
        c.print(f"  - {escape(source)}", highlight=False)
