"""Prompt-prefix KV cache: chat prompts share long prefixes (the template's system prompt, earlier turns),
so their keys and values are computed once and reused by later prompts.

Prefixes are kept at multiples of ``block`` tokens. After a prompt is prefilled, its KV up to the last
block boundary before its final token is stored once (one copy per layer); every block boundary inside
it becomes a lookup key pointing into that copy. ``lookup`` returns the longest stored prefix of a new
prompt (always leaving at least one token to compute). Least recently used copies are evicted beyond
``capacity_tokens``.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import torch

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, tokens, head_dim]


def _boundary_keys(tokens: list[int], block: int, upto: int) -> list[bytes]:
    """Digest of each prefix ``tokens[:block]``, ``tokens[:2*block]``, ... up to ``upto`` tokens, in O(upto)."""
    digest = hashlib.blake2b(digest_size=16)
    keys = []
    for end in range(block, upto + 1, block):
        digest.update(array("q", tokens[end - block : end]).tobytes())
        keys.append(digest.digest())
    return keys


@dataclass
class _Entry:
    layers: LayerKV
    length: int
    keys: frozenset[bytes]  # every block boundary of this prefix


@dataclass(frozen=True)
class PrefixHit:
    length: int
    layers: LayerKV  # views of length ``length``


class PrefixCache:
    def __init__(self, capacity_tokens: int, block: int = 4) -> None:
        self.capacity_tokens = capacity_tokens
        self.block = block
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # id -> entry, least recently used first
        self._index: dict[bytes, tuple[int, int]] = {}  # prefix key -> (entry id, length)
        self._tokens = 0
        self._next_id = 0

    @property
    def stored_tokens(self) -> int:
        return self._tokens

    def _usable(self, prompt_len: int) -> int:
        return ((prompt_len - 1) // self.block) * self.block

    def contains(self, prompt: list[int]) -> bool:
        """True when the longest usable prefix of ``prompt`` is stored already."""
        keys = _boundary_keys(prompt, self.block, self._usable(len(prompt)))
        return not keys or keys[-1] in self._index

    def lookup(self, prompt: list[int]) -> PrefixHit | None:
        for key in reversed(_boundary_keys(prompt, self.block, self._usable(len(prompt)))):
            found = self._index.get(key)
            if found is None:
                continue
            entry_id, length = found
            entry = self._entries[entry_id]
            self._entries.move_to_end(entry_id)
            return PrefixHit(length, [(k[:, :, :length], v[:, :, :length]) for k, v in entry.layers])
        return None

    def store(self, prompt: list[int], layers: LayerKV) -> None:
        """Keep the KV of ``prompt`` (``layers`` hold at least its first block-aligned tokens, in order)."""
        if self.capacity_tokens <= 0:
            return
        length = self._usable(len(prompt))
        boundary_keys = _boundary_keys(prompt, self.block, length)
        if length == 0 or length > self.capacity_tokens or boundary_keys[-1] in self._index:
            return
        entry_id, self._next_id = self._next_id, self._next_id + 1
        copies = [(k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in layers]
        for number, key in enumerate(boundary_keys, start=1):
            self._index.setdefault(key, (entry_id, number * self.block))
        keys = frozenset(boundary_keys)
        self._entries[entry_id] = _Entry(copies, length, keys)
        self._tokens += length
        while self._tokens > self.capacity_tokens and self._entries:
            self._evict()

    def _evict(self) -> None:
        evicted_id, entry = self._entries.popitem(last=False)
        self._tokens -= entry.length
        for key in entry.keys:
            owner, length = self._index.get(key, (None, 0))
            if owner != evicted_id:
                continue
            del self._index[key]
            # another stored prompt with the same prefix keeps it findable
            for other_id, other in self._entries.items():
                if key in other.keys:
                    self._index[key] = (other_id, length)
                    break

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self._tokens = 0
