"""Mixtral: Mistral's decoder with a mixture of experts in every layer (top-2 of 8, renormalized).
A Mixtral GGUF says `llama` with an expert count; the loader sends it here."""

from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.moe import MoEArgs, MoEModel


@dataclass
class MixtralArgs(MoEArgs):
    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        if "num_local_experts" in config:
            values["num_experts"] = config["num_local_experts"]
        values["norm_topk_prob"] = True  # Mixtral always renormalizes its top-k weights
        return values


@register("mixtral")
class MixtralModel(MoEModel):
    args_class = MixtralArgs
    hf_names = [
        (r"model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
        (r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w1\.weight", r"blk.\1.ffn_gate_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w3\.weight", r"blk.\1.ffn_up_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w2\.weight", r"blk.\1.ffn_down_exp.\2.weight"),
        (r"model\.layers\.(\d+)\.mlp\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj", r"blk.\1.ffn_gate_up_exps.weight"),
        (r"model\.layers\.(\d+)\.mlp\.experts\.down_proj", r"blk.\1.ffn_down_exps.weight"),
    ]
