"""What `mistral show` tells of a model without loading its weights: architecture, parameter count, the
quantization of each kind of tensor, context length, rope settings, tokenizer, BOS/EOS, chat template and the
sampling it recommends; from a GGUF's metadata and tensor table, or a model directory's config.json,
safetensors headers and tokenizer files."""

import json
import re
from pathlib import Path

import numpy as np

from mistralcli.errors import ModelLoadError
from mistralcli.json_file import read_json

_LAYER = re.compile(r"^(blk|model\.layers|layers)\.\d+\.")


def tensor_kind(name: str) -> str:
    """A tensor's kind: its name without the layer number (blk.3.attn_q.weight -> attn_q.weight)."""
    return _LAYER.sub("", name)


def model_card(path: Path, name: str) -> dict:
    path = Path(path)
    card = _gguf_card(path) if path.is_file() else _directory_card(path)
    return {"name": name, "path": str(path), **card}


def quantization_mix(kinds: dict[str, dict[str, int]]) -> dict[str, float]:
    """Each storage type's share of the parameters (from the per-kind counts), largest first."""
    totals: dict[str, int] = {}
    for types in kinds.values():
        for kind, count in types.items():
            totals[kind] = totals.get(kind, 0) + count
    everything = sum(totals.values()) or 1
    return {k: round(v / everything, 4) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _gguf_card(path: Path) -> dict:
    from gguf import LlamaFileType

    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.sampling import recommended_sampling

    gguf = open_gguf(path)
    meta = gguf.metadata
    arch = meta.get("general.architecture", "")
    if meta.get("split.count", 1) > 1:
        raise ModelLoadError(
            path, f"a split GGUF ({meta['split.count']} files): merge it with llama-gguf-split --merge"
        )
    kinds: dict[str, dict[str, int]] = {}
    for tensor in gguf.tensors.values():
        count = int(np.prod(tensor.shape))
        types = kinds.setdefault(tensor_kind(tensor.name), {})
        types[tensor.ggml_type.name] = types.get(tensor.ggml_type.name, 0) + count
    file_type = meta.get("general.file_type")
    try:
        quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quant = f"type {file_type}"
    tokens = meta.get("tokenizer.ggml.tokens") or []

    def token(key: str) -> dict | None:
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        if index is None:
            return None
        return {"id": index, "text": tokens[index] if 0 <= index < len(tokens) else None}

    def get(suffix: str):
        return meta.get(f"{arch}.{suffix}")

    rope = {
        "freq_base": get("rope.freq_base"),
        "dimension_count": get("rope.dimension_count"),
        "scaling_type": get("rope.scaling.type"),
        "scaling_factor": get("rope.scaling.factor"),
        "original_context_length": get("rope.scaling.original_context_length"),
    }
    template = meta.get("tokenizer.chat_template")
    return {
        "format": "gguf",
        "architecture": arch,
        "general_name": meta.get("general.name"),
        "size_bytes": path.stat().st_size,
        "parameters": sum(sum(t.values()) for t in kinds.values()),
        "quantization": quant,
        "quantization_mix": quantization_mix(kinds),
        "tensor_types": {kind: kinds[kind] for kind in sorted(kinds)},
        "context_length": get("context_length"),
        "embedding_length": get("embedding_length"),
        "layers": get("block_count"),
        "attention_heads": get("attention.head_count"),
        "kv_heads": get("attention.head_count_kv"),
        "rope": {k: v for k, v in rope.items() if v is not None},
        "tokenizer": {
            "model": meta.get("tokenizer.ggml.model"),
            "pre": meta.get("tokenizer.ggml.pre"),
            "vocab_size": len(tokens),
            "bos": token("bos"),
            "eos": token("eos"),
            "add_bos": meta.get("tokenizer.ggml.add_bos_token"),
        },
        "chat_template": template,
        "sampling": recommended_sampling(metadata=meta),
    }


def _directory_card(path: Path) -> dict:
    from mistralcli.loading import safetensors_dir
    from mistralcli.loading.loader import template_source
    from mistralcli.models import HF_MODEL_TYPES, get_architecture
    from mistralcli.sampling import recommended_sampling

    config = safetensors_dir.read_config(path)
    model_type = config.get("model_type") or (config.get("architectures") or [""])[0]
    architecture = get_architecture(HF_MODEL_TYPES.get(model_type, ""))
    names = architecture.hf_names if architecture is not None else ()
    kinds: dict[str, dict[str, int]] = {}
    for ours, shape, dtype, _, _ in safetensors_dir.tensor_list(path, names):
        types = kinds.setdefault(tensor_kind(ours), {})
        types[dtype] = types.get(dtype, 0) + int(np.prod(shape))
    text = config.get("text_config") or config
    tokenizer_config = read_json(path / "tokenizer_config.json")
    vocab = None
    try:
        tokenizer_json = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        model = tokenizer_json.get("model", {}).get("type")
        vocab = len(tokenizer_json.get("model", {}).get("vocab", {}) or {}) + len(
            tokenizer_json.get("added_tokens", [])
        )
    except (OSError, ValueError):
        model = None

    def special(key: str):
        value = tokenizer_config.get(f"{key}_token")
        return {"id": text.get(f"{key}_token_id"), "text": value.get("content") if isinstance(value, dict) else value}

    rope = {"theta": text.get("rope_theta"), "scaling": text.get("rope_scaling")}
    dtype = config.get("torch_dtype") or config.get("dtype")
    return {
        "format": "safetensors",
        "architecture": config.get("model_type"),
        "general_name": path.name,
        "size_bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file()),
        "parameters": sum(sum(t.values()) for t in kinds.values()),
        "quantization": str(dtype).upper().replace("FLOAT", "F") if dtype else None,
        "quantization_mix": quantization_mix(kinds),
        "tensor_types": {kind: kinds[kind] for kind in sorted(kinds)},
        "context_length": text.get("max_position_embeddings"),
        "embedding_length": text.get("hidden_size"),
        "layers": text.get("num_hidden_layers"),
        "attention_heads": text.get("num_attention_heads"),
        "kv_heads": text.get("num_key_value_heads"),
        "rope": {k: v for k, v in rope.items() if v is not None},
        "tokenizer": {
            "model": model,
            "vocab_size": vocab,
            "bos": special("bos"),
            "eos": special("eos"),
            "add_bos": tokenizer_config.get("add_bos_token"),
        },
        "chat_template": template_source(path),
        "sampling": recommended_sampling(generation_config=read_json(path / "generation_config.json")),
    }
