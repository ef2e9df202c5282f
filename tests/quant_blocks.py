"""Random GGML blocks of any type, with finite fp16 scales (gguf cannot quantize every type)."""

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT

# Byte offsets of the fp16 fields in each block: random bytes there could be inf or NaN.
FP16_FIELDS = {
    QT.Q4_0: [0],
    QT.Q4_1: [0, 2],
    QT.Q5_0: [0],
    QT.Q5_1: [0, 2],
    QT.Q8_0: [0],
    QT.Q4_K: [0, 2],
    QT.Q5_K: [0, 2],
    QT.Q6_K: [208],
    QT.Q2_K: [80, 82],
    QT.Q3_K: [108],
    QT.IQ4_NL: [0],
    QT.IQ4_XS: [0],
    QT.Q8_K: [],
}
FP32_FIELDS = {QT.Q8_K: [0]}


def random_blocks(qtype, rows, blocks_per_row, seed):
    rng = np.random.default_rng(seed)
    type_size = GGML_QUANT_SIZES[qtype][1]
    data = rng.integers(0, 256, (rows, blocks_per_row, type_size), dtype=np.uint8)
    for offset in FP16_FIELDS[qtype]:
        scales = (rng.standard_normal((rows, blocks_per_row)) * 0.05).astype(np.float16)
        data[:, :, offset : offset + 2] = scales.view(np.uint8).reshape(rows, blocks_per_row, 2)
    for offset in FP32_FIELDS.get(qtype, []):
        scales = (rng.standard_normal((rows, blocks_per_row)) * 0.05).astype(np.float32)
        data[:, :, offset : offset + 4] = scales.view(np.uint8).reshape(rows, blocks_per_row, 4)
    return data.reshape(rows, blocks_per_row * type_size)
