"""The prompt-prefix KV cache: lookup, eviction, and identical generations with and without it."""

from __future__ import annotations

import pytest
import torch

from inference.server.engine.prefix_cache import PrefixCache


def _kv(tokens: list[int], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fake per-layer KV whose values are the token ids, so slices can be checked."""
    t = torch.tensor(tokens, dtype=torch.float32)[None, None, :, None]
    return [(t + layer, -t - layer) for layer in range(layers)]


def test_longest_block_aligned_prefix_is_found_and_one_token_is_left():
    cache = PrefixCache(capacity_tokens=100, block=4)
    stored = list(range(1, 12))  # 11 tokens -> usable prefix of 8
    cache.store(stored, _kv(stored))
    assert cache.stored_tokens == 8
    hit = cache.lookup(stored)
    assert hit.length == 8
    assert hit.layers[1][0].flatten().tolist() == [t + 1 for t in stored[:8]]
    assert cache.lookup([1, 2, 3, 4, 5, 6, 99, 100, 101]).length == 4
    assert cache.lookup([1, 2, 3, 4, 5]).length == 4
    assert cache.lookup([1, 2, 3, 4]) is None  # must leave the last token to compute
    assert cache.lookup([9, 9, 9, 9, 9, 9]) is None
    assert cache.contains(stored) and not cache.contains([5, 5, 5, 5, 5, 5])


def test_least_recently_used_prefixes_are_evicted_but_shared_ones_stay_findable():
    cache = PrefixCache(capacity_tokens=16, block=4)
    a = [1, 2, 3, 4, 10, 11, 12, 13, 0]
    b = [1, 2, 3, 4, 20, 21, 22, 23, 0]
    c = [7, 7, 7, 7, 7, 7, 7, 7, 0]
    for prompt in (a, b):
        cache.store(prompt, _kv(prompt))
    assert cache.stored_tokens == 16
    cache.store(c, _kv(c))  # evicts a (least recently used)
    assert cache.stored_tokens == 16
    assert cache.lookup(a).length == 4  # [1,2,3,4] is still held by b
    assert cache.lookup(b).length == 8
    assert cache.lookup(c).length == 8


def test_zero_capacity_stores_nothing():
    cache = PrefixCache(capacity_tokens=0)
    cache.store(list(range(40)), _kv(list(range(40))))
    assert cache.stored_tokens == 0 and cache.lookup(list(range(40))) is None


@pytest.mark.slow
def test_prefill_with_cached_prefixes_generates_the_same_tokens(model_folder, tokenizer):
    from transformers import AutoModelForCausalLM

    from inference.server.engine.kv_batch import KVBatch

    model = AutoModelForCausalLM.from_pretrained(str(model_folder), dtype=torch.float32).eval()
    questions = ["What is the capital of France?", "Write a haiku about the sea, with many words.", "Hi"]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)[
            "input_ids"
        ]
        for q in questions
    ]

    def greedy(batch: KVBatch, logits: torch.Tensor, steps: int = 8) -> list[list[int]]:
        out = [[t] for t in logits.argmax(-1).tolist()]
        for _ in range(steps):
            logits = batch.decode(model, [o[-1] for o in out])
            for o, t in zip(out, logits.argmax(-1).tolist(), strict=True):
                o.append(t)
        return out

    plain = greedy(*KVBatch.prefill(model, prompts, tokenizer.pad_token_id or 0))
    cache = PrefixCache(capacity_tokens=1024)
    first, _ = KVBatch.prefill(model, prompts[:1], 0)
    cache.store(prompts[0], first.row_kv(0))
    hits = [cache.lookup(p) for p in prompts]
    assert all(hit is not None and hit.length >= 16 for hit in hits)  # the shared system prompt
    cached = greedy(*KVBatch.prefill(model, prompts, 0, hits))
    assert cached == plain
    # joining a running batch and leaving it keeps every row's tokens
    batch, logits = KVBatch.prefill(model, prompts[:2], 0)
    late, late_logits = KVBatch.prefill(model, prompts[2:], 0, hits[2:])
    batch.merge(late)
    rows = greedy(batch, torch.cat([logits, late_logits]))
    assert rows == plain
