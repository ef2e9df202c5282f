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
        """Rows [start, stop) as float32 (the NumPy reference: the `gguf` package's own code)."""
        rows = self.data[start:stop]
        if self.ggml_type == GGMLQuantizationType.F32:
            return np.asarray(rows, dtype=np.float32)
        if self.ggml_type == GGMLQuantizationType.F16:
            return rows.astype(np.float32)
        if self.ggml_type == GGMLQuantizationType.BF16:
            return (rows.astype(np.uint32) << 16).view(np.float32)
        return quants.dequantize(rows, self.ggml_type)

    @classmethod
    def from_array(cls, name: str, array: np.ndarray) -> "QuantTensor":
        """Wrap a dense float32/float16 array (safetensors weights, test weights)."""
        types = {np.dtype(np.float32): GGMLQuantizationType.F32, np.dtype(np.float16): GGMLQuantizationType.F16}
        if array.dtype not in types:
            raise TypeError(f"{name}: cannot wrap dtype {array.dtype}")
        return cls(name, types[array.dtype], tuple(array.shape), array)
