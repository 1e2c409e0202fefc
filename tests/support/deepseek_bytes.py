"""DeepSeek checkpoint bytes worked out by hand from config.json shapes (tests compare the planner to these).

Written independently of infra/planner/weights.py: each tensor's shape (out x in) and stored precision is
spelled out; FP8 blocks are 128x128, V3 scales fp32, V4 scales e8m0 (one byte), V4 experts FP4 with one
e8m0 byte per 32 inputs.
"""

from __future__ import annotations


def v3_native_fp8_bytes(layers: int, dense: int, draft: int) -> tuple[int, int]:
    """(bytes on the GPUs, bytes of the checkpoint) of the DeepSeek-V3 layout, written out by hand:
    every linear layer fp8 (1 byte) + one fp32 scale (4 bytes) per 128x128 block; embedding, output head,
    norms and router bf16; router bias fp32. Shapes (out x in) from config.json: hidden 7168, q_lora 1536,
    128 heads x (128 nope + 64 rope), kv_lora 512, v 128, dense MLP 18432, 256 experts x 2048, 1 shared."""
    attention = (
        1536 * 7168
        + 24576 * 1536
        + 576 * 7168
        + 32768 * 512
        + 7168 * 16384
        + 4 * (12 * 56 + 192 * 12 + 5 * 56 + 256 * 4 + 56 * 128)
    )  # 187,151,072
    norms = (2 * 7168 + 512 + 1536) * 2  # 32,768
    dense_mlp = 3 * 18432 * 7168 + 4 * 3 * 144 * 56  # 396,458,496
    expert = 3 * 2048 * 7168 + 4 * 3 * 16 * 56  # 44,050,944 (one expert)
    moe = 257 * expert + 256 * 7168 * 2 + 256 * 4  # 256 routed + 1 shared + router
    main = 2 * 129280 * 7168 * 2 + 7168 * 2 + layers * (attention + norms)
    main += dense * dense_mlp + (layers - dense) * moe
    mtp = draft * (attention + norms + moe + 3 * 7168 * 2 + 7168 * 14336 * 2)  # + enorm/hnorm/norm, eh_proj bf16
    copies = draft * 2 * 129280 * 7168 * 2  # its embedding + head copies
    return main + mtp, main + mtp + copies


def v32_indexer_bytes() -> int:
    """One V3.2 layer's lightning indexer: wq_b 8192 x 1536 and wk 128 x 7168 fp8 + fp32 block scales,
    weights_proj 64 x 7168 and k_norm (weight + bias, 128 each) bf16."""
    return 8192 * 1536 + 4 * 64 * 12 + 128 * 7168 + 4 * 1 * 56 + (64 * 7168 + 2 * 128) * 2  # 14,421,728


def v4_flash_bytes(draft: bool) -> int:
    """DeepSeek-V4-Flash bytes by hand, tensor by tensor (shapes out x in from config.json and the
    released checkpoint's tensor listing): FP8 weights 1 byte + one e8m0 byte per 128x128 block, FP4
    experts half a byte + one e8m0 byte per 32 inputs, bf16 2, fp32 4, int64 8."""
    total = 2 * 129280 * 4096 * 2 + 4096 * 2 + (4 * 16384 + 4 + 1) * 4  # embed + head, norm, hc_head
    attention = (
        1024 * 4096
        + 32768 * 1024
        + 512 * 4096
        + 8192 * 4096
        + 4096 * 8192
        + 8 * 32
        + 256 * 8
        + 4 * 32
        + 64 * 32
        + 32 * 64
    )  # wq_a wq_b wkv wo_a wo_b
    small = (1024 + 512 + 2 * 4096) * 2 + 64 * 4 + 2 * (24 * 16384 + 24 + 3) * 4  # norms, sinks, hc mixers
    expert = 2 * (2048 * 4096 // 2 + 2048 * 128) + (4096 * 2048 // 2 + 4096 * 64)  # w1, w3, w2: 13,369,344
    shared = 3 * 2048 * 4096 + 16 * 32 + 32 * 16 + 16 * 32
    layer = attention + small + 256 * expert + shared + 256 * 4096 * 2  # + router weight
    csa = 2 * 1024 * 4096 * 2 + 512 * 2 + 4 * 1024 * 4  # compressor wkv/wgate, norm, ape
    csa += 8192 * 1024 + 64 * 8 + 64 * 4096 * 2 + 2 * 256 * 4096 * 2 + 128 * 2 + 4 * 256 * 4  # indexer
    hca = 2 * 512 * 4096 * 2 + 512 * 2 + 128 * 512 * 4
    total += 43 * layer + 3 * 129280 * 6 * 8 + 40 * 256 * 4  # hash tables / gate biases
    total += 21 * csa + 20 * hca  # layers 2, 4, ... 42 / 3, ... 41
    if draft:  # the MTP block mtp.0
        total += layer + 256 * 4 + 2 * (4096 * 4096 + 32 * 32) + 3 * 4096 * 2 + (4 * 16384 + 4 + 1) * 4
    return total
