"""A GGUF requantized to another type: the per-tensor plan (policy.py: llama.cpp's, per mix), and the file
written with the `gguf` package's writer, every metadata key of the source carried over (architecture,
tokenizer, chat template), under a temporary name renamed at the end, so a failure leaves no file behind."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from mistralcli.errors import MistralError
from mistralcli.quantize import policy
from mistralcli.quantize.blocks import quantize
from mistralcli.quantize.policy import Mix, TensorPlan

Q = GGMLQuantizationType
SET_HERE = ("general.architecture", "general.file_type", "general.quantization_version")


def plan(reader: GGUFReader, mix: Mix, options: policy.Options | None = None) -> list[TensorPlan]:
    tensors = [(t.name, _shape(t), Q(t.tensor_type)) for t in reader.tensors]
    return policy.plan(tensors, mix, policy.ModelShape.from_gguf(reader.fields), options or policy.Options())


def _shape(tensor) -> tuple[int, ...]:
    """A reader tensor's logical shape, rows first (GGUF lists the dimensions the other way round)."""
    return tuple(int(n) for n in reversed(tensor.shape.tolist()))


def _float(tensor) -> np.ndarray:
    """The source tensor as float32, rows first, through QuantTensor's dequantization."""
    from mistralcli.quant_tensor import DENSE_DTYPES, QuantTensor

    qtype, shape = Q(tensor.tensor_type), _shape(tensor)
    data = np.asarray(tensor.data)
    if qtype in DENSE_DTYPES:
        rows = data.view(DENSE_DTYPES[qtype]).reshape(-1, shape[-1])
    else:
        rows = data.reshape(-1, data.shape[-1])
    return QuantTensor(tensor.name, qtype, shape, rows).dequantize().reshape(shape)


def write(
    reader: GGUFReader,
    plans: list[TensorPlan],
    mix: Mix,
    out_path: Path,
    progress: Callable | None = None,
    imatrix: dict[str, np.ndarray] | None = None,
):
    """Write the requantized file (a temporary name in its directory, renamed when whole); imatrix: the
    importance of each column, by tensor name, for the K and IQ types."""
    architecture = reader.fields["general.architecture"].contents()
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    try:
        writer = GGUFWriter(tmp, architecture)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name in SET_HERE:
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub)
        writer.add_file_type(mix.file_type)
        writer.add_quantization_version(2)
        by_name = {t.name: t for t in reader.tensors}
        for p in plans:
            x = _float(by_name[p.name])
            data = _quantized(x, p.target, (imatrix or {}).get(p.name))
            if p.target in (Q.F32, Q.F16):
                writer.add_tensor(p.name, data)
            else:
                writer.add_tensor(p.name, data, raw_shape=data.shape, raw_dtype=p.target)
            if progress is not None:
                progress(p)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
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
