"""Hugging Face model directories: config.json + *.safetensors (one file or a sharded index)."""

import json
import re
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from safetensors import SafetensorError, safe_open

from mistralcli.errors import ModelLoadError
from mistralcli.json_file import read_json
from mistralcli.quant_tensor import QuantTensor

# Hugging Face parameter names -> the GGUF names our models use.
HF_TO_GGUF = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", r"blk.\1.attn_q.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", r"blk.\1.attn_k.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", r"blk.\1.attn_v.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)", r"blk.\1.attn_output.\2"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"blk.\1.ffn_gate.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"blk.\1.ffn_up.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"blk.\1.ffn_down.weight"),
]
_PATTERNS = [(re.compile(p + r"\Z"), repl) for p, repl in HF_TO_GGUF]


def gguf_name(hf_name: str, extra: list[tuple[str, str]] = ()) -> str | None:
    """The GGUF name of a Hugging Face parameter: an architecture's own names (extra) first."""
    for pattern, repl in [(re.compile(p + r"\Z"), r) for p, r in extra] + _PATTERNS:
        if pattern.match(hf_name):
            return pattern.sub(repl, hf_name)
    return None


def read_config(directory: Path) -> dict:
    if not (directory / "config.json").is_file():
        raise ModelLoadError(directory, "not a model directory (no config.json)")
    return read_json(directory / "config.json")


def weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(index, f"invalid index ({exc})") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(index, f"missing shard(s): {', '.join(missing)}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(directory, "no *.safetensors weights")
    return files


def tensor_list(directory: Path, extra_names: list[tuple[str, str]] = ()) -> list[tuple[str, tuple, str, Path, str]]:
    """(GGUF name, shape, safetensors dtype, file, Hugging Face name) of every known tensor, from the files'
    headers (nothing is read)."""
    found = []
    for path in weight_files(directory):
        try:
            with safe_open(str(path), framework="numpy") as f:
                for name in f.keys():
                    ours = gguf_name(name, extra_names)
                    if ours is not None:
                        piece = f.get_slice(name)
                        found.append((ours, tuple(piece.get_shape()), piece.get_dtype(), path, name))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(path, f"broken safetensors file ({exc})") from None
    return found


def load_weights(directory: Path, extra_names: list[tuple[str, str]] = (), transform=None) -> dict[str, QuantTensor]:
    """Every known tensor of the directory, renamed to GGUF names (float32/float16 kept as stored);
    extra_names: an architecture's own (regex, GGUF name) pairs, tried first. transform(tensor) -> tensor,
    where given, is applied to each as it is read, before the next is (in-situ quantization)."""
    weights = {}
    by_file: dict[Path, list] = {}
    for ours, _, dtype, path, name in tensor_list(directory, extra_names):
        by_file.setdefault(path, []).append((ours, dtype, name))
    for path, entries in by_file.items():
        try:
            with safe_open(str(path), framework="numpy") as f:
                for ours, dtype, name in entries:
                    if dtype == "BF16":
                        tensor = _bf16_tensor(path, name, ours)
                    else:
                        array = f.get_tensor(name)
                        if array.dtype not in (np.float32, np.float16):
                            array = array.astype(np.float32)
                        tensor = QuantTensor.from_array(ours, array)
                    weights[ours] = tensor if transform is None else transform(tensor)
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(path, f"broken safetensors file ({exc})") from None
    return weights


def _bf16_tensor(path: Path, hf_name: str, name: str) -> QuantTensor:
    # numpy has no bfloat16: map the raw bits (the format is an 8-byte header length, a JSON header,
    # then the data) and keep them as uint16, which QuantTensor knows as BF16.
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
    info = header[hf_name]
    start, stop = info["data_offsets"]
    shape = tuple(info["shape"])
    data = np.memmap(path, dtype=np.uint16, mode="r", offset=8 + header_len + start, shape=shape)
    return QuantTensor(name, GGMLQuantizationType.BF16, shape, data)
