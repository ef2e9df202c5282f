"""What rounding the activations of every product costs in fidelity: the reason the CPU kernels quantize
activations to int16 (per block of 32) rather than to int8 or bfloat16, which the matrix units (VNNI's
vpdpbusd, AMX's int8 and bf16 tiles) would take at twice the rate or more.

    python tests/activation_precision.py [MODEL ...]     # default: SmolLM2-135M-Instruct; or qwen2.5-coder, gemma3

Each model runs a 60-token prompt through the NumPy reference (float32 products of the dequantized weights)
with the input of every product rounded as each path rounds it; the figure is the largest difference on the
top-5 logits of every position against the unrounded run (the engine promises 0.01 against float32).
"""

import sys

import numpy as np

PROMPT = (
    "Write a Python function that checks whether a number is prime. def is_prime(n):\n    if n < 2:\n"
    "        return False\n    for i in range(2, int(n ** 0.5) + 1):"
)


def blocks(x: np.ndarray, levels: int) -> np.ndarray:
    """x rounded to integers of +-levels per block of 32 (scale max|x| / levels), as the kernels quantize."""
    t, k = x.shape
    b = x.reshape(t, k // 32, 32).astype(np.float32)
    scale = np.abs(b).max(-1, keepdims=True) / levels
    scale[scale == 0] = 1
    return (np.round(b / scale) * scale).reshape(t, k).astype(np.float32)


def bfloat16(x: np.ndarray) -> np.ndarray:
    """x rounded to bfloat16 (to nearest even), back in float32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


ROUNDINGS = {"int16 (ours)": lambda x: blocks(x, 32767), "int8": lambda x: blocks(x, 127), "bfloat16": bfloat16}


def main(models: list[str]) -> None:
    sys.path.insert(0, "tests")
    from paged import OneSequence

    from mistralcli.loading.loader import load_model

    for spec in models or [None]:
        if spec is not None and "/" not in spec and not spec.endswith(".gguf"):
            from conftest import model_path  # a test model by its id

            spec = str(model_path(spec))
        loaded = load_model(spec, backend="reference")
        ids = np.array(loaded.tokenizer.encode(PROMPT))
        float32 = _logits(loaded, ids, None, OneSequence)
        top = np.argsort(-float32, -1)[:, :5]
        for name, rounding in ROUNDINGS.items():
            drift = np.abs(np.take_along_axis(_logits(loaded, ids, rounding, OneSequence) - float32, top, -1))
            print(
                f"{loaded.name}: activations as {name}: top-5 logits drift max {drift.max():.4f}, mean {drift.mean():.5f}"
            )


def _logits(loaded, ids, rounding, one_sequence) -> np.ndarray:
    """Every position's logits, the input of every product rounded by rounding (None: as it is)."""
    ops = loaded.model.ops
    exact = type(ops).matmul
    ops.matmul = exact.__get__(ops) if rounding is None else (lambda x, w: exact(ops, rounding(x), w))
    return one_sequence(loaded.model, capacity=256).forward(ids, np.arange(len(ids)), all_logits=True)


if __name__ == "__main__":
    main(sys.argv[1:])
