"""The chart: annual cost against volume, API line and local staircases, break-even points marked.

Uses matplotlib's object API with the Agg canvas (no display, no pyplot global state), so it runs in
tests, in CI and on servers. ``build_figure`` returns the Figure (tests inspect its lines and labels);
``save_plot`` writes the PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from infra.decision.currency import SYMBOLS, DecisionInputError, format_money, format_volume

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from infra.decision.study import CostStudy

API_LABEL = "API"
_STYLE = {"on-prem": "-", "cloud-on-demand": "--", "cloud-spot": ":"}


def _range(study: CostStudy) -> tuple[float, float]:
    points = [r.calls_per_year for r in study.rows if r.calls_per_year > 0]
    points += [b.volume for b in study.break_evens if b.volume]
    lo = min(points, default=1e4) / 3
    hi = max(points, default=1e7) * 3
    return max(lo, 1.0), max(hi, lo * 100)


def _grid(lo: float, hi: float, n: int = 600) -> list[float]:
    a, b = math.log10(lo), math.log10(hi)
    return [10 ** (a + (b - a) * i / (n - 1)) for i in range(n)]


def build_figure(study: CostStudy, title: str | None = None) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # the `report` extra
        raise DecisionInputError(f"--plot needs matplotlib (pip install 'dsdeploy[report]'): {exc}") from None

    fig = Figure(figsize=(11, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = _range(study)
    xs = _grid(lo, hi)
    for o in study.options:  # step boundaries make the staircases exact
        xs += [k * o.calls_per_replica_year for k in range(1, 400) if lo < k * o.calls_per_replica_year < hi]
    xs = sorted(set(xs))
    cur = study.currency
    ax.plot(
        xs,
        [study.api_cost(x) for x in xs],
        color="black",
        linewidth=2.4,
        label=f"{API_LABEL} ({study.api_sheet} / {study.api_model})",
    )
    colors = [
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#8c564b",
        "#17becf",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
    ]
    priced = [o for o in study.options if o.priced]
    for i, o in enumerate(priced):
        ys = [math.nan if (cost := o.annual_cost(x)) is None else cost for x in xs]  # priced: never None
        ax.plot(
            xs,
            ys,
            drawstyle="steps-post",
            linestyle=_STYLE[o.kind],
            linewidth=1.8,
            color=colors[i % len(colors)],
            label=o.key,
        )
    marks = sorted(
        (b for b in study.break_evens if b.volume is not None and lo <= b.volume <= hi), key=lambda b: b.volume or 0
    )
    side: list[tuple[str, str]] = []  # (text, color), listed to the right, bottom-up
    unpriced = [o.key for o in study.options if not o.priced]
    if unpriced:
        side += [(f"  {k}", "#666666") for k in reversed(unpriced)] + [
            ("not priced (no price in the sheet):", "#666666")
        ]
    numbered = []
    for n, b in enumerate(marks, start=1):
        color = colors[[o.key for o in priced].index(b.option) % len(colors)]
        assert b.volume is not None and b.annual_cost is not None  # marks holds break-evens that exist
        ax.plot(
            [b.volume],
            [b.annual_cost],
            marker="o",
            markersize=9,
            markerfacecolor="white",
            markeredgecolor=color,
            markeredgewidth=2.2,
            linestyle="none",
            label=f"_break-even {b.option}",
        )
        ax.annotate(
            str(n),
            xy=(b.volume, b.annual_cost),
            xytext=(-7, 7),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            color=color,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
        numbered.append(
            (f"{n}  {b.option}: {format_volume(b.volume)} calls/yr, {format_money(b.annual_cost, cur)}/yr", color)
        )
    never = [b.option for b in study.break_evens if b.volume is None and b.option in [o.key for o in priced]]
    if never:
        side += [(f"  {k}", "#666666") for k in reversed(never)] + [
            ("no break-even (API cheaper at every volume):", "#666666")
        ]
    if numbered:
        side += list(reversed(numbered)) + [("break-even (local never dearer from here on):", "black")]
    for i, (text, color) in enumerate(side):
        ax.annotate(
            text,
            xy=(1.01, 0.0),
            xycoords="axes fraction",
            xytext=(0, 12 * i),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=8,
            color=color,
        )
    for r in study.rows:
        if r.calls_per_year > 0:
            ax.axvline(r.calls_per_year, color="#bbbbbb", linewidth=0.8, zorder=0)
            ax.text(
                r.calls_per_year,
                0.01,
                f" {format_volume(r.calls_per_year)}",
                transform=ax.get_xaxis_transform(),
                ha="left",
                va="bottom",
                fontsize=8,
                color="#666666",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("calls per year")
    ax.set_ylabel(f"annual cost ({cur}, {SYMBOLS[cur]})")
    ax.yaxis.set_major_formatter(_money_formatter(cur))
    ax.xaxis.set_major_formatter(_volume_formatter())
    ax.grid(True, which="major", color="#e5e5e5")
    w = study.workload
    ax.set_title(
        title
        or (
            f"API vs local annual cost ({w.prompt_tokens:g}+{w.completion_tokens:g} tokens/call, peak x{w.peak_to_average:g}, "
            f"utilization {study.utilization:g}, {study.amortization_years:g}-year amortization)"
        ),
        fontsize=10,
        pad=10,
    )
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        title="solid on-prem, dashed on-demand, dotted spot",
        title_fontsize=8,
    )
    return fig


def _money_formatter(cur: str) -> FuncFormatter:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda y, _pos: format_money(y, cur))


def _volume_formatter() -> FuncFormatter:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: format_volume(x))


def save_plot(fig: Figure, path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise DecisionInputError(f"--plot {str(path)!r}: the chart is written as PNG; give a file name ending in .png")
    if not p.parent.exists():
        raise DecisionInputError(f"--plot {str(path)!r}: folder {str(p.parent)!r} does not exist")
    fig.savefig(p, format="png")
    return p
