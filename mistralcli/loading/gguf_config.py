"""GGUF metadata (`{arch}.*` keys) -> a Hugging Face style config dict for the model classes."""

from mistralcli.errors import ModelLoadError

# Hugging Face config name -> GGUF key suffix after "{arch}."
KEYS = {
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "attention.key_length",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "rope_theta": "rope.freq_base",
    "max_position_embeddings": "context_length",
    "vocab_size": "vocab_size",
    "sliding_window": "attention.sliding_window",
}
REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def config_from_gguf(metadata: dict, tensor_names, path="") -> dict:
    arch = metadata.get("general.architecture")
    config = {}
    for hf_name, suffix in KEYS.items():
        value = metadata.get(f"{arch}.{suffix}")
        if value is not None:
            config[hf_name] = value
    missing = [f"{arch}.{KEYS[k]}" for k in REQUIRED if k not in config]
    if missing:
        raise ModelLoadError(path, f"missing metadata: {', '.join(missing)}")
    if "vocab_size" not in config:
        config["vocab_size"] = len(metadata.get("tokenizer.ggml.tokens") or [])
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
    scaling_type = metadata.get(f"{arch}.rope.scaling.type")
    if scaling_type == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": metadata[f"{arch}.rope.scaling.factor"]}
    # llama.cpp's converter permutes Q/K rows of llama weights into adjacent-pair rope order.
    config["rope_interleaved"] = arch == "llama"
    return config
