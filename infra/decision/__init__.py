"""Decision support: API vs local cost with break-even, a chart, and the compliance matrix.

from infra.decision import CostRequest, run_study
study = run_study(CostRequest())            # the article's basis: 100k / 1M / 10M calls per year
"""

from infra.decision.currency import DecisionInputError
from infra.decision.study import CostRequest, CostStudy, run_study

__all__ = ["CostRequest", "CostStudy", "DecisionInputError", "run_study"]
