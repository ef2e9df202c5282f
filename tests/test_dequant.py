"""C dequantization is bit-exact with the `gguf` package's reference: random blocks of every type
it handles (scales drawn as finite fp16 values) and every tensor of each test model. Q8_K, which gguf
leaves out, against our NumPy reference (quant_tensor.dequantize_q8_k), itself checked here."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, quants
from gguf import GGMLQuantizationType as QT
from quant_blocks import random_blocks

from mistralcli._ext import qmatmul
from mistralcli.loading.gguf_file import open_gguf
from mistralcli.quant_tensor import dequantize_blocks

TYPES = [QT(t) for t in qmatmul.DEQUANT_TYPES]


def c_dequantize(data, qtype, cols, threads=2):
    out = np.empty((data.shape[0], cols), np.float32)
    qmatmul.dequantize(out, data, int(qtype), 0, threads)
    return out


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_random_blocks_bit_exact(qtype):
    block_weights = GGML_QUANT_SIZES[qtype][0]
    data = random_blocks(qtype, rows=37, blocks_per_row=3, seed=int(qtype))
    expected = dequantize_blocks(data, qtype)
    got = c_dequantize(data, qtype, 3 * block_weights)
    assert got.tobytes() == expected.astype(np.float32).tobytes()


def test_q8_k_reference_follows_the_block_layout():
    """| d float32 | qs[256] int8 | bsums[16] int16 |: w = d * qs, bsums ignored."""
    rng = np.random.default_rng(0)
    d = np.array([0.5, -0.03125], np.float32)
    qs = rng.integers(-128, 128, (2, 256)).astype(np.int8)
    bsums = qs.reshape(2, 16, 16).sum(-1).astype(np.int16)
    data = np.concatenate(
        [d.view(np.uint8).reshape(2, 4), qs.view(np.uint8), bsums.view(np.uint8).reshape(2, 32)], axis=1
    )
    assert data.shape == (2, GGML_QUANT_SIZES[QT.Q8_K][1])
    np.testing.assert_array_equal(dequantize_blocks(data, QT.Q8_K), d[:, None] * qs.astype(np.float32))
    np.testing.assert_array_equal(dequantize_blocks(data.reshape(1, -1), QT.Q8_K), (d[:, None] * qs).reshape(1, -1))


def test_fp16_specials_and_subnormals():
    """Scales that are subnormal, zero, negative zero or the largest half convert exactly."""
    specials = np.array([0.0, -0.0, 6e-8, -3e-5, 65504.0, 1.0], dtype=np.float16)
    data = random_blocks(QT.Q8_0, rows=len(specials), blocks_per_row=1, seed=1)
    data[:, :2] = specials.view(np.uint8).reshape(-1, 2)
    assert c_dequantize(data, QT.Q8_0, 32).tobytes() == quants.dequantize(data, QT.Q8_0).tobytes()


@pytest.mark.parametrize("model_id", ["smollm2", "qwen2.5-coder", "gemma3"])
def test_every_tensor_of_the_test_models(model_id):
    from conftest import model_path

    gguf = open_gguf(model_path(model_id))
    checked = 0
    for tensor in gguf.tensors.values():
        if tensor.ggml_type not in TYPES:
            continue
        rows = tensor.data.reshape(-1, tensor.data.shape[-1])[:4096]  # the first rows of big matrices
        expected = dequantize_blocks(rows, tensor.ggml_type)
        assert (
            c_dequantize(np.ascontiguousarray(rows), tensor.ggml_type, tensor.shape[-1]).tobytes() == expected.tobytes()
        ), tensor.name
        checked += 1
    assert checked > 0
