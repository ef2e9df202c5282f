"""A GGUF requantized to another type: the per-tensor plan (policy.py: llama.cpp's, per mix), and the file
written with the `gguf` package's writer, every metadata key of the source carried over (architecture,
tokenizer, chat template), under a temporary name renamed at the end, so a failure leaves no file behind."""

import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from mistralcli.errors import MistralError
from mistralcli.loading.gguf_file import GGUFFile
from mistralcli.quant_tensor import QuantTensor
from mistralcli.quantize import policy
from mistralcli.quantize.blocks import quantize
from mistralcli.quantize.policy import Mix, TensorPlan

Q = GGMLQuantizationType
SET_HERE = ("general.architecture", "general.file_type", "general.quantization_version")


def plan(source: GGUFFile, mix: Mix, options: policy.Options | None = None) -> list[TensorPlan]:
    """source: the GGUF as mistralcli.loading.gguf_file.open_gguf reads it (its index cached: a second run skips
    gguf's reader, about 2 s for a 49,152-token vocabulary)."""
    tensors = [(t.name, t.shape, t.ggml_type) for t in source.tensors.values()]
    return policy.plan(tensors, mix, policy.ModelShape.from_metadata(source.metadata), options or policy.Options())


def _float(tensor: QuantTensor) -> np.ndarray:
    """The source tensor as float32, rows first (QuantTensor's dequantization)."""
    return tensor.dequantize().reshape(tensor.shape)


def write(
    source: GGUFFile,
    plans: list[TensorPlan],
    mix: Mix,
    out_path: Path,
    progress: Callable | None = None,
    imatrix: dict[str, np.ndarray] | None = None,
):
    """Write the requantized file (a temporary name in its directory, renamed when whole); imatrix: the
    importance of each column, by tensor name, for the K and IQ types."""
    with gguf_writer(out_path, source.metadata["general.architecture"]) as writer:
        for key, value in source.metadata.items():
            if key in SET_HERE:
                continue
            vtype, sub = source.value_types[key]
            writer.add_key_value(key, value, GGUFValueType(vtype), None if sub is None else GGUFValueType(sub))
        writer.add_file_type(mix.file_type)
        writer.add_quantization_version(2)
        for p in plans:
            x = _float(source.tensors[p.name])
            data = _quantized(x, p.target, (imatrix or {}).get(p.name))
            if p.target in (Q.F32, Q.F16):
                writer.add_tensor(p.name, data)
            else:
                writer.add_tensor(p.name, data, raw_shape=data.shape, raw_dtype=p.target)
            if progress is not None:
                progress(p)


@contextmanager
def gguf_writer(path: Path, architecture: str):
    """A GGUFWriter on a temporary name in path's directory; when the block ends the file is written and renamed
    to path, and if it raises (a disk that fills, Ctrl-C) the temporary file is removed: no half file is left."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        writer = GGUFWriter(tmp, architecture)
        yield writer
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _quantized(x: np.ndarray, qtype, importance: np.ndarray | None) -> np.ndarray:
    """x quantized, each expert of a stacked (E, rows, cols) tensor with its own importance row."""
    if importance is not None and importance.ndim == 2:
        if x.ndim != 3 or importance.shape[0] != x.shape[0]:
            raise MistralError(f"an importance matrix of {importance.shape[0]} experts for a tensor of shape {x.shape}")
        return np.stack([quantize(x[e], qtype, importance[e]) for e in range(x.shape[0])])
    return quantize(x, qtype, importance)


def summary(plans: list[TensorPlan], seconds: float) -> dict:
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.target.name] = counts.get(p.target.name, 0) + 1
    return {
        "tensors": counts,
        "bytes_before": sum(p.size_before for p in plans),
        "bytes_after": sum(p.size_after for p in plans),
        "bits_per_weight": policy.bits_per_weight(plans),
        "seconds": round(seconds, 3),
    }
