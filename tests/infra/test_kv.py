"""KV cache per attention family, worked out by hand from vLLM 0.32.0's cache specs (see infra/planner/kv.py)."""

from __future__ import annotations

from infra.catalog import load_catalog
from infra.planner.kv import kv_layout

CATALOG = load_catalog()


def test_mla_latent_per_layer_and_the_mtp_layer() -> None:
    v31 = CATALOG.model("deepseek-v3.1")
    # MLAAttentionSpec: head_size = kv_lora_rank + qk_rope_head_dim = 576, no separate V, bf16 (auto)
    assert kv_layout(v31, 1).per_token_bytes == 61 * 576 * 2 == 70_272
    assert kv_layout(v31, 8, spec_decode=True).per_token_bytes == 62 * 576 * 2 == 71_424  # + MTP layer, every GPU
    assert kv_layout(v31, 8).per_sequence_bytes == 0


def test_v32_adds_the_lightning_indexer_key() -> None:
    v32 = CATALOG.model("deepseek-v3.2")
    # DeepseekV32IndexerCache: 128 fp8 values + 128 // 128 fp32 scales = 132 bytes per token and layer
    assert kv_layout(v32, 4).per_token_bytes == 61 * (576 * 2 + 132) == 78_324
    assert kv_layout(v32, 4, spec_decode=True).per_token_bytes == 62 * 1_284 == 79_608
    # a decode step reads only the index_topk = 2048 selected latents, but scores every indexer key
    layout = kv_layout(v32, 4)
    assert layout.read_bytes(131_072) == 61 * (2048 * 1152 + 131_072 * 132)
    assert layout.read_bytes(1_000) == layout.sequence_bytes(1_000) == 1_000 * 78_324


def test_v4_flash_hybrid_cache_by_hand() -> None:
    v4 = CATALOG.model("deepseek-v4-flash")
    # fp8_ds_mla: 584 bytes per stored state, pages rounded up to 576 bytes, --block-size 256.
    csa_kv = -(-64 * 584 // 576) * 576  # 64 states per 256-token block: 37,376 -> 37,440
    csa_index = -(-64 * 132 // 576) * 576  # indexer keys, 132 bytes each: 8,448 -> 8,640
    hca_kv = -(-2 * 584 // 576) * 576  # 2 states per block: 1,168 -> 1,728
    assert (csa_kv, csa_index, hca_kv) == (37_440, 8_640, 1_728)
    per_token = (21 * (csa_kv + csa_index) + 20 * hca_kv) / 256  # 21 ratio-4 layers, 20 ratio-128 layers
    assert per_token == 3_915 == kv_layout(v4, 1).per_token_bytes
    # bounded per sequence: every block's 128-token window (3 blocks of 64 x 584 -> 37,440 bytes), the
    # compressors' fp32 rings (C4: 3 blocks of 4 x 2 x 2 x 512 x 4 bytes, C128: 17 blocks of 8 x 2 x 512 x 4,
    # C4 indexer: 3 blocks of 4 x 2 x 2 x 128 x 4), each page rounded up to 576 bytes
    windows = 43 * 3 * 37_440
    rings = 21 * 3 * 32_832 + 20 * 17 * 32_832 + 21 * 3 * 8_640
    assert kv_layout(v4, 4).per_sequence_bytes == windows + rings == 18_605_376
    assert kv_layout(v4, 4, spec_decode=True).per_sequence_bytes == windows + rings + 3 * 37_440  # MTP window
    # how it grows: 18.6 MB + 3,915 bytes per token; a 1M-token sequence is 4.12 GB, where V3.2 needs 82 GB
    assert kv_layout(v4, 4).sequence_bytes(1_048_576) == 18_605_376 + 1_048_576 * 3_915 == 4_123_780_416
    assert kv_layout(CATALOG.model("v3.2"), 4).sequence_bytes(1_048_576) == 1_048_576 * 78_324
    # replicated: every GPU of a TP group holds all of it (num_kv_heads 1, max_tp_shards 1)
    assert kv_layout(v4, 4).per_token_bytes == kv_layout(v4, 1).per_token_bytes


def test_v4_pro_starts_with_two_hca_layers() -> None:
    pro = kv_layout(CATALOG.model("deepseek-v4-pro"), 8)
    # 30 ratio-4 layers, 31 ratio-128 layers (0, 1, 3, ..., 59)
    assert (30 * (37_440 + 8_640) + 31 * 1_728) / 256 == 5_609.25
    assert pro.per_token_bytes == 5_610  # whole bytes, rounded up


def test_v4_sparse_reads_stop_at_the_top_k() -> None:
    v4 = kv_layout(CATALOG.model("deepseek-v4-flash"), 4)
    # CSA attends to index_topk = 512 compressed entries = 2,048 tokens; indexer keys and HCA are read whole
    at_1m = v4.read_bytes(1_048_576)
    expected = 21 * (2048 * 37_440 + 1_048_576 * 8_640) / 256 + 20 * 1_048_576 * 1_728 / 256 + 18_605_376
    assert at_1m == expected and at_1m < v4.sequence_bytes(1_048_576) / 3


def test_gqa_shards_kv_heads() -> None:
    qwen3 = CATALOG.model("r1-0528-qwen3-8b")
    assert kv_layout(qwen3, 1).per_token_bytes == 2 * 36 * 8 * 128 * 2 == 147_456
    assert kv_layout(qwen3, 4).per_token_bytes == 2 * 36 * 2 * 128 * 2
