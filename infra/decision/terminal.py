"""Terminal rendering of a cost study with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable

from infra.decision.tables import (
    Table,
    breakeven_table,
    capacity_table,
    cost_table,
    mission_table,
    option_notes,
)

if TYPE_CHECKING:
    from infra.decision.study import CostStudy


def _rich(table: Table) -> RichTable:
    title, headers, rows = table
    t = RichTable(title=title, title_justify="left", show_lines=False)
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        style = "bold" if row[0] in ("cheapest",) else None
        t.add_row(*row, style=style)
    return t


def print_study(study: CostStudy, console: Console | None = None) -> None:
    c = console or Console(width=160)
    c.print(_rich(cost_table(study)))
    be_title, be_headers, be_rows = breakeven_table(study)
    t = RichTable(title=be_title, title_justify="left")
    for h in be_headers:
        t.add_column(h, overflow="fold")
    for r in be_rows:
        t.add_row(*r)
    c.print(t)
    cap_title, cap_headers, cap_rows = capacity_table(study)
    t = RichTable(title=cap_title, title_justify="left")
    for h in cap_headers:
        t.add_column(h, overflow="fold")
    for r in cap_rows:
        t.add_row(*r)
    c.print(t)
    mission = mission_table(study)
    if mission is not None and study.mission is not None:
        c.print(_rich(mission))
        for note in study.mission.notes:
            c.print(f"  - {note}")
    c.print("[bold]Assumptions[/bold]")
    for a in study.assumptions:
        c.print(f"  - {a}")
    for note in option_notes(study):
        c.print(f"  - {note}")
    for w in study.warnings:
        c.print(f"[yellow]warning:[/yellow] {w}")
