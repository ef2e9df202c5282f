"""Open a GGUF file with the `gguf` package's memory-mapped reader and validate what we need.

GGUFReader builds a NumPy view for every element of every metadata array (about 1.6 s for the
49,152-token vocabulary of SmolLM2). What it found, the metadata and where each tensor lies, is
kept as JSON in the user cache, keyed by the file's path, size and modification time; the next
open maps the file and cuts the same views out of it in a few milliseconds.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

from mistralcli.errors import ModelLoadError
from mistralcli.paths import cache_dir
from mistralcli.quant_tensor import DENSE_DTYPES, QuantTensor, dequantize_blocks

INDEX_VERSION = 2


@dataclass
class GGUFFile:
    path: Path
    metadata: dict  # key -> Python value (str, int, float, bool, list)
    tensors: dict[str, QuantTensor] = field(repr=False)
    value_types: dict[str, list] = field(default_factory=dict, repr=False)  # key -> [GGUFValueType, array's or None]

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
    index_path = _index_path(path)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("version") == INDEX_VERSION:
            return _from_index(path, index)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no index yet, or an unreadable one: read the file itself
    gguf, offsets = _read(path)
    _write_index(index_path, gguf, offsets)
    return gguf


def _index_path(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return cache_dir() / "gguf-index" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _write_index(index_path: Path, gguf: GGUFFile, offsets: dict[str, int]) -> None:
    tensors = [[t.name, int(t.ggml_type), list(t.shape), offsets[t.name], t.data.nbytes] for t in gguf.tensors.values()]
    index = {"version": INDEX_VERSION, "metadata": gguf.metadata, "tensors": tensors, "types": gguf.value_types}
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, index_path)
    except (OSError, TypeError, ValueError):
        pass  # a read-only cache only costs the next open its time


def _from_index(path: Path, index: dict) -> GGUFFile:
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, type_id, shape, offset, nbytes in index["tensors"]:
        ggml_type = GGMLQuantizationType(type_id)
        raw = mapped[offset : offset + nbytes]
        if ggml_type in DENSE_DTYPES:
            data = raw.view(DENSE_DTYPES[ggml_type]).reshape(shape)
        else:
            data = raw.reshape(*shape[:-1], -1) if len(shape) > 1 else raw
        tensors[name] = QuantTensor(name, ggml_type, tuple(shape), data)
    return GGUFFile(path, index["metadata"], tensors, index["types"])


class _TruncatedTensor(Exception):
    def __init__(self, name: str, offset: int, expected: int, present: int):
        self.name, self.offset, self.expected, self.present = name, offset, expected, present


class _CheckedReader(GGUFReader):
    """GGUFReader that checks each tensor's bytes lie inside the file before it views them: its own
    views of a truncated file fail with numpy's words ("cannot reshape array of size ...")."""

    def _build_tensors(self, start_offs: int, fields: list) -> None:
        size = len(self.data)
        for info in fields:
            _, name_data, _, dims, raw_dtype, offset_tensor = info.parts
            try:
                block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_dtype[0]))]
            except (ValueError, KeyError):
                continue  # an unknown type: the reader's own error, reported as such below
            expected = int(np.prod(dims, dtype=np.int64)) * type_size // block_size
            offset = int(start_offs + int(offset_tensor[0]))
            if offset + expected > size:
                name = bytes(name_data).decode("utf-8", "replace")
                raise _TruncatedTensor(name, offset, expected, max(0, size - offset))
        super()._build_tensors(start_offs, fields)


def _read(path: Path) -> tuple[GGUFFile, dict[str, int]]:
    """Parse with GGUFReader; also return each tensor's byte offset in the file."""
    try:
        reader = _CheckedReader(path, "r")
    except _TruncatedTensor as t:
        raise ModelLoadError(
            path,
            f"truncated: tensor {t.name!r} needs {t.expected} bytes from offset {t.offset}, the file holds "
            f"{t.present} of them ({path.stat().st_size} bytes in all)",
        ) from None
    except (ValueError, KeyError, IndexError, OSError, EOFError) as exc:
        raise ModelLoadError(
            path, f"broken or truncated GGUF header ({path.stat().st_size} bytes; the reader says: {_short(exc)})"
        ) from None

    metadata, value_types = {}, {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = value.contents()
        except (ValueError, IndexError) as exc:
            raise ModelLoadError(path, f"unreadable metadata field {key!r} ({_short(exc)})") from None
        array = value.types[0] == GGUFValueType.ARRAY
        value_types[key] = [int(value.types[0]), int(value.types[-1]) if array and len(value.types) > 1 else None]

    file_size = path.stat().st_size
    tensors, offsets = {}, {}
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
        if ggml_type in DENSE_DTYPES:  # gguf's reader gives BF16 as bytes: the same view as _from_index's
            data = np.asarray(data).view(DENSE_DTYPES[ggml_type]).reshape(shape)
        elif data.ndim == 1 and len(shape) == 2:
            data = data.reshape(shape[0], -1)
        tensors[t.name] = QuantTensor(t.name, ggml_type, shape, data)
        offsets[t.name] = int(t.data_offset)
    return GGUFFile(path, metadata, tensors, value_types), offsets


@cache
def is_computable(ggml_type: GGMLQuantizationType) -> bool:
    """Whether weights of this type can be used: dense floats, or blocks with a NumPy dequantizer."""
    if ggml_type in DENSE_DTYPES:
        return True
    if ggml_type not in GGML_QUANT_SIZES:
        return False
    try:
        dequantize_blocks(np.zeros((1, GGML_QUANT_SIZES[ggml_type][1]), np.uint8), ggml_type)
    except NotImplementedError:
        return False
    return True


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
