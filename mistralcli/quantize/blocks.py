"""A float tensor to the bytes a GGUF file holds, for every type this quantizes to: `quantize(data, qtype,
imatrix)` takes what gguf.quants.quantize takes and returns the same array (uint8 (..., bytes per row) for a
block type, float16 for F16, uint8 bytes for BF16).

- The legacy block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and BF16 go through the C kernels of
  _ext/kernels/legacy_quant.h, bit-exact with gguf.quants, their reference.
- The K types (Q2_K..Q6_K), IQ4_NL and IQ4_XS go through numba_kernels/cpu/kquants.py, bit-exact with
  llama.cpp's quantizer and with the NumPy reference in mistralcli/reference/kquants.py; Q4_K, Q5_K and Q6_K,
  the bulk of the K mixes, through the AVX2 kernels of _ext/kernels/kquant.h where the CPU has AVX2 (the same
  bytes, a super-block's sub-blocks searched side by side in SIMD lanes).
- An importance matrix (one weight per column of the rows) steers the search of those and of Q4_0..Q5_1 as it
  steers llama.cpp's (Q8_0, F16 and BF16 have no search: it changes nothing there)."""

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from mistralcli.errors import MistralError

Q = GGMLQuantizationType
LEGACY_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.F16, Q.BF16, Q.F32)
K_TYPES = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_NL, Q.IQ4_XS)
WEIGHTED_LEGACY = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)  # what an importance matrix steers of the legacy types
SIMD_K_TYPES = (Q.Q4_K, Q.Q5_K, Q.Q6_K)  # the AVX2 kernels' types
BLOCK_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, *K_TYPES)


def _threads() -> int:
    from mistralcli.ops.cpu import available_cores

    return available_cores()


def quantize(data: np.ndarray, qtype: GGMLQuantizationType, imatrix: np.ndarray | None = None) -> np.ndarray:
    from mistralcli._ext import quantizers

    data = np.asarray(data)
    if qtype == Q.F32:
        return data.astype(np.float32, copy=False)
    if qtype == Q.F16:
        return data.astype(np.float16, copy=False)
    x = np.ascontiguousarray(data, dtype=np.float32)
    if qtype == Q.BF16:
        out = np.empty(x.size, dtype=np.uint16)
        quantizers.bf16(x.reshape(-1).view(np.uint32), out, _threads())
        return out.view(np.uint8).reshape(*x.shape[:-1], x.shape[-1] * 2)
    if qtype not in BLOCK_TYPES:
        raise MistralError(f"no quantizer here for {qtype.name}")
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if x.ndim == 0 or x.shape[-1] % block_size:
        raise MistralError(f"{qtype.name} quantizes rows of a multiple of {block_size} values, not shape {x.shape}")
    blocks = x.reshape(-1, block_size)
    if qtype in K_TYPES:
        out = _k_blocks(blocks, qtype, imatrix, x.shape[-1])
    elif imatrix is not None and qtype in WEIGHTED_LEGACY:
        out = _weighted_legacy(x.reshape(-1, x.shape[-1]), qtype, imatrix)
    else:
        out = _legacy(blocks, qtype)
    assert out.shape[1] == type_size
    return out.reshape(*x.shape[:-1], x.shape[-1] // block_size * type_size)


def _half(values: np.ndarray) -> np.ndarray:
    """float32 scales as float16 bytes, (n, 2), rounded as gguf rounds them (numpy's astype)."""
    return values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def _legacy(blocks: np.ndarray, qtype) -> np.ndarray:
    """The blocks' scales, minimums and high bits from C, laid out: | d | (m) | (qh) | qs |."""
    from mistralcli._ext import quantizers

    n = blocks.shape[0]
    d, m, qh = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.uint32)
    qs = np.empty((n, 32 if qtype == Q.Q8_0 else 16), np.uint8)
    quantizers.legacy_blocks(blocks, int(qtype), d, m, qh, qs, _threads())
    parts = [_half(d)]
    if qtype in (Q.Q4_1, Q.Q5_1):
        parts.append(_half(m))
    if qtype in (Q.Q5_0, Q.Q5_1):
        parts.append(qh.astype("<u4").view(np.uint8).reshape(n, 4))
    return np.concatenate([*parts, qs], axis=1)


def _k_blocks(blocks, qtype, imatrix, row_length):
    """The C kernels where they cover the type on this CPU (Numba, and its start-up, only when needed)."""
    from mistralcli._ext import quantizers

    block_size, type_size = GGML_QUANT_SIZES[qtype]
    qw = np.zeros((1, block_size), np.float32) if imatrix is None else _importance(imatrix, row_length, block_size)
    out = np.empty((blocks.shape[0], type_size), np.uint8)
    if qtype in SIMD_K_TYPES and quantizers.K_AVAILABLE:
        quantizers.k_blocks(blocks, qw, imatrix is not None, int(qtype), out, _threads())
    else:
        from mistralcli.numba_kernels.cpu import kquants as kernels

        getattr(kernels, qtype.name.lower())(blocks, qw, imatrix is not None, out)
    return out


def _importance(imatrix, row_length: int, block_size: int) -> np.ndarray:
    qw = np.ascontiguousarray(imatrix, dtype=np.float32)
    if qw.shape != (row_length,):
        raise MistralError(f"the importance matrix has {qw.size} values for rows of {row_length}")
    return qw.reshape(-1, block_size)


def _weighted_legacy(rows, qtype, imatrix):
    from mistralcli.numba_kernels.cpu import legacy_weighted as kernels

    _, type_size = GGML_QUANT_SIZES[qtype]
    qw = _importance(imatrix, rows.shape[-1], 32)
    out = np.empty((rows.shape[0] * rows.shape[1] // 32, type_size), np.uint8)
    kernels.legacy_weighted(np.ascontiguousarray(rows), qw, int(qtype), out)
    return out
