"""Our legacy quantizers (mistralcli.quantize: the C of _ext/kernels/legacy_quant.h) against their reference, the
gguf package's NumPy quantizers: the same bytes, bit for bit, on every legacy type, over weights of many shapes and
scales and the blocks where rounding is decided (all zeros, ties of magnitude, rounding boundaries, denormals, huge)."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from mistralcli.errors import MistralError
from mistralcli.quantize import quantize

Q = GGMLQuantizationType
TYPES = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.BF16, Q.F16, Q.F32]


def hard_blocks() -> np.ndarray:
    """Blocks that decide the rounding: each row is one 32-value block."""
    rows = [
        np.zeros(32),
        np.full(32, 1.0),
        np.full(32, -1.0),
        np.r_[3.0, -3.0, np.zeros(30)],  # a tie of magnitude: the first decides the sign of the scale
        np.r_[-3.0, 3.0, np.linspace(-2, 2, 30)],
        np.linspace(-1, 1, 32),
        np.arange(32) - 15.5,  # Q8_0: many values on .5 once scaled
        (np.arange(32) - 16) / 16 * 127 / 127,
        np.r_[1e-40, -1e-41, np.zeros(30)],  # denormals
        np.r_[3e38, -1e38, np.ones(30)],  # near the float32 limit (float16 scales overflow, as in gguf)
        np.r_[65504.0 * 8, np.ones(31)],
        np.full(32, 1e-8),
    ]
    return np.array(rows, dtype=np.float32)


def weights():
    rng = np.random.default_rng(7)
    yield "normal", (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    yield "heavy tails", (rng.standard_t(2, (33, 128))).astype(np.float32)
    yield "uniform positive", rng.uniform(0, 5, (16, 64)).astype(np.float32)
    yield "3-d", rng.standard_normal((2, 3, 96)).astype(np.float32)
    yield "hard blocks", hard_blocks()


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_bit_exact_with_gguf(qtype):
    for name, x in weights():
        with np.errstate(all="ignore"):  # a scale past float16's range is inf in both, as in ggml
            expected = quants.quantize(x, qtype)
            ours = quantize(x, qtype)
        assert ours.shape == expected.shape and ours.dtype == expected.dtype, name
        assert np.array_equal(ours.view(np.uint8), expected.view(np.uint8)), f"{qtype.name}: {name}"


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q8_0, Q.Q5_1], ids=lambda t: t.name)
def test_round_trip_error_is_the_types(qtype):
    # dequantized back by gguf, the error is what the bits allow: half a step of the block's scale at most
    x = (np.random.default_rng(1).standard_normal((8, 512)) * 0.1).astype(np.float32)
    back = quants.dequantize(quantize(x, qtype), qtype).reshape(x.shape)
    blocks = x.reshape(-1, 32)
    levels = {Q.Q4_0: 16, Q.Q8_0: 255, Q.Q5_1: 32}[qtype]
    step = (blocks.max(axis=1) - blocks.min(axis=1)) / (levels - 1)
    error = np.abs(back.reshape(-1, 32) - blocks).max(axis=1)
    assert np.all(error <= step * 1.01 + 1e-6)


def test_a_row_that_does_not_divide_into_blocks_is_refused():
    with pytest.raises(MistralError, match="rows of a multiple of 32 values, not shape"):
        quantize(np.zeros((2, 40), np.float32), Q.Q8_0)
    with pytest.raises(MistralError, match="no quantizer here for IQ2_XXS"):
        quantize(np.zeros((1, 256), np.float32), Q.IQ2_XXS)
    assert GGML_QUANT_SIZES[Q.Q8_0] == (32, 34)
