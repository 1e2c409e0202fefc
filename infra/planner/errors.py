"""Planner errors: bad input, and a combination that does not fit."""

from __future__ import annotations


class PlanError(ValueError):
    """Bad planner input: unknown model, tier or quantization, context out of range, ..."""


class PlanDoesNotFit(PlanError):
    """The model/quantization/context does not fit the tier; the message says by how much and
    which tier or quantization from the catalog would fit."""

    def __init__(self, message: str, shortfall_bytes: int, suggestion: str | None) -> None:
        super().__init__(message)
        self.shortfall_bytes = shortfall_bytes
        self.suggestion = suggestion


class PlanUnsupported(PlanError):
    """The catalog lacks facts the plan needs (listed in the model's `unknown`); nothing is guessed."""
