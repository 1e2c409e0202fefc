"""The article's cost table (section 3.1), held against its own stated basis.

Article table (CNY; "线上调用(年)" = API per year, "本地部署(3年TCO)" = local 3-year TCO incl. hardware):

    calls        API / year   local 3-year TCO
    100,000        12,000        85,000 (含硬件)
    1,000,000      98,000       120,000
    10,000,000    820,000       380,000
    footnote: 按0.12元/千token计价, 本地部署含硬件折旧

The footnote's basis, 0.12 CNY per 1,000 tokens, with the 1,000 tokens per call that reproduces the first
row (100,000 x 1,000 / 1,000 x 0.12 = 12,000), gives 120,000 for 1M calls and 1,200,000 for 10M calls:
the article's 98,000 and 820,000 are 18.3% and 31.7% below its own basis (the article gives no volume
discount or other reason). The table also sets one year of API cost beside three years of local cost,
and gives no hardware, power or throughput figures behind the local column.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from infra.decision.cost_model import Workload
from infra.decision.prices import ARTICLE_PRESET

ARTICLE_PRICE_CNY_PER_1K = 0.12
ARTICLE_TOKENS_PER_CALL = 1000
# calls per year -> (API per year, local 3-year TCO) as printed in the article, CNY
ARTICLE_TABLE: dict[int, tuple[float, float]] = {
    100_000: (12_000.0, 85_000.0),
    1_000_000: (98_000.0, 120_000.0),
    10_000_000: (820_000.0, 380_000.0),
}


class ArticleTableRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    calls_per_year: int
    article_api: float
    basis_api: float  # 0.12 CNY/1K tokens x 1,000 tokens x calls
    difference_pct: float  # (article - basis) / basis
    article_local_3y: float
    this_study_api: float | None  # this run's API cost at that volume, when the run uses the article basis
    this_study_local_3y: float | None = None  # this run's cheapest local option x 3 years, same condition
    this_study_local_option: str | None = None


class ArticleTableCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reproduces_basis: bool
    rows: list[ArticleTableRow]
    notes: list[str]


def basis_api_cost(calls: float) -> float:
    return calls * ARTICLE_TOKENS_PER_CALL / 1000 * ARTICLE_PRICE_CNY_PER_1K


def article_table_check(
    sheet: str,
    workload: Workload,
    per_call: float,
    currency: str,
    cheapest_local: Callable[[float], tuple[str, float] | None] | None = None,
) -> ArticleTableCheck:
    """The article's rows against its basis; ``cheapest_local(calls)`` -> (option, annual cost) of this run."""
    same_basis = sheet == ARTICLE_PRESET and currency == "CNY" and workload.tokens_per_call == ARTICLE_TOKENS_PER_CALL
    rows = []
    for calls, (api, local3) in ARTICLE_TABLE.items():
        basis = basis_api_cost(calls)
        local = cheapest_local(calls) if (same_basis and cheapest_local is not None) else None
        rows.append(
            ArticleTableRow(
                calls_per_year=calls,
                article_api=api,
                basis_api=basis,
                difference_pct=round((api - basis) / basis * 100, 1),
                article_local_3y=local3,
                this_study_api=per_call * calls if same_basis else None,
                this_study_local_3y=None if local is None else 3 * local[1],
                this_study_local_option=None if local is None else local[0],
            )
        )
    notes = [
        "Article basis (section 3.1 footnote): CNY 0.12 per 1,000 tokens; 1,000 tokens per call reproduces its "
        "first row (100k calls -> CNY 12,000 per year).",
    ]
    for r in rows:
        if abs(r.difference_pct) >= 0.05:
            notes.append(
                f"{r.calls_per_year:,} calls: the article lists CNY {r.article_api:,.0f} per year; its stated basis "
                f"gives CNY {r.basis_api:,.0f} ({r.difference_pct:+.1f}% in the article, no reason given)."
            )
    notes.append(
        "The article compares one year of API cost with a three-year local TCO, and states no hardware, "
        "power or throughput figures for its local column; this tool annualizes both sides (the "
        "'this run local x 3 yr' column is the cheapest local option of this run over three years, "
        "for comparison with the article's column)."
    )
    if not same_basis:
        notes.append(
            f"This run does not use the article basis (preset {ARTICLE_PRESET}, CNY, 1,000 tokens per call), "
            "so its figures are not comparable row by row."
        )
    return ArticleTableCheck(reproduces_basis=same_basis, rows=rows, notes=notes)
