"""Token choice from logits: greedy at temperature 0 or top_p 0, else temperature + nucleus (top-p) sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

GREEDY_TEMPERATURE = 1e-5  # at or below: argmax


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False


def is_greedy(params: SamplingParams) -> bool:
    """Argmax: temperature 0, or top_p 0 (the smallest set of tokens whose mass reaches 0 is the most likely
    token alone; the API's schema allows 0, and this is what it means)."""
    return params.temperature <= GREEDY_TEMPERATURE or params.top_p <= 0.0


def make_generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def choose_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick the next token from one row of logits [V] (float32)."""
    if is_greedy(params):
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = cumulative - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        pick = torch.multinomial(_for(sorted_probs, generator), 1, generator=generator)
        return int(order[int(pick)])
    return int(torch.multinomial(_for(probs, generator), 1, generator=generator))


def _for(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A seeded generator lives on the CPU (same results on every device); unseeded sampling stays put."""
    return probs.cpu() if generator is not None else probs
