"""CPU backend: C/SIMD products over quantized blocks for decode, dequantize + BLAS for prefill.

Few-token products (decode) go through `_ext.qmatmul`: int16 activations, integer multiply-adds on
the raw blocks, parallel over rows. Many-token products (prefill) are compute-bound: rows are
dequantized in tiles (Numba) and multiplied with BLAS.
"""

import numba
import numpy as np
from gguf import GGMLQuantizationType as QT

from mistralcli._ext import qmatmul
from mistralcli._ext.llama_step import LlamaStep
from mistralcli.kv_cache import KVCache
from mistralcli.loading.quant_tensor import QuantTensor
from mistralcli.numba_kernels.cpu import quant_matmul as qm
from mistralcli.models.rope import cos_sin
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

    def fused_decoder(self, model):
        """The whole-model C decode step when every weight has a kernel there, else None."""
        if type(model).__name__ != "LlamaModel":
            return None
        try:
            return FusedLlamaDecoder(model, self)
        except ValueError:  # a weight type without a fused kernel: op by op instead
            return None

    def dequantize(self, w: QuantTensor, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of w as float32 (R, K)."""
        qtype = FUSED_TYPES.get(w.ggml_type)
        if qtype is None:
            return w.dequantize(start, stop)
        out = np.empty((stop - start, w.shape[1]), dtype=np.float32)
        qm.dequantize_blocks(out, w.data, w.data.view(np.uint16), self._lut, qtype, start)
        return out


class FusedLlamaDecoder:
    """Decode one token through every layer in one C call (kernels/llama_step.h)."""

    def __init__(self, model, ops: CpuOps):
        self.model = model
        self.ops = ops
        self.step = LlamaStep(model.args, model.layers, model.output_norm, model.output, ops.num_threads)

    def can_run(self, cache) -> bool:
        return type(cache) is KVCache

    def __call__(self, token_id: int, position: int, cache: KVCache) -> np.ndarray:
        """Logits (1, V) for token_id at position; its keys and values go into the cache."""
        cache.ensure(position + 1)
        embedding = self.ops.embedding(self.model.embed, np.array([token_id]))[0]
        cos, sin = cos_sin(np.array([position]), self.model.inv_freq)
        logits = np.empty((1, self.model.output.shape[0]), dtype=np.float32)
        self.step(embedding, position, cos[0], sin[0], cache.k, cache.v, logits[0])
        np.maximum(cache.lengths, position + 1, out=cache.lengths)
        return logits
