"""A float Hugging Face checkpoint made from a llama GGUF (the test sources of `mistral quantize`'s safetensors
path): the tensors dequantized through our kernels under their Hugging Face names, a llama's Q and K rows
permuted back to rotate-half order, config.json from the metadata, and tokenizer.json rebuilt from the GGUF's
vocabulary (mistralcli.tokenizer.gguf_vocab) with its control tokens special, saved through transformers."""

import json
from pathlib import Path

import numpy as np

GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
PER_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of llama.cpp's converter permute (tests/tiny_models.permute_for_gguf)."""
    return weight.reshape(heads, weight.shape[0] // heads // 2, 2, weight.shape[1]).swapaxes(1, 2).reshape(weight.shape)


def export_hf(gguf_path: Path, directory: Path, dtype=np.float16) -> Path:
    import transformers
    from safetensors.numpy import save_file
    from tokenizers import AddedToken

    from mistralcli.loading.gguf_file import open_gguf
    from mistralcli.tokenizer import gguf_vocab

    source = open_gguf(gguf_path)
    md = source.metadata
    arch = md["general.architecture"]
    assert arch == "llama", arch

    def key(name):
        return md[f"{arch}.{name}"]

    heads, kv_heads = key("attention.head_count"), key("attention.head_count_kv")
    tensors = {}
    for name, tensor in source.tensors.items():
        if name in GGUF_TO_HF:
            hf_name = GGUF_TO_HF[name]
        else:
            _, layer, rest = name.split(".", 2)
            hf_name = f"model.layers.{layer}.{PER_LAYER[rest]}"
        w = tensor.dequantize().reshape(tensor.shape)
        if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
            w = unpermute(w, heads if "attn_q" in name else kv_heads)
        tensors[hf_name] = np.ascontiguousarray(w.astype(dtype))
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    bos, eos = md.get("tokenizer.ggml.bos_token_id"), md.get("tokenizer.ggml.eos_token_id")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": key("embedding_length"),
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": key("context_length"),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon"),
        "rope_theta": key("rope.freq_base"),
        "vocab_size": len(tokens),
        "tie_word_embeddings": "output.weight" not in source.tensors,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "torch_dtype": "float16" if dtype == np.float16 else "float32",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    fragment = gguf_vocab.build_bpe(tokens, md.get("tokenizer.ggml.merges", []), md["tokenizer.ggml.pre"])
    control = [tokens[i] for i, t in enumerate(types) if t == gguf_vocab.TokenType.CONTROL]
    fragment.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=fragment,
        bos_token=tokens[bos] if bos is not None else None,
        eos_token=tokens[eos] if eos is not None else None,
        clean_up_tokenization_spaces=False,
    )
    if md.get("tokenizer.chat_template"):
        hf.chat_template = md["tokenizer.chat_template"]
    hf.save_pretrained(directory)
    return directory
