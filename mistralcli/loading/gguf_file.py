"""Open a GGUF file with the `gguf` package's memory-mapped reader and validate what we need."""

from dataclasses import dataclass, field
from pathlib import Path

from functools import cache

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, quants

from mistralcli.errors import ModelLoadError
from mistralcli.loading.quant_tensor import DENSE_DTYPES, QuantTensor


@dataclass
class GGUFFile:
    path: Path
    metadata: dict  # key -> Python value (str, int, float, bool, list)
    tensors: dict[str, QuantTensor] = field(repr=False)

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")


def open_gguf(path: str | Path) -> GGUFFile:
    """Read metadata and tensor views (no copy, nothing dequantized); raise ModelLoadError if broken."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelLoadError(path, "not a GGUF file (bad magic bytes)")
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, KeyError, IndexError, OSError, EOFError) as exc:
        raise ModelLoadError(path, f"broken or truncated GGUF file ({_short(exc)})") from None

    metadata = {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = value.contents()
        except (ValueError, IndexError) as exc:
            raise ModelLoadError(path, f"unreadable metadata field {key!r} ({_short(exc)})") from None

    file_size = path.stat().st_size
    tensors = {}
    for t in reader.tensors:
        try:
            ggml_type = GGMLQuantizationType(int(t.tensor_type))
        except ValueError:
            raise ModelLoadError(path, f"tensor {t.name!r} has unsupported GGML type {int(t.tensor_type)}") from None
        if not is_computable(ggml_type):
            raise ModelLoadError(path, f"tensor {t.name!r} has unsupported type {ggml_type.name}")
        if t.data_offset + t.n_bytes > file_size:
            raise ModelLoadError(path, f"truncated: tensor {t.name!r} ends past the end of the file")
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # GGML lists ne0 (columns) first
        data = t.data
        if data.ndim == 1 and len(shape) == 2:
            data = data.reshape(shape[0], -1)
        tensors[t.name] = QuantTensor(t.name, ggml_type, shape, data)
    return GGUFFile(path, metadata, tensors)


@cache
def is_computable(ggml_type: GGMLQuantizationType) -> bool:
    """Whether weights of this type can be used: dense floats, or blocks gguf can dequantize."""
    if ggml_type in DENSE_DTYPES:
        return True
    if ggml_type not in GGML_QUANT_SIZES:
        return False
    try:
        quants.dequantize(np.zeros((1, GGML_QUANT_SIZES[ggml_type][1]), np.uint8), ggml_type)
    except NotImplementedError:
        return False
    return True


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__

