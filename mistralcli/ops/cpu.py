"""CPU backend: C/SIMD products over quantized blocks for decode, dequantize + BLAS for prefill.

Few-token products (decode) go through `_ext.qmatmul`: int16 activations, integer multiply-adds on
the raw blocks, parallel over rows. Many-token products (prefill) are compute-bound: rows are
dequantized in tiles (Numba) and multiplied with BLAS.
"""

import numba
import numpy as np
from gguf import GGMLQuantizationType as QT

from mistralcli._ext import qmatmul
from mistralcli.loading.quant_tensor import QuantTensor
from mistralcli.numba_kernels.cpu import quant_matmul as qm
from mistralcli.ops.reference import ReferenceOps

FUSED_TYPES = {QT.Q4_0: qm.Q4_0, QT.Q4_1: qm.Q4_1, QT.Q8_0: qm.Q8_0}
# Up to this many tokens the fused kernel wins; above it, dequantize a tile and use BLAS GEMM.
MAX_FUSED_TOKENS = 4
TILE_ROWS = 1024


class CpuOps(ReferenceOps):
    name = "cpu"

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        self.num_threads = max(1, min(threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(self.num_threads)
        self._lut = qm.fp16_table()

    def matmul(self, x: np.ndarray, w: QuantTensor) -> np.ndarray:
        """x (T, K) float32 @ w (N, K)^T -> (T, N) float32."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if w.ggml_type == QT.F32:
            return x @ w.data.T
        qtype = FUSED_TYPES.get(w.ggml_type)
        if qtype is not None and x.shape[0] <= MAX_FUSED_TOKENS:
            out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
            qmatmul.matmul(out, x, w.data, int(w.ggml_type), self.num_threads)
            return out
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        for start in range(0, w.shape[0], TILE_ROWS):
            stop = min(start + TILE_ROWS, w.shape[0])
            out[:, start:stop] = x @ self.dequantize(w, start, stop).T
        return out

    def dequantize(self, w: QuantTensor, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of w as float32 (R, K)."""
        qtype = FUSED_TYPES.get(w.ggml_type)
        if qtype is None:
            return w.dequantize(start, stop)
        out = np.empty((stop - start, w.shape[1]), dtype=np.float32)
        qm.dequantize_blocks(out, w.data, w.data.view(np.uint16), self._lut, qtype, start)
        return out
