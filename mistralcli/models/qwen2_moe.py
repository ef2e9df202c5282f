"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's decoder (q/k/v biases) with a mixture of experts,
top-k weights not renormalized unless `norm_topk_prob`, and a shared expert behind a sigmoid gate;
layers in `mlp_only_layers` (or off the `decoder_sparse_step`) keep a dense MLP."""

from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.moe import MoEArgs, MoEModel
from mistralcli.models.qwen2 import Qwen2Args


@dataclass
class Qwen2MoeArgs(MoEArgs, Qwen2Args):
    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        values = super().adapt(values, config)  # Qwen2's, next in line after MoEArgs
        values.setdefault("norm_topk_prob", False)  # also for GGUF files, which do not say
        return values


@register("qwen2moe")
class Qwen2MoeModel(MoEModel):
    args_class = Qwen2MoeArgs
    has_shared_expert = True
    hf_names = [
        (r"model\.layers\.(\d+)\.mlp\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.gate_proj\.weight", r"blk.\1.ffn_gate_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.up_proj\.weight", r"blk.\1.ffn_up_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.down_proj\.weight", r"blk.\1.ffn_down_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.mlp\.shared_expert\.gate_proj\.weight", r"blk.\1.ffn_gate_shexp.weight"),
        (r"model\.layers\.(\d+)\.mlp\.shared_expert\.up_proj\.weight", r"blk.\1.ffn_up_shexp.weight"),
        (r"model\.layers\.(\d+)\.mlp\.shared_expert\.down_proj\.weight", r"blk.\1.ffn_down_shexp.weight"),
        (r"model\.layers\.(\d+)\.mlp\.shared_expert_gate\.weight", r"blk.\1.ffn_gate_inp_shexp.weight"),
    ]
