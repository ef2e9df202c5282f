"""Phi-3 (mini, medium; 4k context): the llama-style decoder with q, k and v in one fused projection
(`attn_qkv`) and the MLP's gate and up in one (`ffn_up`, gate rows first), split here into row views
of the same (possibly quantized) tensors, so every kernel, the fused decode step included, sees the
usual separate matrices. Partial rotary embeddings and LongRoPE (the 128k models) are refused."""

from dataclasses import dataclass

from mistralcli.models import register
from mistralcli.models.decoder import DecoderArgs, DecoderModel
from mistralcli.quant_tensor import QuantTensor


@dataclass
class Phi3Args(DecoderArgs):
    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        factor = (config.get("rope_parameters") or {}).get("partial_rotary_factor", 1.0)
        if config.get("partial_rotary_factor", factor) != 1.0:
            raise ValueError(f"partial rotary embeddings ({factor}) are not supported")
        return values


def _rows(tensor: QuantTensor, start: int, stop: int, name: str) -> QuantTensor:
    return QuantTensor(name, tensor.ggml_type, (stop - start, tensor.shape[1]), tensor.data[start:stop])


@register("phi3")
class Phi3Model(DecoderModel):
    args_class = Phi3Args
    hf_names = [
        (r"model\.layers\.(\d+)\.self_attn\.qkv_proj\.weight", r"blk.\1.attn_qkv.weight"),
        (r"model\.layers\.(\d+)\.mlp\.gate_up_proj\.weight", r"blk.\1.ffn_up.weight"),
    ]

    def _layer(self, i: int) -> dict:
        w, p, a = self.weights, f"blk.{i}.", self.args
        if p + "attn_qkv.weight" in w and p + "attn_q.weight" not in w:
            qkv = w[p + "attn_qkv.weight"]
            q_rows, kv_rows = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
            if qkv.shape[0] != q_rows + 2 * kv_rows:
                raise ValueError(f"{qkv.name} has {qkv.shape[0]} rows, not {q_rows + 2 * kv_rows}")
            w[p + "attn_q.weight"] = _rows(qkv, 0, q_rows, p + "attn_q.weight")
            w[p + "attn_k.weight"] = _rows(qkv, q_rows, q_rows + kv_rows, p + "attn_k.weight")
            w[p + "attn_v.weight"] = _rows(qkv, q_rows + kv_rows, q_rows + 2 * kv_rows, p + "attn_v.weight")
        if p + "ffn_gate.weight" not in w:
            gate_up = w[p + "ffn_up.weight"]
            if gate_up.shape[0] != 2 * a.intermediate_size:
                raise ValueError(f"{gate_up.name} has {gate_up.shape[0]} rows, not 2 x {a.intermediate_size}")
            w[p + "ffn_gate.weight"] = _rows(gate_up, 0, a.intermediate_size, p + "ffn_gate.weight")
            w[p + "ffn_up.weight"] = _rows(gate_up, a.intermediate_size, 2 * a.intermediate_size, p + "ffn_up.weight")
        return super()._layer(i)
