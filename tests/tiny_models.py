"""Tiny random-weight checkpoints (Llama, Mistral, Qwen2, Qwen3, Gemma 3, the MoEs) made with transformers, as oracles
for our forward; their GGUF files as llama.cpp's converter writes them; a byte-level tokenizer for model directories."""

from pathlib import Path

import numpy as np

# Qwen3's own chat template, shortened (see the file's opening comment): the thinking switch is its point.
QWEN3_CHAT_TEMPLATE = (Path(__file__).parent / "data" / "qwen3_chat_template.jinja").read_text(encoding="utf-8")


def make_hf_model(kind: str = "llama", vocab_size: int = 512, seed: int = 0, **overrides):
    """A 2-layer, hidden-64 model in float32 with eager attention and weights large enough to matter."""
    import torch
    import transformers

    base = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        initializer_range=0.15,
    )
    base.update(overrides)
    config_cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
        "gemma3": transformers.Gemma3TextConfig,
        "mixtral": transformers.MixtralConfig,
        "qwen2_moe": transformers.Qwen2MoeConfig,
        "phi3": transformers.Phi3Config,
        "qwen3": transformers.Qwen3Config,
        "qwen3_moe": transformers.Qwen3MoeConfig,
    }[kind]
    model_cls = {
        "llama": transformers.LlamaForCausalLM,
        "mistral": transformers.MistralForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "gemma3": transformers.Gemma3ForCausalLM,
        "mixtral": transformers.MixtralForCausalLM,
        "qwen2_moe": transformers.Qwen2MoeForCausalLM,
        "phi3": transformers.Phi3ForCausalLM,
        "qwen3": transformers.Qwen3ForCausalLM,
        "qwen3_moe": transformers.Qwen3MoeForCausalLM,
    }[kind]
    config = config_cls(**base)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # RMSNorm weights start at 1: make them random too
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            elif name.endswith("bias"):  # zero at initialisation
                param.copy_(0.3 * torch.randn_like(param))
    return model


def saved_checkpoint(name: str, configs: dict, tmp_path_factory):
    """(transformers model, its saved directory) for configs[name] = (kind, overrides): a module
    fixture's body."""
    kind, overrides = configs[name]
    model = make_hf_model(kind, **overrides)
    directory = tmp_path_factory.mktemp(name)
    model.save_pretrained(directory)
    return model, directory


def hf_logits(model, token_ids) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(token_ids)])).logits[0].float().numpy()


def permute_for_gguf(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's convert step for llama Q/K rows: rotate_half pairs -> adjacent pairs."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_gguf(path, model, tokenizer_metadata: dict, expert_type=None, arch: str = "llama"):
    """Write the HF model as a float32 GGUF of architecture arch (`llama`, `qwen3`, `qwen3moe`), as
    llama.cpp's converter lays it out: llama's Q/K rows permuted, the others' as they are. A Mixtral
    becomes llama with an expert count; experts become stacked (E, rows, cols) tensors, quantized to
    expert_type (a GGMLQuantizationType) when given."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    if getattr(cfg, "head_dim", None):  # as the converter: only where the config names it
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_tokenizer_model(tokenizer_metadata["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(tokenizer_metadata["tokenizer.ggml.pre"])
    writer.add_token_list(tokenizer_metadata["tokenizer.ggml.tokens"])
    writer.add_token_types(tokenizer_metadata["tokenizer.ggml.token_type"])
    writer.add_token_merges(tokenizer_metadata["tokenizer.ggml.merges"])
    writer.add_bos_token_id(tokenizer_metadata["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(tokenizer_metadata["tokenizer.ggml.eos_token_id"])
    writer.add_chat_template(tokenizer_metadata["tokenizer.chat_template"])
    if getattr(cfg, "num_local_experts", None):
        writer.add_expert_count(cfg.num_local_experts)
        writer.add_expert_used_count(cfg.num_experts_per_tok)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, tensor in model.state_dict().items():
        array = tensor.float().numpy()
        if ".mlp." in name and ("experts" in name or name.endswith("mlp.gate.weight")):
            _write_experts(writer, name, array, expert_type)
            continue
        if name in names:
            ours = names[name]
        else:
            _, _, layer, *rest = name.split(".")
            key = ".".join(rest[:-1])
            ours = f"blk.{layer}.{per_layer[key]}.{rest[-1]}"
            if arch == "llama" and key in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = cfg.num_attention_heads if key == "self_attn.q_proj" else cfg.num_key_value_heads
                array = permute_for_gguf(array, heads)
        writer.add_tensor(ours, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_experts(writer, name, array, expert_type):
    import gguf

    layer = name.split(".")[2]
    if name.endswith("mlp.gate.weight"):
        writer.add_tensor(f"blk.{layer}.ffn_gate_inp.weight", np.ascontiguousarray(array))
        return
    if name.endswith("gate_up_proj"):  # (E, 2F, H): gate rows, then up rows
        half = array.shape[1] // 2
        stacks = {"ffn_gate_exps": array[:, :half], "ffn_up_exps": array[:, half:]}
    else:
        stacks = {"ffn_down_exps": array}
    for ours, stack in stacks.items():
        stack = np.ascontiguousarray(stack, dtype=np.float32)
        if expert_type is None:
            writer.add_tensor(f"blk.{layer}.{ours}.weight", stack)
        else:
            writer.add_tensor(
                f"blk.{layer}.{ours}.weight", gguf.quants.quantize(stack, expert_type), raw_dtype=expert_type
            )


def requantize_experts(model, expert_type):
    """Replace the HF model's expert weights by their expert_type round trip (what a GGUF of that
    type holds), so that it is the float oracle of that file."""
    import gguf
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".mlp.experts." in name:
                array = param.float().numpy()
                flat = array.reshape(-1, array.shape[-1])
                back = gguf.quants.dequantize(gguf.quants.quantize(flat, expert_type), expert_type)
                param.copy_(torch.from_numpy(back.reshape(array.shape)))


def save_byte_level_tokenizer(directory, chat_template: str):
    """Save into directory (through transformers) a byte-level BPE tokenizer.json, the 256 byte symbols
    and no merges, with ChatML's special tokens and `<think>` / `</think>` added as Qwen's are, and the
    chat template. Returns the transformers tokenizer, the oracle of rendering."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    hf.add_tokens(["<think>", "</think>"])
    hf.chat_template = chat_template
    hf.save_pretrained(directory)
    return hf
