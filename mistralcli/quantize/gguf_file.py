"""A GGUF requantized to another type: the per-tensor plan (which type each tensor gets), and the file written
with the `gguf` package's writer, every metadata key of the source carried over (architecture, tokenizer,
chat template), under a temporary name renamed at the end, so a failure leaves no file behind.

The plan, as llama.cpp's quantizer and mistral.rs's ISQ have it: vectors (norms, biases) stay F32; the token
embedding and the output matrix stay at Q8_0 under an 8-bit target (llama.cpp raises them to Q6_K: that comes
with the K types); a tensor whose rows do not divide into the type's blocks falls back to F16; `--tensor-type
REGEX=TYPE` and `--output-tensor-type` override it."""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

from mistralcli.errors import MistralError
from mistralcli.quantize.legacy import quantize

Q = GGMLQuantizationType
TARGETS = {"Q4_0": Q.Q4_0, "Q4_1": Q.Q4_1, "Q5_0": Q.Q5_0, "Q5_1": Q.Q5_1, "Q8_0": Q.Q8_0, "F16": Q.F16, "BF16": Q.BF16}
FILE_TYPES = {
    Q.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_1: LlamaFileType.MOSTLY_Q4_1,
    Q.Q5_0: LlamaFileType.MOSTLY_Q5_0,
    Q.Q5_1: LlamaFileType.MOSTLY_Q5_1,
    Q.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    Q.F16: LlamaFileType.MOSTLY_F16,
    Q.BF16: LlamaFileType.MOSTLY_BF16,
}
KEPT_HIGHER = ("token_embd.weight", "output.weight")
BITS = {Q.F32: 32, Q.F16: 16, Q.BF16: 16, Q.Q8_0: 8, Q.Q5_1: 5, Q.Q5_0: 5, Q.Q4_1: 4, Q.Q4_0: 4}
SET_HERE = ("general.architecture", "general.file_type", "general.quantization_version")


def type_named(name: str, what: str) -> GGMLQuantizationType:
    key = name.upper()
    if key not in TARGETS:
        raise MistralError(f"{what} {name!r}: not a type this quantizes to (it takes: {', '.join(TARGETS)})")
    return TARGETS[key]


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # rows first, as numpy has it
    source: GGMLQuantizationType
    target: GGMLQuantizationType
    why: str  # "target", "vector", "kept higher", "rows do not divide", "--tensor-type ..."

    @property
    def size_before(self) -> int:
        return _nbytes(self.source, self.shape)

    @property
    def size_after(self) -> int:
        return _nbytes(self.target, self.shape)


def _nbytes(qtype, shape) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def plan(reader: GGUFReader, target, overrides: list[tuple[re.Pattern, GGMLQuantizationType]], output_type=None):
    out = []
    for tensor in reader.tensors:
        shape = _shape(tensor)
        qtype, why = target, "target"
        if len(shape) < 2:
            qtype, why = Q.F32, "vector"
        elif tensor.name in KEPT_HIGHER and BITS[target] < 8:
            qtype, why = Q.Q8_0, "kept higher"
        if tensor.name == "output.weight" and output_type is not None:
            qtype, why = output_type, "--output-tensor-type"
        for pattern, forced in overrides:
            if pattern.search(tensor.name):
                qtype, why = forced, f"--tensor-type {pattern.pattern}"
        if shape[-1] % GGML_QUANT_SIZES[qtype][0]:
            qtype, why = Q.F16, "rows do not divide"
        out.append(TensorPlan(tensor.name, shape, Q(tensor.tensor_type), qtype, why))
    return out


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


def write(reader: GGUFReader, plans: list[TensorPlan], target, out_path: Path, progress: Callable | None = None):
    """Write the requantized file (a temporary name in its directory, renamed when whole)."""
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
        writer.add_file_type(FILE_TYPES[target])
        writer.add_quantization_version(2)
        by_name = {t.name: t for t in reader.tensors}
        for p in plans:
            x = _float(by_name[p.name])
            data = quantize(x, p.target)
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


def summary(plans: list[TensorPlan], seconds: float) -> dict:
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.target.name] = counts.get(p.target.name, 0) + 1
    before = sum(p.size_before for p in plans)
    after = sum(p.size_after for p in plans)
    weights = sum(int(np.prod(p.shape)) for p in plans)
    return {
        "tensors": counts,
        "bytes_before": before,
        "bytes_after": after,
        "bits_per_weight": round(after * 8 / weights, 3) if weights else 0.0,
        "seconds": round(seconds, 3),
    }
