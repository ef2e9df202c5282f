"""The C decode step (whole model in one call) and the C block products against the NumPy
reference, on the SIMD path this CPU has and on the portable path (MISTRALCLI_NO_SIMD's)."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, quants
from gguf import GGMLQuantizationType as QT
from paged import OneSequence

from mistralcli._ext import qmatmul
from mistralcli.ops import get_ops
from mistralcli.ops.cpu import decode_step
from mistralcli.quant_tensor import QuantTensor

MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

# portable, AVX2 and the best this CPU has (AVX-512 VNNI where present)
LEVELS = sorted({0, qmatmul.SIMD_LEVEL} | ({2} if qmatmul.SIMD_LEVEL >= 2 else set()))


@pytest.mark.parametrize("qtype", [QT(t) for t in qmatmul.SUPPORTED_TYPES], ids=lambda t: t.name)
@pytest.mark.parametrize("level", LEVELS)
def test_block_products_match_reference(qtype, level):
    """int16 activations: within 1e-4 of the output scale (float32 weights times float32 x)."""
    from quant_blocks import random_blocks

    rng = np.random.default_rng(int(qtype))
    blocks = 17 if GGML_QUANT_SIZES[qtype][0] == 32 else 3  # odd: the kernels that take blocks in pairs end on one
    k = blocks * GGML_QUANT_SIZES[qtype][0]
    w = random_blocks(qtype, rows=70, blocks_per_row=blocks, seed=int(qtype))
    x = (rng.standard_normal((3, k)) * rng.uniform(0.1, 10, (3, 1))).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block quantizes to zeros with scale 0
    expected = x @ quants.dequantize(w, qtype).T
    out = np.empty((3, 70), np.float32)
    qmatmul.matmul(out, x, w, int(qtype), 2, level)  # 3 tokens: the many-token kernels
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    for t in range(3):  # one token: the decode dot products
        one = np.empty((1, 70), np.float32)
        qmatmul.matmul(one, x[t : t + 1], w, int(qtype), 2, level)
        np.testing.assert_allclose(one, expected[t : t + 1], rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("qtype", [QT(t) for t in qmatmul.SUPPORTED_TYPES], ids=lambda t: t.name)
@pytest.mark.parametrize("level", LEVELS)
def test_block_products_are_batch_invariant(qtype, level):
    """A token's result is the same bits alone, in a tile, or in a tile's remainder: the engine's
    batched decode then gives each request what it would get alone."""
    from quant_blocks import random_blocks

    blocks = 17 if GGML_QUANT_SIZES[qtype][0] == 32 else 3
    k = blocks * GGML_QUANT_SIZES[qtype][0]
    w = random_blocks(qtype, rows=40, blocks_per_row=blocks, seed=3)
    x = np.random.default_rng(8).standard_normal((13, k)).astype(np.float32)
    every = np.empty((13, 40), np.float32)
    qmatmul.matmul(every, x, w, int(qtype), 2, level)
    for start, stop in [(0, 1), (12, 13), (3, 8), (1, 10), (4, 13)]:
        part = np.empty((stop - start, 40), np.float32)
        qmatmul.matmul(part, x[start:stop], w, int(qtype), 1, level)
        assert part.tobytes() == every[start:stop].tobytes(), (start, stop)


@pytest.mark.parametrize("qtype", [QT.Q5_0, QT.Q6_K], ids=lambda t: t.name)
def test_rows_too_long_to_unpack_once_go_token_by_token(qtype):
    """Past 1024 groups of 32 (32768 columns) the many-token kernels of these formats fall back to the
    one-token product: still the same bits, still right."""
    from quant_blocks import random_blocks

    per_block = GGML_QUANT_SIZES[qtype][0]
    blocks = 33024 // per_block
    w = random_blocks(qtype, rows=8, blocks_per_row=blocks, seed=5)
    x = np.random.default_rng(9).standard_normal((5, blocks * per_block)).astype(np.float32)
    every = np.empty((5, 8), np.float32)
    qmatmul.matmul(every, x, w, int(qtype), 2)
    expected = x @ quants.dequantize(w, qtype).T
    np.testing.assert_allclose(every, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    for t in range(5):
        one = np.empty((1, 8), np.float32)
        qmatmul.matmul(one, x[t : t + 1], w, int(qtype), 1)
        assert one.tobytes() == every[t : t + 1].tobytes()


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.BF16], ids=lambda t: t.name)
@pytest.mark.parametrize("level", LEVELS)
def test_float_weight_products(qtype, level):
    """Float weights multiply float activations: within float32 rounding (1e-5 of the scale)."""
    rng = np.random.default_rng(5)
    dense = rng.standard_normal((33, 200)).astype(np.float32)
    raw = {QT.F32: dense, QT.F16: dense.astype(np.float16), QT.BF16: (dense.view(np.uint32) >> 16).astype(np.uint16)}[
        qtype
    ]
    weights = QuantTensor("w", qtype, dense.shape, raw).dequantize()
    x = rng.standard_normal((2, 200)).astype(np.float32)
    out = np.empty((2, 33), np.float32)
    qmatmul.matmul_float(out, x, np.ascontiguousarray(raw).view(np.uint8), int(qtype), 2, level)
    expected = x @ weights.T
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_portable_and_simd_paths_agree():
    w = quants.quantize(np.random.default_rng(0).standard_normal((64, 576)).astype(np.float32), QT.Q4_1)
    x = np.random.default_rng(1).standard_normal((1, 576)).astype(np.float32)
    outs = []
    for level in LEVELS:
        out = np.empty((1, 64), np.float32)
        qmatmul.matmul(out, x, w, int(QT.Q4_1), 1, level)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[-1], rtol=1e-5, atol=1e-5)


def test_quantize_x16_round_trip():
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32) * 50
    xq, scale, total = qmatmul.quantize_x16(x)
    restored = xq.reshape(2, 2, 32) * scale[:, :, None]
    np.testing.assert_allclose(restored.reshape(2, 64), x, rtol=0, atol=np.abs(x).max() / 32767)
    np.testing.assert_allclose(total, x.reshape(2, 2, 32).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("level", LEVELS)
def test_fused_step_matches_reference_forward(smollm2, level):
    """30 layers of SmolLM2: logits within 0.05 of the float reference, same greedy tokens.

    Prefill and decode both multiply with int16 activations; over 30 layers that moves logits by up
    to ~0.03 (llama.cpp's int8 activations move them by ~1.5). The bar users see is the top tokens
    within 0.1 of transformers (test_smollm2_parity)."""
    model = smollm2.model
    a = model.args
    reference = type(model)(a, model.weights, get_ops("reference"))
    ids = np.array(smollm2.tokenizer.encode("The capital of France is"))
    ref_cache = OneSequence(reference)
    our_cache = OneSequence(model, block_size=8)
    our_cache.runner.decode_step = decode_step(model, 2, level)  # this SIMD level for the decode steps below
    ref_cache.forward(ids[:-1], np.arange(len(ids) - 1))
    our_cache.forward(ids[:-1], np.arange(len(ids) - 1))
    token = int(ids[-1])
    for pos in range(len(ids) - 1, len(ids) + 6):
        expected = ref_cache.forward(np.array([token]), np.array([pos]))[0]
        got = our_cache.forward(np.array([token]), np.array([pos]))[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=0.05)
        assert int(np.argmax(got)) == int(np.argmax(expected))
        token = int(np.argmax(expected))
    assert ref_cache.runner.decode_step is None
    assert our_cache.num_tokens == ref_cache.num_tokens == len(ids) + 6


def test_unsupported_weight_types_fall_back(smollm2):
    model = smollm2.model
    layers = [dict(layer) for layer in model.layers]
    from test_dequant import random_blocks

    q = layers[0]["attn_q"]
    iq4 = random_blocks(QT.IQ4_NL, rows=q.shape[0], blocks_per_row=q.shape[1] // 32, seed=0)
    layers[0]["attn_q"] = QuantTensor(q.name, QT.IQ4_NL, q.shape, iq4)  # dequantized in C, no product
    with pytest.raises(ValueError, match="IQ4_NL"):
        decode_step(model, 1, layers=layers)


def _bf16(w: QuantTensor) -> QuantTensor:
    """w's values as BF16 (float32 bits truncated), rows of raw bits."""
    return QuantTensor(w.name, QT.BF16, w.shape, (w.dequantize().view(np.uint32) >> 16).astype(np.uint16))


@pytest.mark.parametrize("weights", ["rows", "tiles", "bf16", "bf16-tiles", "rows-kv16", "tiles-kv16"])
def test_batched_paged_decode_is_the_same_bits_as_alone(smollm2, weights):
    """Four sequences of different lengths in a paged cache (blocks of 4, scattered over the pool):
    decoded together in lockstep, every step's logits and every cached key equal decoding each alone;
    batched, the products run on the repacked weights (kernels/qtiles.h) where the CPU has them (tiles),
    or with BF16 matrices through the many-token float kernels (bf16) or their tiles (ftiles.h); -kv16:
    the cache holds float16 (EngineConfig's kv_cache_dtype "f16")."""
    kv_dtype = np.float16 if weights.endswith("-kv16") else np.float32
    weights = weights.removesuffix("-kv16")
    model = smollm2.model
    a = model.args
    layers = None
    if weights == "tiles" and not qmatmul.has_tile_kernels(int(model.output.ggml_type)):
        pytest.skip("no tile kernels on this CPU")
    if weights == "bf16-tiles" and not qmatmul.has_float_tile_kernels(int(QT.BF16)):
        pytest.skip("no float tile kernels on this CPU")
    if weights.startswith("bf16"):
        layers = [{name: _bf16(v) if name in MATRICES else v for name, v in layer.items()} for layer in model.layers]
    tiles = get_ops("cpu", threads=2).tiles if weights.endswith("tiles") else None
    step = decode_step(model, 2, layers=layers, tiles=tiles)
    rng = np.random.default_rng(0)
    lengths = [3, 7, 12, 20]
    prompts = [rng.integers(100, 40000, n) for n in lengths]
    block_size, num_blocks = 4, 24
    tables = rng.permutation(num_blocks)[:20].astype(np.int32).reshape(4, 5)
    shape = (a.num_hidden_layers, num_blocks, block_size, a.num_key_value_heads, a.head_dim)
    vocab = model.output.shape[0]

    def fresh():
        return np.zeros(shape, kv_dtype), np.zeros(shape, kv_dtype)

    alone_k, alone_v = fresh()
    alone = {}
    for s, prompt in enumerate(prompts):
        for p, token in enumerate(prompt):
            logits = np.empty((1, vocab), np.float32)
            step.decode(np.array([token]), np.array([p]), tables[s : s + 1], alone_k, alone_v, logits)
            alone[s, p] = logits[0]
    batch_k, batch_v = fresh()
    for p in range(max(lengths)):
        seqs = [s for s in range(4) if p < lengths[s]]
        logits = np.empty((len(seqs), vocab), np.float32)
        step.decode(
            np.array([prompts[s][p] for s in seqs]),
            np.full(len(seqs), p),
            np.ascontiguousarray(tables[seqs]),
            batch_k,
            batch_v,
            logits,
        )
        for i, s in enumerate(seqs):
            assert logits[i].tobytes() == alone[s, p].tobytes(), (s, p)
    assert batch_k.tobytes() == alone_k.tobytes() and batch_v.tobytes() == alone_v.tobytes()


def test_decode_rejects_what_does_not_fit(smollm2):
    model = smollm2.model
    a = model.args
    step = decode_step(model, 1)
    shape = (a.num_hidden_layers, 2, 4, a.num_key_value_heads, a.head_dim)
    k, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    logits = np.empty((1, model.output.shape[0]), np.float32)
    with pytest.raises(ValueError, match="beyond the block table"):
        step.decode(np.array([1]), np.array([8]), np.zeros((1, 2), np.int32), k, v, logits)
    with pytest.raises(ValueError, match="not in the cache"):
        step.decode(np.array([1]), np.array([5]), np.array([[0, 2]], np.int32), k, v, logits)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        step.decode(np.array([10**6]), np.array([0]), np.zeros((1, 2), np.int32), k, v, logits)


ROW_TYPES = [QT.Q4_0, QT.Q4_1, QT.Q8_0]


@pytest.mark.parametrize("qtype", ROW_TYPES, ids=lambda t: t.name)
def test_row_kernels_equal_their_portable_statement(qtype):
    """kernels/qrows.h (AVX-512): one token with rows in lanes, many with tokens in lanes; both are
    the portable statement's arithmetic bit for bit, for any token count (lanes groups, remainders),
    odd block counts and rows beyond the last 16."""
    if not qmatmul.has_row_kernels(int(qtype)):
        pytest.skip("no AVX-512 VNNI on this CPU")
    from quant_blocks import random_blocks

    rng = np.random.default_rng(int(qtype) + 11)
    for blocks, rows in [(17, 53), (18, 32), (3, 16)]:
        k = 32 * blocks
        w = random_blocks(qtype, rows=rows, blocks_per_row=blocks, seed=blocks)
        x = (rng.standard_normal((40, k)) * rng.uniform(0.1, 10, (40, 1))).astype(np.float32)
        expected = np.empty((40, rows), np.float32)
        qmatmul.matmul_rows_reference(expected, x, w, int(qtype))
        dense = x.astype(np.float64) @ quants.dequantize(w, qtype).T.astype(np.float64)
        np.testing.assert_allclose(expected, dense, rtol=0, atol=1e-4 * np.abs(dense).max())
        for num_tokens in [1, 2, 5, 6, 16, 17, 23, 40]:
            out = np.empty((num_tokens, rows), np.float32)
            qmatmul.matmul(out, x[:num_tokens], w, int(qtype), 2)
            assert out.tobytes() == expected[:num_tokens].tobytes(), (blocks, rows, num_tokens)


@pytest.mark.parametrize("qtype", ROW_TYPES, ids=lambda t: t.name)
def test_tile_kernels_equal_the_row_kernels_bit_for_bit(qtype):
    """kernels/qtiles.h: weights repacked into the tile layout (the same bytes, rows padded to 16) give every
    (row, token) the bits of the row kernels' portable statement, for any token count (tiles of 16, 8, 4, 2, 1),
    rows beyond the last 16 and one-block rows; the portable tile statement too, on any CPU."""
    from quant_blocks import random_blocks

    rng = np.random.default_rng(int(qtype) + 5)
    for blocks, rows in [(17, 53), (18, 32), (1, 16), (2, 7)]:
        k = 32 * blocks
        w = random_blocks(qtype, rows=rows, blocks_per_row=blocks, seed=blocks + 100)
        tiles = qmatmul.tiles_pack(w, int(qtype), k)
        assert tiles.nbytes == -(-rows // 16) * 16 * w.shape[1]
        x = (rng.standard_normal((41, k)) * rng.uniform(0.1, 10, (41, 1))).astype(np.float32)
        expected = np.empty((41, rows), np.float32)
        qmatmul.matmul_rows_reference(expected, x, w, int(qtype))
        for num_tokens in [1, 2, 3, 7, 16, 31, 41]:
            out = np.full((num_tokens, rows), np.nan, np.float32)
            qmatmul.matmul_tiles(out, x[:num_tokens], tiles, int(qtype), 1, reference=True)
            assert out.tobytes() == expected[:num_tokens].tobytes(), ("reference", blocks, rows, num_tokens)
            if qmatmul.has_tile_kernels(int(qtype)):
                out[:] = np.nan
                qmatmul.matmul_tiles(out, x[:num_tokens], tiles, int(qtype), 2)
                assert out.tobytes() == expected[:num_tokens].tobytes(), (blocks, rows, num_tokens)


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.BF16], ids=lambda t: t.name)
def test_float_tile_kernels_equal_their_portable_statement(qtype):
    """kernels/ftiles.h: float rows repacked (the same bytes, rows padded to 16) give every (row, token) the bits
    of the portable statement (one fused multiply-add a feature, in order), for any token count and rows beyond
    the last 16; and the products are those of the float rows."""
    rng = np.random.default_rng(int(qtype) + 3)
    rows, k = 37, 96
    values = rng.standard_normal((rows, k)).astype(np.float32)
    if qtype == QT.F16:
        raw, dense = values.astype(np.float16).view(np.uint8), values.astype(np.float16).astype(np.float64)
    elif qtype == QT.BF16:
        bits = (values.view(np.uint32) >> 16).astype(np.uint16)
        raw, dense = bits.view(np.uint8), (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    else:
        raw, dense = values.view(np.uint8), values.astype(np.float64)
    tiles = qmatmul.ftiles_pack(np.ascontiguousarray(raw.reshape(rows, -1)), int(qtype), k)
    assert tiles.nbytes == 48 * raw.reshape(rows, -1).shape[1]
    x = rng.standard_normal((35, k)).astype(np.float32)
    expected = np.empty((35, rows), np.float32)
    qmatmul.matmul_ftiles(expected, x, tiles, int(qtype), reference=True)
    np.testing.assert_allclose(expected, x.astype(np.float64) @ dense.T, rtol=0, atol=1e-4)
    if not qmatmul.has_float_tile_kernels(int(qtype)):
        pytest.skip("no float tile kernels on this CPU")
    for num_tokens in [1, 2, 3, 16, 19, 35]:
        out = np.full((num_tokens, rows), np.nan, np.float32)
        qmatmul.matmul_ftiles(out, x[:num_tokens], tiles, int(qtype), 2)
        assert out.tobytes() == expected[:num_tokens].tobytes(), num_tokens


def test_tile_layout_refuses_what_it_cannot_hold():
    from quant_blocks import random_blocks

    w = random_blocks(QT.Q4_1, rows=4, blocks_per_row=2, seed=1)
    with pytest.raises(ValueError, match="no tile layout"):
        qmatmul.tiles_pack(w, int(QT.Q4_K), 64)
    with pytest.raises(ValueError, match="row bytes"):
        qmatmul.tiles_pack(w, int(QT.Q4_1), 96)
    tiles = qmatmul.tiles_pack(w, int(QT.Q4_1), 64)
    with pytest.raises(ValueError, match="shape"):
        qmatmul.matmul_tiles(np.empty((1, 17), np.float32), np.ones((1, 64), np.float32), tiles, int(QT.Q4_1))
    assert not qmatmul.has_tile_kernels(int(QT.Q4_1), simd_level=2)  # AVX2 alone: the row/GEMM paths


def test_repacked_weights_are_counted_and_can_be_turned_off(smollm2, monkeypatch):
    """CpuOps.tiles repacks a weight once and counts the bytes; MISTRALCLI_REPACK=0 keeps the weights as loaded."""
    ops = get_ops("cpu", threads=2)
    w = smollm2.model.layers[0]["attn_q"]
    if not qmatmul.has_tile_kernels(int(w.ggml_type)):
        pytest.skip("no tile kernels on this CPU")
    first = ops.tiles(w)
    assert first is ops.tiles(w) and ops.repacked_bytes == first.nbytes == w.data.nbytes
    x = np.random.default_rng(0).standard_normal((9, w.shape[1])).astype(np.float32)
    tiled = ops.matmul(x, w)
    short_lived = QuantTensor(w.name, w.ggml_type, w.shape, np.array(w.data))
    ops.tiles(short_lived)
    assert ops.repacked_bytes == 2 * first.nbytes
    del short_lived  # its repacked rows go with it
    assert ops.repacked_bytes == first.nbytes
    monkeypatch.setenv("MISTRALCLI_REPACK", "0")
    plain = get_ops("cpu", threads=2)
    assert plain.tiles(w) is None and plain.repacked_bytes == 0
    assert plain.matmul(x, w).tobytes() == tiled.tobytes()


def test_vector_quantization_equals_the_portable_loop():
    """The int16 activation blocks (values, scales and sums) are the same bits on every CPU."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((9, 576)) * rng.uniform(1e-3, 1e3, (9, 1))).astype(np.float32)
    x[2, :32] = 0.0
    x[3, 32:64] = -7.25
    fast, portable = qmatmul.quantize_x16(x), qmatmul.quantize_x16(x, portable=True)
    for a, b in zip(fast, portable, strict=True):
        assert a.tobytes() == b.tobytes()
