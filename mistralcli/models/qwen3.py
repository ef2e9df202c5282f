"""Qwen3 and Qwen3-MoE: Qwen2's decoder with an RMSNorm of each head of q and k (weights of size head_dim,
applied after the projection and before RoPE, as in Gemma 3), no q/k/v biases (unless `attention_bias`)
and a head_dim of its own (128 where hidden/heads may be 64 or 80).

Qwen3-MoE is Qwen2-MoE's mixture without the shared expert: a softmax router over `num_experts`, the top
`num_experts_per_tok` renormalized where `norm_topk_prob` (every released model; llama.cpp always
renormalizes a `qwen3moe` GGUF), and dense MLPs in `mlp_only_layers` or off the `decoder_sparse_step`.
Its sliding window, where a config turns it on, covers every layer (transformers 5: no max_window_layers).
"""

from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.decoder import DecoderModel
from mistralcli.models.moe import MoEModel
from mistralcli.models.qwen2 import Qwen2Args
from mistralcli.models.qwen2_moe import Qwen2MoeArgs

QK_NORM_NAMES = [
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", r"blk.\1.attn_q_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", r"blk.\1.attn_k_norm.weight"),
]


@register("qwen3")
class Qwen3Model(DecoderModel):
    args_class = Qwen2Args
    hf_names = QK_NORM_NAMES


@dataclass
class Qwen3MoeArgs(Qwen2MoeArgs):
    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        if "num_local_experts" in config:  # the name transformers 5 saves num_experts under
            values["num_experts"] = config["num_local_experts"]
        values["max_window_layers"] = 0  # a sliding window, where on, is every layer's
        return super().adapt(values, config)

    @classmethod
    def adapt_gguf(cls, config: dict, metadata: dict, arch: str) -> dict:
        return {**super().adapt_gguf(config, metadata, arch), "norm_topk_prob": True}


@register("qwen3moe")
class Qwen3MoeModel(MoEModel):
    args_class = Qwen3MoeArgs
    hf_names = QK_NORM_NAMES + [
        (r"model\.layers\.(\d+)\.mlp\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.gate_proj\.weight", r"blk.\1.ffn_gate_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.up_proj\.weight", r"blk.\1.ffn_up_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.down_proj\.weight", r"blk.\1.ffn_down_exp.\2.weight"),
    ]
