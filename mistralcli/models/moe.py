"""The mixture-of-experts MLP the MoE architectures share (mixtral.py, qwen2_moe.py).

A router picks each token's top-k experts (softmax over all experts, then the k largest, renormalized
or not); the tokens are grouped by expert and each expert, a SwiGLU MLP on quantized weights, runs once
over its tokens; the outputs are added back weighted (ops.route_experts, group_by_expert,
scatter_add_rows: Numba on the CPU). A shared expert, gated by a sigmoid, may add to every token
(Qwen2-MoE). Layers listed as dense keep the plain MLP.

Experts come as GGUF's stacked tensors (`blk.N.ffn_{gate,up,down}_exps.weight`, (E, rows, cols)), as
Hugging Face's per-expert ones (mapped by each architecture to `blk.N.ffn_{gate,up,down}_exp.J.weight`)
or as transformers 5's fused `gate_up_proj` (`blk.N.ffn_gate_up_exps.weight`).
"""

from dataclasses import dataclass

import numpy as np

from mistralcli.models.decoder import DecoderArgs, DecoderModel
from mistralcli.quant_tensor import QuantTensor


@dataclass
class MoEArgs(DecoderArgs):
    num_experts: int = 0
    num_experts_per_tok: int = 2
    norm_topk_prob: bool = True
    shared_expert_intermediate_size: int = 0
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.num_experts < 1 or not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(f"{self.num_experts_per_tok} of {self.num_experts} experts per token")

    def sparse(self, layer: int) -> bool:
        return layer not in (self.mlp_only_layers or ()) and (layer + 1) % self.decoder_sparse_step == 0

    @classmethod
    def adapt_gguf(cls, config: dict, metadata: dict, arch: str) -> dict:
        config = dict(config)
        config["num_experts"] = metadata.get(f"{arch}.expert_count", 0)
        config["num_experts_per_tok"] = metadata.get(f"{arch}.expert_used_count", 2)
        return config


def _expert(tensor: QuantTensor, e: int, rows: slice = slice(None)) -> QuantTensor:
    """Expert e's matrix of a stacked (E, rows, cols) tensor, as a 2-D view."""
    data = tensor.data[e][rows]
    return QuantTensor(f"{tensor.name}[{e}]", tensor.ggml_type, (data.shape[0], tensor.shape[-1]), data)


class MoEModel(DecoderModel):
    args_class = MoEArgs
    has_experts = True
    has_shared_expert = False

    def _layer(self, i: int) -> dict:
        layer = super()._layer(i)
        if not self.args.sparse(i):
            return layer
        w, prefix, a = self.weights, f"blk.{i}.", self.args
        layer["router"] = w[prefix + "ffn_gate_inp.weight"]
        if prefix + "ffn_gate_exps.weight" in w:
            layer["experts"] = [
                tuple(_expert(w[f"{prefix}ffn_{name}_exps.weight"], e) for name in ("gate", "up", "down"))
                for e in range(a.num_experts)
            ]
        elif prefix + "ffn_gate_up_exps.weight" in w:
            gate_up, down = w[prefix + "ffn_gate_up_exps.weight"], w[prefix + "ffn_down_exps.weight"]
            half = gate_up.shape[1] // 2
            layer["experts"] = [
                (_expert(gate_up, e, slice(0, half)), _expert(gate_up, e, slice(half, None)), _expert(down, e))
                for e in range(a.num_experts)
            ]
        else:
            layer["experts"] = [
                tuple(w[f"{prefix}ffn_{name}_exp.{e}.weight"] for name in ("gate", "up", "down"))
                for e in range(a.num_experts)
            ]
        if self.has_shared_expert:
            layer["shared"] = tuple(w[f"{prefix}ffn_{name}_shexp.weight"] for name in ("gate", "up", "down"))
            gate = w[prefix + "ffn_gate_inp_shexp.weight"]
            layer["shared_gate"] = QuantTensor(
                gate.name, gate.ggml_type, (1, gate.shape[-1]), np.asarray(gate.data).reshape(1, -1)
            )
        return layer

    def mlp(self, x: np.ndarray, layer: dict) -> np.ndarray:
        if "experts" not in layer:
            return super().mlp(x, layer)
        ops, k = self.ops, self.args.num_experts_per_tok
        ids, weights = ops.route_experts(ops.matmul(x, layer["router"]), k, self.args.norm_topk_prob)
        order, offsets = ops.group_by_expert(ids, self.args.num_experts)
        out = np.zeros_like(x, dtype=np.float32)
        flat_weights = weights.reshape(-1)
        for e, (gate, up, down) in enumerate(layer["experts"]):
            chosen = order[offsets[e] : offsets[e + 1]]
            if not len(chosen):
                continue
            tokens = chosen // k
            xe = np.ascontiguousarray(x[tokens])
            y = ops.matmul(ops.swiglu(ops.matmul(xe, gate), ops.matmul(xe, up)), down)
            ops.scatter_add_rows(out, y, tokens, flat_weights[chosen])
        if "shared" in layer:
            gate, up, down = layer["shared"]
            shared = ops.matmul(ops.swiglu(ops.matmul(x, gate), ops.matmul(x, up)), down)
            g = ops.matmul(x, layer["shared_gate"])  # (T, 1)
            out += shared / (np.float32(1.0) + np.exp(-g))
        return out
