"""C dequantization is bit-exact with the `gguf` package's reference: random blocks of every type
it handles (scales drawn as finite fp16 values) and every tensor of each test model."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT
from gguf import quants

from mistralcli._ext import qmatmul
from mistralcli.loading.gguf_file import open_gguf
from quant_blocks import random_blocks  # noqa: E402

TYPES = [QT(t) for t in qmatmul.DEQUANT_TYPES]
def c_dequantize(data, qtype, cols, threads=2):
    out = np.empty((data.shape[0], cols), np.float32)
    qmatmul.dequantize(out, data, int(qtype), 0, threads)
    return out


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_random_blocks_bit_exact(qtype):
    block_weights = GGML_QUANT_SIZES[qtype][0]
    data = random_blocks(qtype, rows=37, blocks_per_row=3, seed=int(qtype))
    expected = quants.dequantize(data, qtype)
    got = c_dequantize(data, qtype, 3 * block_weights)
    assert got.tobytes() == expected.astype(np.float32).tobytes()


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
        expected = quants.dequantize(rows, tensor.ggml_type)
        assert c_dequantize(np.ascontiguousarray(rows), tensor.ggml_type, tensor.shape[-1]).tobytes() == expected.tobytes(), tensor.name
        checked += 1
    assert checked > 0
