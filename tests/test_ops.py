"""CPU kernels against the NumPy reference: dequantization bit-exact with gguf, products within
float32 rounding (tolerance: 1e-4 relative to the output scale)."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, quants
from gguf import GGMLQuantizationType as QT
from quant_blocks import random_blocks

from mistralcli.loading.gguf_file import open_gguf
from mistralcli.ops import get_ops
from mistralcli.quant_tensor import QuantTensor

FUSED = [QT.Q4_0, QT.Q4_1, QT.Q8_0]


@pytest.fixture(scope="module")
def ops():
    return get_ops("reference"), get_ops("cpu")


def random_weight(qtype, rows=48, cols=256, seed=0) -> QuantTensor:
    rng = np.random.default_rng(seed)
    dense = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2.0, (rows, 1))).astype(np.float32)
    if qtype == QT.F32:
        return QuantTensor.from_array("w", dense)
    if qtype == QT.F16:
        return QuantTensor.from_array("w", dense.astype(np.float16))
    if qtype == QT.BF16:  # raw bfloat16 bits, as the loader gives them
        return QuantTensor("w", qtype, (rows, cols), quants.quantize(dense, qtype).view(np.uint16))
    try:
        return QuantTensor("w", qtype, (rows, cols), quants.quantize(dense, qtype))
    except NotImplementedError:  # gguf quantizes only some types: random blocks for the others
        block_weights = GGML_QUANT_SIZES[qtype][0]
        return QuantTensor("w", qtype, (rows, cols), random_blocks(qtype, rows, cols // block_weights, seed))


@pytest.mark.parametrize("qtype", FUSED)
def test_dequantize_bit_exact_with_gguf(ops, qtype):
    _, cpu = ops
    w = random_weight(qtype, seed=int(qtype))
    expected = quants.dequantize(w.data, qtype)
    assert np.array_equal(cpu.dequantize(w, 0, w.shape[0]), expected)
    assert np.array_equal(cpu.dequantize(w, 5, 17), expected[5:17])


@pytest.mark.parametrize("qtype", FUSED + [QT.F32, QT.F16, QT.Q5_0])
@pytest.mark.parametrize("num_tokens", [1, 3, 9])
def test_matmul_matches_reference(ops, qtype, num_tokens):
    ref, cpu = ops
    w = random_weight(qtype, seed=7)
    x = np.random.default_rng(1).standard_normal((num_tokens, w.shape[1])).astype(np.float32)
    expected = ref.matmul(x, w)
    got = cpu.matmul(x, w)
    assert got.shape == expected.shape == (num_tokens, w.shape[0])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


GEMM_TYPES = [
    QT.F32,
    QT.F16,
    QT.BF16,
    QT.Q4_0,
    QT.Q4_1,
    QT.Q5_0,
    QT.Q5_1,
    QT.Q8_0,
    QT.Q2_K,
    QT.Q3_K,
    QT.Q4_K,
    QT.Q5_K,
    QT.Q6_K,
    QT.Q8_K,
    QT.IQ4_NL,
    QT.IQ4_XS,
]


@pytest.mark.parametrize("qtype", GEMM_TYPES)
@pytest.mark.parametrize("num_tokens", [1, 24, 70])
def test_gemm_path_matches_reference(ops, qtype, num_tokens):
    """The prefill path (dequantized tiles + BLAS sgemm) against x @ dequantize(w)^T in float64: 1e-5
    of the output scale. 200 rows split into tiles unevenly over 2 and 3 threads."""
    from mistralcli._ext import qmatmul

    _, cpu = ops
    w = random_weight(qtype, rows=200, seed=11)
    x = np.random.default_rng(4).standard_normal((num_tokens, w.shape[1])).astype(np.float32)
    expected = x.astype(np.float64) @ w.dequantize().astype(np.float64).T
    raw = np.ascontiguousarray(w.data).view(np.uint8).reshape(w.shape[0], -1)
    for threads in (1, 2, 3):
        got = np.full((num_tokens, w.shape[0]), np.nan, dtype=np.float32)
        qmatmul.matmul_gemm(got, x, raw, int(qtype), threads)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(cpu.matmul(x, w), expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.F16])
def test_gemm_path_in_invariant_groups_gives_a_token_the_same_bits_wherever_it_sits(ops, qtype, monkeypatch):
    """In calls of gemm_group() tokens (padded), a token's product is the same bits in a chunk of any length at
    any place: the tokens' last 37 alone, the whole 150, or the whole shifted by 5. 8 tokens per call or more
    (BLASes are invariant within a micro-kernel's width)."""
    from mistralcli._ext import qmatmul
    from mistralcli.ops.cpu import gemm_group

    monkeypatch.setenv("MISTRALCLI_BATCH_INVARIANT", "1")
    _, cpu = ops
    assert gemm_group() >= 8
    w = random_weight(qtype, rows=96, cols=512, seed=5)
    x = np.random.default_rng(6).standard_normal((150, 512)).astype(np.float32)
    whole = cpu.matmul(x, w)
    np.testing.assert_array_equal(cpu.matmul(x[-37:], w), whole[-37:])
    np.testing.assert_array_equal(cpu.matmul(x[5:], w), whole[5:])
    np.testing.assert_array_equal(cpu.matmul(x[7:8], w), whole[7:8])
    with pytest.raises(ValueError, match="multiple of the group"):
        raw = np.ascontiguousarray(w.data).view(np.uint8).reshape(w.shape[0], -1)
        qmatmul.matmul_gemm(np.empty((30, 96), np.float32), x[:30], raw, int(qtype), 2, 8)


def test_gemm_path_rejects_bad_input():
    from mistralcli._ext import qmatmul

    w = random_weight(QT.Q4_0, rows=16)
    x = np.zeros((30, w.shape[1]), np.float32)
    with pytest.raises(ValueError, match="shape"):
        qmatmul.matmul_gemm(np.empty((30, 15), np.float32), x, w.data, int(QT.Q4_0), 2)
    with pytest.raises(ValueError, match="no C dequantizer"):
        qmatmul.matmul_gemm(np.empty((30, 16), np.float32), x, w.data, int(QT.Q8_1), 2)


def test_real_tensors_of_smollm2(ops, smollm2_path):
    ref, cpu = ops
    tensors = open_gguf(smollm2_path).tensors
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
        w = tensors[name]
        assert np.array_equal(cpu.dequantize(w, 0, w.shape[0]), quants.dequantize(w.data, w.ggml_type)), name
        x = np.random.default_rng(2).standard_normal((1, w.shape[1])).astype(np.float32)
        expected = ref.matmul(x, w)
        np.testing.assert_allclose(cpu.matmul(x, w), expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_rmsnorm_rope_attention_reference_against_direct_formulas(ops):
    ref, _ = ops
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    expected = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(ref.rmsnorm(x, w, 1e-5), expected, rtol=1e-5)
    # rope by a zero angle is the identity; interleaved and neox rotate different pairs
    q = rng.standard_normal((2, 3, 8)).astype(np.float32)
    zeros = np.zeros((2, 4), np.float32)
    ones = np.ones((2, 4), np.float32)
    assert np.array_equal(ref.rope(q, ones, zeros, True), q)
    rotated = ref.rope(q, zeros, ones, True)  # 90 degrees: (a, b) -> (-b, a)
    np.testing.assert_array_equal(rotated[..., 0], -q[..., 1])
    rotated = ref.rope(q, zeros, ones, False)
    np.testing.assert_array_equal(rotated[..., 0], -q[..., 4])
    # a single key: attention returns its value for every query head
    k = rng.standard_normal((1, 1, 8)).astype(np.float32)
    v = rng.standard_normal((1, 1, 8)).astype(np.float32)
    out = ref.attention(q[:1], k, v, np.array([0]), np.array([0]), 0.3)
    np.testing.assert_allclose(out[0], np.repeat(v[0], 3, axis=0), rtol=1e-6)


def test_embedding_rows_bit_exact(ops, smollm2_path):
    ref, cpu = ops
    w = open_gguf(smollm2_path).tensors["token_embd.weight"]
    ids = np.array([0, 1, 49151, 7, 7])
    assert np.array_equal(cpu.embedding(w, ids), ref.embedding(w, ids))


@pytest.mark.parametrize("interleaved", [True, False])
def test_elementwise_kernels_match_reference(ops, interleaved):
    """RMSNorm (double sum of squares), RoPE and SwiGLU in C: float32 rounding, tolerance 1e-5."""
    ref, cpu = ops
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 96)).astype(np.float32) * 3
    w = rng.standard_normal(96).astype(np.float32)
    np.testing.assert_allclose(cpu.rmsnorm(x, w, 1e-5), ref.rmsnorm(x, w, 1e-5), rtol=1e-5, atol=1e-5)
    q = rng.standard_normal((5, 3, 32)).astype(np.float32)
    angles = rng.uniform(-10, 10, (5, 16))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    np.testing.assert_allclose(
        cpu.rope(q, cos, sin, interleaved), ref.rope(q, cos, sin, interleaved), rtol=0, atol=1e-5
    )
    gate, up = x[:, :48].copy(), x[:, 48:].copy()
    np.testing.assert_allclose(cpu.swiglu(gate, up), ref.swiglu(gate, up), rtol=1e-5, atol=1e-5)


def _attention_levels() -> list:
    from mistralcli._ext import attention

    avx512 = pytest.mark.skipif(attention.SIMD_LEVEL < 3, reason="the grouped kernel needs AVX-512")
    avx2 = pytest.mark.skipif(attention.SIMD_LEVEL < 2, reason="needs AVX2")
    return [0, pytest.param(2, marks=avx2), pytest.param(3, marks=avx512)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("level", _attention_levels())
def test_paged_attention_matches_reference(ops, level, dtype):
    """Queries of two sequences over a paged layer (blocks of 4, scattered), the cache float32 or float16:
    the C kernel (portable, AVX2, AVX-512's grouped heads) against the reference's gather-then-attend, 1e-5;
    the same bits for a query whatever the other queries of the call; and the grouped kernel (3 heads to a
    key/value head) the same bits as the AVX2 kernel head by head."""
    from mistralcli._ext import attention

    ref, _ = ops
    rng = np.random.default_rng(level)
    k = rng.standard_normal((12, 4, 2, 64)).astype(dtype)
    v = rng.standard_normal((12, 4, 2, 64)).astype(dtype)
    tables = np.array([[7, 2, 9, 0, 5], [1, 11, 3, 4, 6]], np.int32)
    q = rng.standard_normal((9, 6, 64)).astype(np.float32)
    seq = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1], np.int32)
    pos = np.array([0, 5, 17, 3, 4, 19, 12, 9, 0], np.int64)
    got = np.empty_like(q)
    attention.paged_attention(got, q, k, v, tables, seq, pos, 0.125, 2, level)
    for t in range(len(q)):
        expected = ref.paged_attention(q[t : t + 1], k, v, tables[seq[t]], pos[t : t + 1], 0.125)
        np.testing.assert_allclose(got[t : t + 1], expected, rtol=0, atol=1e-5)
        alone = np.empty_like(q[t : t + 1])
        attention.paged_attention(alone, q[t : t + 1], k, v, tables, seq[t : t + 1], pos[t : t + 1], 0.125, 1, level)
        assert alone.tobytes() == got[t : t + 1].tobytes()
    if level == 3:
        head_by_head = np.empty_like(q)
        attention.paged_attention(head_by_head, q, k, v, tables, seq, pos, 0.125, 2, 2)
        assert head_by_head.tobytes() == got.tobytes()
    with pytest.raises(ValueError, match="beyond the block table"):
        attention.paged_attention(got[:1], q[:1], k, v, tables, seq[:1], np.array([20]), 0.125)
    with pytest.raises(ValueError, match="different types"):
        other = np.float16 if dtype == np.float32 else np.float32
        attention.paged_attention(got, q, k, v.astype(other), tables, seq, pos, 0.125)
    with pytest.raises(ValueError, match="not float32 or float16"):
        attention.paged_attention(got, q, k.astype(np.float64), v.astype(np.float64), tables, seq, pos, 0.125)


@pytest.mark.parametrize("level", [0, pytest.param(2, marks=_attention_levels()[1].marks)])
def test_fp16_rounding_is_numpys(level):
    """The halves the decode step stores in a float16 cache (F16C, and the portable conversion) are numpy's
    astype(float16) bit for bit, which stores the prompt chunks': every rounding case, ties to even,
    subnormals, overflow to infinity, the signs."""
    from mistralcli._ext import attention

    rng = np.random.default_rng(7)
    magnitudes = np.exp2(rng.uniform(-28, 17, 20000)).astype(np.float32)  # zero, subnormal ... overflow
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = ((halves[:-1].astype(np.float64) + halves[1:]) / 2).astype(np.float32)  # exact midpoints
    x = np.concatenate([magnitudes, halves, ties, np.nextafter(ties, 0), np.nextafter(ties, np.inf)])
    x = np.concatenate([x, -x, np.float32([0, np.inf, -np.inf, 65504, 65519.99, 65520, 2.0**-25, 2.0**-24])])
    got = attention.to_fp16(np.ascontiguousarray(x, np.float32), level)
    with np.errstate(over="ignore"):  # the values past 65520 overflow to infinity, as they should
        expected = x.astype(np.float16)
    assert got.view(np.uint16).tobytes() == expected.view(np.uint16).tobytes()
