"""llama.cpp's own quantizer (ggml_quantize_chunk in the libggml-base that llama-cpp-python ships), called
through ctypes: the peer the K and IQ quantizers are measured against. Tests that use it skip where
llama-cpp-python is not installed."""

import ctypes
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES


def ggml():
    llama_cpp = pytest.importorskip("llama_cpp")
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def quantize_chunk(lib, qtype, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """x (rows, n) float32 quantized by llama.cpp to (rows, row bytes) uint8, with an importance matrix (n,)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    block, size = GGML_QUANT_SIZES[qtype]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    qw = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None if qw is None else qw.ctypes.data)
    return out
