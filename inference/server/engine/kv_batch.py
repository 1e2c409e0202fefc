"""A batch of sequences sharing one left-padded KV cache.

Every row of the batch is one sequence. Rows of different lengths are aligned on the right: the cache
and the attention mask carry zero columns on the left of the shorter rows. New sequences are prefilled
as their own batch and then merged in (the shorter side is padded on the left); finished rows are
dropped with ``select``, after which columns that are padding in every row are trimmed away. One
forward pass then decodes one token for every row at once.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .prefix_cache import PrefixHit

_CACHE_ARGUMENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> forward()'s cache argument


def _cache_kwargs(model, cache: DynamicCache) -> dict:
    """transformers >= 5.3x names the argument ``cache``; older releases ``past_key_values``.

    Looked up once per model (``inspect.signature`` on every decode step cost ~0.2 ms)."""
    name = _CACHE_ARGUMENT.get(model)
    if name is None:
        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        _CACHE_ARGUMENT[model] = name
    return {name: cache, "use_cache": True}


def _layers(cache: DynamicCache) -> list:
    return [layer for layer in cache.layers if getattr(layer, "is_initialized", False)]


@dataclass
class KVBatch:
    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token, 0 = left padding
    next_positions: torch.Tensor  # [B] long, position id of each row's next token

    @property
    def size(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.attention_mask.shape[1])

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @classmethod
    @torch.inference_mode()
    def prefill(
        cls, model, prompts: list[list[int]], pad_id: int, hits: list[PrefixHit | None] | None = None
    ) -> tuple[KVBatch, torch.Tensor]:
        """Run the prompts through the model as one left-padded batch; return the batch and last logits [B, V].

        With ``hits`` (cached KV of a prompt prefix, per row) only the rest of each prompt is computed: the
        cached prefixes are laid out left-padded in front of the left-padded remainders, and the padding
        between them is masked out like any other padding.
        """
        device = model.device
        hits = hits or [None] * len(prompts)
        done = [hit.length if hit else 0 for hit in hits]
        past_width = max(done)
        rest = [prompt[n:] for prompt, n in zip(prompts, done, strict=True)]
        width = max(len(r) for r in rest)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), past_width + width), dtype=torch.long)
        positions = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, (tail, n) in enumerate(zip(rest, done, strict=True)):
            ids[row, width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
            mask[row, past_width - n : past_width] = 1
            mask[row, past_width + width - len(tail) :] = 1
            positions[row, width - len(tail) :] = torch.arange(n, n + len(tail))
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = DynamicCache(config=model.config)
        if past_width:
            reference = next(hit for hit in hits if hit).layers
            for layer, (k_ref, v_ref) in enumerate(reference):
                keys = k_ref.new_zeros((len(prompts), k_ref.shape[1], past_width, k_ref.shape[3]))
                values = v_ref.new_zeros((len(prompts), v_ref.shape[1], past_width, v_ref.shape[3]))
                for row, hit in enumerate(hits):
                    if hit:
                        keys[row, :, past_width - hit.length :] = hit.layers[layer][0][0]
                        values[row, :, past_width - hit.length :] = hit.layers[layer][1][0]
                cache.update(keys, values, layer)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=1,
            **_cache_kwargs(model, cache),
        )
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
        batch = cls(cache=cache, attention_mask=mask, next_positions=lengths)
        batch._zero_padding()
        return batch, out.logits[:, -1, :].float()

    def row_kv(self, row: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of one row's real tokens, in order ([1, heads, tokens, head_dim] per layer)."""
        columns = self.attention_mask[row].nonzero().squeeze(-1)
        return [
            (layer.keys[row : row + 1].index_select(2, columns), layer.values[row : row + 1].index_select(2, columns))
            for layer in _layers(self.cache)
        ]

    def _zero_padding(self) -> None:
        """Padding rows may hold NaN (a query that sees no key); zero them so masked weights stay zero."""
        if bool(self.attention_mask.all()):
            return
        keep = self.attention_mask.bool()[:, None, :, None]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.masked_fill(~keep, 0)
            layer.values = layer.values.masked_fill(~keep, 0)

    @torch.inference_mode()
    def decode(self, model, tokens: list[int]) -> torch.Tensor:
        """Feed one token per row; return the next-token logits [B, V]."""
        device = self.attention_mask.device
        ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        self.attention_mask = torch.cat(
            [self.attention_mask, torch.ones((self.size, 1), dtype=torch.long, device=device)], dim=1
        )
        out = model(
            input_ids=ids,
            attention_mask=self.attention_mask,
            position_ids=self.next_positions[:, None],
            **_cache_kwargs(model, self.cache),
        )
        self.next_positions = self.next_positions + 1
        return out.logits[:, -1, :].float()

    def _left_pad(self, columns: int) -> None:
        if columns <= 0:
            return
        for layer in _layers(self.cache):
            b, h, _, d = layer.keys.shape
            pad = layer.keys.new_zeros((b, h, columns, d))
            layer.keys = torch.cat([pad, layer.keys], dim=2)
            pad = layer.values.new_zeros((b, layer.values.shape[1], columns, layer.values.shape[3]))
            layer.values = torch.cat([pad, layer.values], dim=2)
        zeros = self.attention_mask.new_zeros((self.size, columns))
        self.attention_mask = torch.cat([zeros, self.attention_mask], dim=1)

    def merge(self, other: KVBatch) -> None:
        """Append the rows of ``other`` (after this batch's rows)."""
        width = max(self.width, other.width)
        self._left_pad(width - self.width)
        other._left_pad(width - other.width)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.attention_mask = torch.cat([self.attention_mask, other.attention_mask], dim=0)
        self.next_positions = torch.cat([self.next_positions, other.next_positions], dim=0)

    def select(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order) and trim columns that are padding in every kept row."""
        index = torch.tensor(rows, dtype=torch.long, device=self.attention_mask.device)
        mask = self.attention_mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else mask.shape[1]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
        self.attention_mask = mask[:, start:]
        self.next_positions = self.next_positions.index_select(0, index)
