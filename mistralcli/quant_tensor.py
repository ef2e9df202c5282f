"""QuantTensor: one weight as it lies in the file (GGML type, logical shape, raw block bytes)."""

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType, quants

# Types whose rows are plain numbers rather than packed blocks.
DENSE_DTYPES = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.BF16: np.uint16,  # raw bfloat16 bits: numpy has no bfloat16
}


def dequantize_q8_k(blocks: np.ndarray) -> np.ndarray:
    """Q8_K, which gguf does not dequantize (llama.cpp uses it for activations; a file may hold it):
    292-byte blocks | d float32 | qs[256] int8 | bsums[16] int16 |, w = d * qs."""
    blocks = np.ascontiguousarray(blocks).reshape(-1, 292)
    d = blocks[:, :4].copy().view(np.float32)
    qs = blocks[:, 4:260].view(np.int8).astype(np.float32)
    return d * qs


# NumPy references for the block types the gguf package leaves out.
EXTRA_DEQUANTIZERS = {GGMLQuantizationType.Q8_K: dequantize_q8_k}


def dequantize_blocks(data: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    """Raw rows (R, row bytes) of a block type -> float32 (R, K): gguf's reference, or ours where it has none."""
    if ggml_type in EXTRA_DEQUANTIZERS:
        rows = np.asarray(data)
        return EXTRA_DEQUANTIZERS[ggml_type](rows).reshape(rows.shape[0], -1)
    return quants.dequantize(data, ggml_type)


@dataclass(frozen=True)
class QuantTensor:
    """A weight matrix (or vector) kept in its storage format.

    `shape` is the logical row-major shape: (rows, cols) = (out_features, in_features) for a matrix.
    `data` is a read-only view of the file: (rows, row_bytes) uint8 for block formats,
    (rows, cols) of `DENSE_DTYPES[ggml_type]` for dense ones.
    """

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray

    def dequantize(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 (the NumPy reference: the `gguf` package's code, see dequantize_blocks)."""
        rows = self.data[start:stop]
        if self.ggml_type == GGMLQuantizationType.F32:
            return np.asarray(rows, dtype=np.float32)
        if self.ggml_type == GGMLQuantizationType.F16:
            return rows.astype(np.float32)
        if self.ggml_type == GGMLQuantizationType.BF16:
            return (rows.astype(np.uint32) << 16).view(np.float32)
        return dequantize_blocks(rows, self.ggml_type)

    @classmethod
    def from_array(cls, name: str, array: np.ndarray) -> "QuantTensor":
        """Wrap a dense float32/float16 array (safetensors weights, test weights)."""
        types = {np.dtype(np.float32): GGMLQuantizationType.F32, np.dtype(np.float16): GGMLQuantizationType.F16}
        if array.dtype not in types:
            raise TypeError(f"{name}: cannot wrap dtype {array.dtype}")
        return cls(name, types[array.dtype], tuple(array.shape), array)
