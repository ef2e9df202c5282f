"""CPU backend: C/SIMD products over quantized blocks, C paged attention, a one-call decode step.

Two paths, picked by what is computed (measured on SmolLM2's matrices, 2 threads):
- decode (one token per sequence, a batch of sequences): `decode_step`, every layer in one C call,
  int16 activations multiplied with the raw blocks, one pass over the weights; memory-bound for one
  sequence, compute-bound for a batch, which multiplies the repacked weights (`tiles`) where there are.
- prompt chunks (`matmul`, `matmuls`): Q4_0/Q4_1/Q8_0 weights repacked once into the tile layout of
  kernels/qtiles.h (AVX-512 VNNI; the row kernels for fewer than TILE_MIN_TOKENS tokens), else tiles of
  weight rows dequantized into L2 and multiplied by BLAS sgemm in float32; compute-bound. Attention
  runs query by query over the paged cache, so a prompt's numbers do not depend on its chunking.
Our OpenMP team calls BLAS from each of its threads, so BLAS itself gets one thread for the whole
process (two pools of spinning threads on two cores starve each other).
"""

import functools
import os
import weakref

import numpy as np
from gguf import GGMLQuantizationType as QT
from threadpoolctl import threadpool_limits

from mistralcli._ext import attention, elementwise, qmatmul
from mistralcli._ext.decode_step import DecodeStep
from mistralcli.numba_kernels import call_noting_compilation
from mistralcli.quant_tensor import QuantTensor
from mistralcli.reference.ops import ReferenceOps

FUSED_TYPES = {QT(t) for t in qmatmul.SUPPORTED_TYPES}
DEQUANT_TYPES = {QT(t) for t in qmatmul.DEQUANT_TYPES}
FLOAT_TYPES = {QT(t) for t in qmatmul.FLOAT_TYPES}
TILE_ROWS = 1024
GEMM_GROUPS = (64, 32, 16, 8, 4, 2)  # tokens per sgemm call, tried largest first (see gemm_group)
GEMM_PAD_TOKENS = 8  # fewer tokens than this are padded (BLAS sends a few rows to kernels of their own)
FAST_GEMM_GROUP = 16  # an invariant group at least this large costs little: taken by default
TILE_MIN_TOKENS = 4  # products of this many tokens take the repacked weights (kernels/qtiles.h) where there are


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class CpuOps(ReferenceOps):
    name = "cpu"

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        self.num_threads = max(1, threads or available_cores())
        # Our OpenMP threads each call BLAS; BLAS's own idle threads would spin and take the cores
        # from our team, so it gets one thread.
        qmatmul.load_blas()  # scipy's BLAS, loaded first so that the limit reaches it too
        threadpool_limits(1, user_api="blas")
        self._tiles: dict[int, np.ndarray] = {}  # id of a weight -> its repacked rows

    def tiles(self, w: QuantTensor) -> np.ndarray | None:
        """w's rows repacked into the tile layout of kernels/qtiles.h (Q4_0, Q4_1, Q8_0) or ftiles.h (F32, F16,
        BF16), once, then kept; None where this CPU has no tile kernels for its type or MISTRALCLI_REPACK=0.
        Block weights: the multi-token products read them, one token reads the rows as they are (the
        memory-bound path). Float weights: the decode step reads them for any batch, one arithmetic for all."""
        tiles = self._tiles.get(id(w))
        if tiles is not None:
            return tiles
        qtype = int(w.ggml_type)
        if not repack_enabled():
            return None
        if qtype in qmatmul.TILE_TYPES and qmatmul.has_tile_kernels(qtype):
            tiles = qmatmul.tiles_pack(_raw_rows(w), qtype, w.shape[1])
        elif qtype in qmatmul.FLOAT_TYPES and qmatmul.has_float_tile_kernels(qtype) and len(w.shape) == 2:
            tiles = qmatmul.ftiles_pack(_raw_rows(w), qtype, w.shape[1])
        else:
            return None
        self._tiles[id(w)] = tiles
        weakref.finalize(w, self._tiles.pop, id(w), None)  # kept as long as the weight, no longer
        return tiles

    @property
    def repacked_bytes(self) -> int:
        """Memory the tile layouts hold, beside the weights as loaded."""
        return sum(tiles.nbytes for tiles in self._tiles.values())

    def matmul(self, x: np.ndarray, w: QuantTensor) -> np.ndarray:
        """x (T, K) float32 @ w (N, K)^T -> (T, N) float32.

        A token's row is the same bits whatever the other rows (batch invariance: a prompt token gets
        the same bits in a chunk of any length, a request alone or batched). Where the weight type has
        row kernels (kernels/qrows.h) they give it by construction, and are as fast as the GEMM here;
        elsewhere the GEMM path, its tokens in calls of gemm_group() tokens (padded), where the BLAS gives a
        token the same bits whatever its place in the call, when that costs little or is asked for (see
        gemm_tokens_per_call). A model with a decode step decodes there, not here."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        qtype = int(w.ggml_type)
        if w.ggml_type in FUSED_TYPES and qmatmul.has_row_kernels(qtype):
            tiles = self.tiles(w) if len(x) >= TILE_MIN_TOKENS else None
            if tiles is not None:
                qmatmul.matmul_tiles(out, x, tiles, qtype, self.num_threads)
            else:
                qmatmul.matmul(out, x, w.data, qtype, self.num_threads)
        elif w.ggml_type in FLOAT_TYPES and (tiles := self.tiles(w)) is not None:
            qmatmul.matmul_ftiles(out, x, tiles, qtype, self.num_threads)
        elif w.ggml_type in DEQUANT_TYPES or w.ggml_type in FLOAT_TYPES:
            group = gemm_tokens_per_call()
            # the tokens padded to whole groups (see gemm_group), or, in one call, to GEMM_PAD_TOKENS at least
            step = group or (GEMM_PAD_TOKENS if x.shape[0] < GEMM_PAD_TOKENS else 1)
            if x.shape[0] % step:
                padded = np.zeros((-(-x.shape[0] // step) * step, x.shape[1]), dtype=np.float32)
                padded[: len(x)] = x
                full = np.empty((len(padded), w.shape[0]), dtype=np.float32)
                qmatmul.matmul_gemm(full, padded, _raw_rows(w), qtype, self.num_threads, group)
                return full[: len(x)].copy()
            qmatmul.matmul_gemm(out, x, _raw_rows(w), qtype, self.num_threads, group)
        else:  # every type with block products can also be dequantized: only the rest come here
            return self._tiled(x, w)
        return out

    def matmuls(self, x: np.ndarray, ws: list[QuantTensor]) -> list[np.ndarray]:
        """x @ w^T for each w of ws; where every w is repacked for the tile kernels, x is quantized once for them
        all (the same bits as one product at a time)."""
        block = len(x) >= TILE_MIN_TOKENS and len(ws) > 1 and all(int(w.ggml_type) in qmatmul.TILE_TYPES for w in ws)
        tiles = [self.tiles(w) for w in ws] if block else [None]
        if any(t is None for t in tiles):
            return [self.matmul(x, w) for w in ws]
        xq, xs, xm = qmatmul.quantize_x16(np.ascontiguousarray(x, dtype=np.float32))
        outs = []
        for w, t in zip(ws, tiles, strict=True):
            out = np.empty((len(x), w.shape[0]), dtype=np.float32)
            qmatmul.matmul_tiles_quantized(out, xq, xs, xm, t, int(w.ggml_type), self.num_threads)
            outs.append(out)
        return outs

    def logits(self, x: np.ndarray, w: QuantTensor) -> np.ndarray:
        """The output projection through the block products whatever the number of rows: the logits of a
        prompt's last token are then the same bits however many prompts end in the same step."""
        if w.ggml_type not in FUSED_TYPES:
            return self.matmul(x, w)
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        qmatmul.matmul(out, x, w.data, int(w.ggml_type), self.num_threads)
        return out

    def _tiled(self, x: np.ndarray, w: QuantTensor) -> np.ndarray:
        """x @ w^T through float32 tiles of w's rows and BLAS."""
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        for start in range(0, w.shape[0], TILE_ROWS):
            stop = min(start + TILE_ROWS, w.shape[0])
            out[:, start:stop] = x @ self.dequantize(w, start, stop).T
        return out

    def layernorm(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty_like(x)
        _encoder().layernorm(out, x, _f32(weight), _f32(bias), eps)
        return out

    def gelu(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty_like(x)
        _encoder().gelu(out, x)
        return out

    def encoder_attention(self, q, k, v, starts: np.ndarray, scale: float) -> np.ndarray:
        q, k, v = (np.ascontiguousarray(t, dtype=np.float32) for t in (q, k, v))
        out = np.empty_like(q)
        _encoder().encoder_attention(out, q, k, v, np.asarray(starts, dtype=np.int64), scale)
        return out

    def pool(self, h: np.ndarray, starts: np.ndarray, mode: str) -> np.ndarray:
        h = np.ascontiguousarray(h, dtype=np.float32)
        out = np.empty((len(starts) - 1, h.shape[1]), dtype=np.float32)
        _encoder().pool(out, h, np.asarray(starts, dtype=np.int64), POOL_MODES[mode])
        return out

    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        """x (T, K) -> x / sqrt(mean(x^2) + eps) * weight (C, parallel over tokens)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty_like(x)
        elementwise.rmsnorm(out, x, np.ascontiguousarray(weight, dtype=np.float32), eps, self.num_threads)
        return out

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool) -> np.ndarray:
        """Rotate x (T, H, D) by cos/sin (T, D/2), into a new array (C)."""
        out = np.array(x, dtype=np.float32, order="C")
        elementwise.rope(out, np.ascontiguousarray(cos), np.ascontiguousarray(sin), interleaved, self.num_threads)
        return out

    def swiglu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """silu(gate) * up, (T, F) (C)."""
        gate = np.ascontiguousarray(gate, dtype=np.float32)
        out = np.empty_like(gate)
        elementwise.swiglu(out, gate, np.ascontiguousarray(up, dtype=np.float32), self.num_threads)
        return out

    def route_experts(self, logits: np.ndarray, k: int, renormalize: bool) -> tuple[np.ndarray, np.ndarray]:
        """As ReferenceOps.route_experts (Numba)."""
        from mistralcli.numba_kernels.cpu import moe

        logits = np.ascontiguousarray(logits, dtype=np.float32)
        ids = np.empty((len(logits), k), dtype=np.int32)
        weights = np.empty((len(logits), k), dtype=np.float32)
        call_noting_compilation(moe.route_experts, logits, k, renormalize, ids, weights)
        return ids, weights

    def group_by_expert(self, ids: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
        """As ReferenceOps.group_by_expert (Numba)."""
        from mistralcli.numba_kernels.cpu import moe

        order = np.empty(ids.size, dtype=np.int64)
        offsets = np.empty(num_experts + 1, dtype=np.int64)
        call_noting_compilation(moe.group_by_expert, np.ascontiguousarray(ids), num_experts, order, offsets)
        return order, offsets

    def scatter_add_rows(self, out: np.ndarray, rows: np.ndarray, targets: np.ndarray, scales: np.ndarray) -> None:
        """As ReferenceOps.scatter_add_rows (Numba)."""
        from mistralcli.numba_kernels.cpu import moe

        call_noting_compilation(
            moe.scatter_add_rows,
            out,
            np.ascontiguousarray(rows, dtype=np.float32),
            np.ascontiguousarray(targets, dtype=np.int64),
            np.ascontiguousarray(scales, dtype=np.float32),
        )

    def geglu_tanh(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """gelu_tanh(gate) * up, (T, F) (C)."""
        gate = np.ascontiguousarray(gate, dtype=np.float32)
        out = np.empty_like(gate)
        elementwise.geglu_tanh(out, gate, np.ascontiguousarray(up, dtype=np.float32), self.num_threads)
        return out

    def paged_attention(self, q, k, v, block_table, q_positions, scale: float, window: int = 0) -> np.ndarray:
        """As ReferenceOps.paged_attention, in C: each query reads its keys block by block (nothing is
        gathered), with arithmetic that does not depend on the other queries (kernels/attention.h)."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        out = np.empty_like(q)
        tables = np.ascontiguousarray(block_table, dtype=np.int32).reshape(1, -1)
        attention.paged_attention(
            out,
            q,
            k,
            v,
            tables,
            np.zeros(len(q), np.int32),
            np.ascontiguousarray(q_positions, dtype=np.int64),
            scale,
            self.num_threads,
            window=window or 0,
        )
        return out

    def decode_step(self, model) -> DecodeStep | None:
        """The whole-model C decode step for `model` (the engine's decode path), or None where it has a
        mixture of experts or a weight type without a kernel there: it then decodes through forward."""
        if getattr(model, "has_experts", True):  # experts, or not a decoder: op by op
            return None
        try:
            return decode_step(model, self.num_threads, tiles=self.tiles)
        except ValueError:
            return None

    def embedding(self, w: QuantTensor, token_ids: np.ndarray) -> np.ndarray:
        """Rows of w (V, D) for token_ids (T,) -> (T, D) float32, dequantized in C."""
        if w.ggml_type not in DEQUANT_TYPES:
            return super().embedding(w, token_ids)
        out = np.empty((len(token_ids), w.shape[1]), dtype=np.float32)
        for i, token in enumerate(token_ids):
            qmatmul.dequantize(out[i : i + 1], w.data, int(w.ggml_type), int(token), 1)
        return out

    def dequantize(self, w: QuantTensor, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of w as float32 (R, K)."""
        if w.ggml_type not in DEQUANT_TYPES:
            return w.dequantize(start, stop)
        out = np.empty((stop - start, w.shape[1]), dtype=np.float32)
        qmatmul.dequantize(out, w.data, int(w.ggml_type), start, self.num_threads)
        return out


POOL_MODES = {"mean": 0, "cls": 1, "last": 2}


def repack_enabled() -> bool:
    """MISTRALCLI_REPACK=0 keeps the weights as loaded (no tile layout: the row kernels do every product)."""
    return os.environ.get("MISTRALCLI_REPACK", "1") != "0"


def gemm_tokens_per_call() -> int:
    """Tokens per sgemm call on the GEMM path (0: all in one call). The invariant group where it is cheap (at
    least FAST_GEMM_GROUP tokens) or asked for (MISTRALCLI_BATCH_INVARIANT=1); else one call, the fastest, where
    a token's bits may vary with its place in a prompt chunk by a rounding (seen on AVX2 only: calls of 8 tokens
    there run the products at a third of the speed)."""
    group = gemm_group()
    return group if group >= FAST_GEMM_GROUP or os.environ.get("MISTRALCLI_BATCH_INVARIANT") == "1" else 0


@functools.cache
def gemm_group() -> int:
    """The most tokens per sgemm call for which this BLAS, on this CPU, gives a token the same bits wherever it
    sits among them (batch invariance of the GEMM path), found once per process by trying (milliseconds).

    BLAS kernels block the tokens (sgemm's N here) and may sum a token's product in another order at one place
    of a block than at another (seen: OpenBLAS on an AMD EPYC with AVX2 gives the same bits only in calls of 8
    tokens; on an Intel Xeon with AVX-512, in calls of 7 or more). The tokens going in calls of G, padded, each
    is computed as it would be alone; a call of one token has one place, so 1 always holds."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((32, 576)).astype(np.float32)
    x = rng.standard_normal((GEMM_GROUPS[0], 576)).astype(np.float32)
    return next((group for group in GEMM_GROUPS if _invariant(weights, x[:group])), 1)


def _invariant(weights: np.ndarray, x: np.ndarray) -> bool:
    """Whether each token of x gets the same bits in one call of them all as alone (padded to their number)."""
    group, raw = len(x), weights.view(np.uint8)

    def call(tokens: np.ndarray) -> np.ndarray:
        padded = np.zeros((group, tokens.shape[1]), dtype=np.float32)
        padded[: len(tokens)] = tokens
        out = np.empty((group, len(weights)), dtype=np.float32)
        qmatmul.matmul_gemm(out, padded, raw, int(QT.F32), 1, group)
        return out

    whole = call(x)
    return all(np.array_equal(call(x[i : i + 1])[0], whole[i]) for i in range(group))


def _encoder():
    """The encoder's Numba kernels, imported when an encoder first runs: a decoder's start never imports Numba."""
    from mistralcli.numba_kernels.cpu import encoder

    return encoder


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _raw_rows(w: QuantTensor) -> np.ndarray:
    """w's rows as raw bytes (N, row bytes), the kernels' view of every type."""
    return np.ascontiguousarray(w.data).view(np.uint8).reshape(w.shape[0], -1)


def decode_step(model, num_threads: int, simd_level: int = -1, layers: list | None = None, tiles=None) -> DecodeStep:
    """The C decode step (kernels/llama_step.h) over a DecoderModel's weights (or other `layers`); tiles: see
    DecodeStep (CpuOps.tiles: batches multiply the repacked weights)."""
    a = model.args
    return DecodeStep(
        a,
        model.layers if layers is None else layers,
        model.output_norm,
        model.output,
        model.embed,
        model.inv_freqs,
        num_threads,
        simd_level,
        attn_scale=a.attn_scale,
        embed_scale=a.embed_scale,
        act="gelu_tanh" if a.hidden_act == "gelu_pytorch_tanh" else "silu",
        tiles=tiles,
    )
