"""The K-type and IQ4 quantizers, and Q4_0..Q5_1 with an importance matrix: the Numba kernels
(numba_kernels/cpu/kquants.py) against their NumPy reference (mistralcli/reference/kquants.py), bit for bit, with
and without an importance matrix; the reference against llama.cpp's own quantizer where llama-cpp-python is
installed; and the error of the round trip through gguf's dequantizers."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants
from llama_cpp_peer import ggml, quantize_chunk

from mistralcli.numba_kernels.cpu import kquants
from mistralcli.quantize import quantize
from mistralcli.reference.kquants import quantize_reference

Q = GGMLQuantizationType
TYPES = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_NL, Q.IQ4_XS]
LEGACY = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]  # weighted by an importance matrix: numba_kernels/cpu/legacy_weighted.py
ROWS, COLS = 32, 512


def data_sets():
    """(name, x (ROWS, COLS) float32) of the kinds that steer the searches differently."""
    rng = np.random.default_rng(5)
    yield "gaussian", (rng.standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
    yield "student-t 3", (rng.standard_t(3, (ROWS, COLS)) * 0.01).astype(np.float32)
    x = (rng.standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
    x[[0, 7]] = 0  # whole rows
    x[3, 256:] = 0  # a whole super-block
    x[4, 16:32] = x[5, 64:96] = x[6, 240:256] = 0  # a Q2_K/Q3_K/Q6_K sub-block, a Q4_K/Q5_K/IQ4 one, a last one
    x[8, ::2] = 0  # every other weight
    yield "zeros", x
    x = (rng.standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
    at = rng.integers(0, 32, COLS // 32) + np.arange(0, COLS, 32)  # one per 32 weights: per IQ4_NL block too
    x[:, at] = rng.choice([-1.0, 1.0], (ROWS, at.size)) * rng.uniform(0.5, 5.0, (ROWS, at.size))
    yield "outliers", x
    x = (rng.standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
    x[0] = 0.01
    x[1, :256] = -0.03
    x[2, 32:64] = 0.5
    x[3, 256:272] = 1e-3
    yield "constant blocks", x
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x *= np.float32(10.0) ** rng.integers(-40, -12, (ROWS, 1)).astype(np.float32)  # about GROUP_MAX_EPS, denormal
    yield "tiny", x


def extremes():
    """Weights whose float16 scales overflow (infinite, or NaN where sums of squares do)."""
    rng = np.random.default_rng(6)
    yield "1e6", (rng.standard_normal((4, COLS)) * 1e6).astype(np.float32)
    yield "1e30", (rng.standard_normal((4, COLS)) * 1e30).astype(np.float32)


def importance(rng: np.random.Generator, n: int = COLS) -> np.ndarray:
    """An importance vector as imatrix files hold them: positive, log-normally spread, a few exact zeros."""
    imatrix = np.exp(rng.standard_normal(n) * 2).astype(np.float32)
    imatrix[rng.integers(0, n, 4)] = 0
    return imatrix


def numba_quantize(x: np.ndarray, qtype, imatrix: np.ndarray | None) -> np.ndarray:
    block, size = GGML_QUANT_SIZES[qtype]
    blocks = np.ascontiguousarray(x.reshape(-1, block))
    qw = np.zeros((1, block), np.float32) if imatrix is None else np.ascontiguousarray(imatrix.reshape(-1, block))
    out = np.zeros((blocks.shape[0], size), np.uint8)
    getattr(kquants, qtype.name.lower())(blocks, qw, imatrix is not None, out)
    return out.reshape(x.shape[0], -1)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_numba_kernels_match_the_reference(qtype, weighted):
    imatrix = importance(np.random.default_rng(11)) if weighted else None
    for name, x in [*data_sets(), *extremes()]:
        expected = quantize_reference(x, qtype, imatrix)
        assert expected.shape[1] == COLS // GGML_QUANT_SIZES[qtype][0] * GGML_QUANT_SIZES[qtype][1]
        np.testing.assert_array_equal(numba_quantize(x, qtype, imatrix), expected, err_msg=f"{qtype.name}: {name}")


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_reference_matches_llama_cpp(qtype, weighted):
    lib = ggml()
    imatrix = importance(np.random.default_rng(12)) if weighted else None
    for name, x in data_sets():
        expected = quantize_chunk(lib, qtype, x, imatrix)
        np.testing.assert_array_equal(quantize_reference(x, qtype, imatrix), expected, err_msg=f"{qtype.name}: {name}")


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_reference_matches_llama_cpp_past_float16(qtype, weighted):
    lib = ggml()
    imatrix = importance(np.random.default_rng(13)) if weighted else None
    for name, x in extremes():
        expected = quantize_chunk(lib, qtype, x, imatrix)
        np.testing.assert_array_equal(quantize_reference(x, qtype, imatrix), expected, err_msg=f"{qtype.name}: {name}")
        np.testing.assert_array_equal(numba_quantize(x, qtype, imatrix), expected, err_msg=f"{qtype.name}: {name}")


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_weighted_legacy_kernel_matches_the_reference(qtype):
    imatrix = importance(np.random.default_rng(14))
    for name, x in [*data_sets(), *extremes()]:
        expected = quantize_reference(x, qtype, imatrix)
        assert expected.shape[1] == COLS // 32 * GGML_QUANT_SIZES[qtype][1]
        np.testing.assert_array_equal(quantize(x, qtype, imatrix), expected, err_msg=f"{qtype.name}: {name}")


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_legacy_reference_matches_llama_cpp(qtype, weighted):
    # without an importance matrix the reference is gguf.quants's, and that is llama.cpp's too
    lib = ggml()
    imatrix = importance(np.random.default_rng(15)) if weighted else None
    for name, x in [*data_sets(), *extremes()]:
        expected = quantize_chunk(lib, qtype, x, imatrix)
        with np.errstate(all="ignore"):  # gguf.quants on the extremes
            got = quantize_reference(x, qtype, imatrix)
        np.testing.assert_array_equal(got, expected, err_msg=f"{qtype.name}: {name}")


# Relative RMSE of the round trip on Gaussian weights, measured over seeds at 0.295 (Q2_K), 0.152 (Q3_K), 0.072
# (Q4_K), 0.036 (Q5_K), 0.0178 (Q6_K) and 0.077 (IQ4_NL, IQ4_XS); bounded here about 10% above. From Q3_K up
# each extra bit halves the error, as a uniform quantizer's step does; Q2_K, with its 4 levels fitted to each
# sub-block's range, loses more; the IQ4 types, 4.5 and 4.25 bits a weight on a non-uniform grid with one scale
# a 32-weight block (and no minimum), land next to Q4_K's 4.5 bits.
RMSE_BOUND = {Q.Q2_K: 0.33, Q.Q3_K: 0.17, Q.Q4_K: 0.08, Q.Q5_K: 0.04, Q.Q6_K: 0.02, Q.IQ4_NL: 0.085, Q.IQ4_XS: 0.085}


def round_trip(x: np.ndarray, qtype, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quants.dequantize(quantize_reference(x, qtype, imatrix), qtype).reshape(x.shape)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_round_trip_error_is_the_types(qtype):
    x = (np.random.default_rng(3).standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
    back = round_trip(x, qtype)
    assert np.sqrt(np.mean((back - x) ** 2) / np.mean(x**2)) < RMSE_BOUND[qtype]


@pytest.mark.parametrize("qtype", TYPES + LEGACY, ids=lambda t: t.name)
def test_an_imatrix_lowers_the_error_it_weighs(qtype):
    # with a log-normal importance (sigma 2) the weighted squared error measured 0.2-0.6 of the plain one's
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
    imatrix = np.exp(rng.standard_normal(COLS) * 2).astype(np.float32)
    plain = np.sum(imatrix * (round_trip(x, qtype) - x) ** 2)
    weighted = np.sum(imatrix * (round_trip(x, qtype, imatrix) - x) ** 2)
    assert weighted < 0.8 * plain


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q5_K, Q.Q6_K], ids=lambda t: t.name)
def test_avx2_kernels_match_the_reference(qtype, weighted):
    """The AVX2 kernels (_ext/kernels/kquant.h, what quantize() runs for these types on such a CPU)."""
    from mistralcli._ext import quantizers

    if not quantizers.K_AVAILABLE:
        pytest.skip("no AVX2 on this CPU (the Numba kernels above quantize there)")
    imatrix = importance(np.random.default_rng(14)) if weighted else None
    size = GGML_QUANT_SIZES[qtype][1]
    for name, x in [*data_sets(), *extremes()]:
        blocks = np.ascontiguousarray(x.reshape(-1, 256))
        qw = np.zeros((1, 256), np.float32) if imatrix is None else np.ascontiguousarray(imatrix.reshape(-1, 256))
        out = np.zeros((blocks.shape[0], size), np.uint8)
        quantizers.k_blocks(blocks, qw, weighted, int(qtype), out, 2)
        expected = quantize_reference(x, qtype, imatrix)
        np.testing.assert_array_equal(out.reshape(x.shape[0], -1), expected, err_msg=f"{qtype.name}: {name}")


def test_without_avx2_the_numba_kernels_give_the_same_bytes(tmp_path):
    """MISTRALCLI_NO_SIMD=1 (as on a CPU without AVX2): quantize() runs the Numba kernels, the same bytes."""
    import os
    import subprocess
    import sys

    from mistralcli.quantize import quantize

    x = (np.random.default_rng(8).standard_normal((8, 512)) * 0.02).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from gguf import GGMLQuantizationType as Q\n"
        "from mistralcli._ext import quantizers\n"
        "from mistralcli.quantize import quantize\n"
        "assert not quantizers.K_AVAILABLE\n"
        "x = np.load(sys.argv[1])\n"
        "np.savez(sys.argv[2], **{t.name: quantize(x, t) for t in (Q.Q4_K, Q.Q5_K, Q.Q6_K)})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "x.npy", tmp_path / "out.npz"],
        env={**os.environ, "MISTRALCLI_NO_SIMD": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    numba = np.load(tmp_path / "out.npz")
    for qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        assert np.array_equal(numba[qtype.name], quantize(x, qtype)), qtype.name
