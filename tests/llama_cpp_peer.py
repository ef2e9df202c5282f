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
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    return lib


def quantize_chunk(lib, qtype, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """x (rows, n) float32 quantized by llama.cpp to (rows, row bytes) uint8, with an importance matrix (n,)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    block, size = GGML_QUANT_SIZES[qtype]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    qw = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_chunk(
        int(qtype), x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None if qw is None else qw.ctypes.data
    )
    return out


LLAMA_FILE_TYPES = {
    "Q4_0": 2,
    "Q8_0": 7,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "IQ4_NL": 25,
    "IQ4_XS": 30,
}


def llama_quantize(source, out, mix: str, threads: int = 2) -> None:
    """llama.cpp's llama_model_quantize (what llama-quantize runs) of source to out, as mix."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FILE_TYPES[mix]
    params.nthread = threads
    params.allow_requantize = True
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    assert code == 0, f"llama_model_quantize failed ({code})"


_CHAT = """
import sys
import llama_cpp.llama_cpp as C
default = C.llama_model_default_params
def no_repack():  # its AMX weight repack crashes on some Intel CPUs
    p = default()
    p.use_extra_bufts = False
    return p
C.llama_model_default_params = no_repack
from llama_cpp import Llama
llm = Llama(sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
question = [{"role": "user", "content": sys.argv[2]}]
reply = llm.create_chat_completion(question, temperature=0, max_tokens=int(sys.argv[3]))
print(reply["choices"][0]["message"]["content"])
"""


def llama_chat(path, question: str, max_tokens: int = 16) -> str:
    """llama.cpp's greedy answer (llama-cpp-python, in a process of its own) to one user message."""
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    done = subprocess.run(
        [sys.executable, "-c", _CHAT, str(path), question, str(max_tokens)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def llama_cpp_tree():
    """A llama.cpp source tree with its tools built (LLAMA_CPP_DIR: convert_hf_to_gguf.py, build/bin/llama-*),
    for the tests that run its converter, llama-quantize, llama-imatrix or llama-perplexity; else skip."""
    import os

    root = os.environ.get("LLAMA_CPP_DIR")
    if not root or not (Path(root) / "convert_hf_to_gguf.py").is_file():
        pytest.skip("LLAMA_CPP_DIR (a llama.cpp tree with build/bin/llama-quantize) is not set")
    return Path(root)


def run_tool(tree, name: str, *args, timeout: int = 600) -> str:
    """Run build/bin/<name> (weight repacking off: it crashes on some Intel CPUs); its output."""
    import subprocess

    tool = tree / "build" / "bin" / name
    if not tool.is_file():
        pytest.skip(f"{tool} is not built")
    extra = ["--no-repack"] if name in ("llama-perplexity", "llama-imatrix") else []
    done = subprocess.run([str(tool), *map(str, args), *extra], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def convert_hf(tree, directory, out) -> None:
    """llama.cpp's convert_hf_to_gguf.py, F16."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            str(tree / "convert_hf_to_gguf.py"),
            str(directory),
            "--outtype",
            "f16",
            "--outfile",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
