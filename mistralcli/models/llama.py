"""Llama architecture (Llama 2/3, Mistral without sliding window, SmolLM).

embeddings -> N x [RMSNorm, GQA attention with RoPE, RMSNorm, SwiGLU MLP] -> RMSNorm -> logits.
Weights use GGUF tensor names (`blk.{i}.attn_q.weight`, ...), whatever file they came from.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from mistralcli.loading.quant_tensor import QuantTensor
from mistralcli.models import register
from mistralcli.models.rope import cos_sin, inv_frequencies


@dataclass
class LlamaArgs:
    """Hyperparameters under their Hugging Face config names."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    sliding_window: int | None = None  # Mistral: attention within a window; we cap the context to it
    rope_interleaved: bool = False  # True for GGUF llama weights (llama.cpp permutes Q/K rows)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{self.num_attention_heads} attention heads are not a multiple of "
                             f"{self.num_key_value_heads} key/value heads")

    @property
    def context_length(self) -> int:
        """Positions this model answers exactly: within a sliding window full attention is the same."""
        if self.sliding_window:
            return min(self.max_position_embeddings, self.sliding_window)
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, config: dict) -> "LlamaArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in config.items() if k in names}
        params = config.get("rope_parameters") or {}  # transformers >= 5 keeps rope settings here
        if "rope_theta" not in values and "rope_theta" in params:
            values["rope_theta"] = params["rope_theta"]
        if values.get("rope_scaling") is None and params.get("rope_type", "default") != "default":
            values["rope_scaling"] = params
        if values.get("head_dim") is None:
            values.pop("head_dim", None)
        return cls(**values)


@register("llama")
class LlamaModel:
    """forward(token_ids (T,), positions (T,), cache) -> logits."""

    args_class = LlamaArgs

    def __init__(self, args: LlamaArgs, weights: dict[str, QuantTensor], ops):
        self.args = args
        self.ops = ops
        self.weights = weights
        self.embed = weights["token_embd.weight"]
        self.output = weights.get("output.weight", self.embed) if args.tie_word_embeddings else weights["output.weight"]
        self.output_norm = weights["output_norm.weight"].dequantize()
        freq_factors = weights.get("rope_freqs.weight")
        self.inv_freq = inv_frequencies(args.head_dim, args.rope_theta, args.rope_scaling,
                                        None if freq_factors is None else freq_factors.dequantize())
        self.layers = [self._layer(i) for i in range(args.num_hidden_layers)]
        self.fused_decoder = ops.fused_decoder(self)

    def _layer(self, i: int) -> dict:
        w = self.weights
        get = lambda name: w.get(f"blk.{i}.{name}")  # noqa: E731
        layer = {name: get(f"{name}.weight") for name in
                 ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            bias = get(f"{name}.bias")
            layer[f"{name}_bias"] = None if bias is None else bias.dequantize()
        layer["attn_norm"] = get("attn_norm.weight").dequantize()
        layer["ffn_norm"] = get("ffn_norm.weight").dequantize()
        return layer

    def forward(self, token_ids: np.ndarray, positions: np.ndarray, cache, all_logits: bool = False) -> np.ndarray:
        """Logits (T, V) if all_logits else (1, V) for the last token. token_ids, positions: (T,) int."""
        a, ops = self.args, self.ops
        num_tokens = len(token_ids)
        if num_tokens == 1 and self.fused_decoder is not None and self.fused_decoder.can_run(cache):
            return self.fused_decoder(int(token_ids[0]), int(positions[0]), cache)
        h = ops.embedding(self.embed, np.asarray(token_ids))  # (T, hidden)
        cos, sin = cos_sin(np.asarray(positions), self.inv_freq)
        scale = 1.0 / np.sqrt(a.head_dim)
        for i, layer in enumerate(self.layers):
            x = ops.rmsnorm(h, layer["attn_norm"], a.rms_norm_eps)
            q = self._linear(x, layer, "attn_q").reshape(num_tokens, a.num_attention_heads, a.head_dim)
            k = self._linear(x, layer, "attn_k").reshape(num_tokens, a.num_key_value_heads, a.head_dim)
            v = self._linear(x, layer, "attn_v").reshape(num_tokens, a.num_key_value_heads, a.head_dim)
            q = ops.rope(q, cos, sin, a.rope_interleaved)
            k = ops.rope(k, cos, sin, a.rope_interleaved)
            attn = cache.attend(i, q, k, v, positions, scale, ops)
            h = h + self._linear(attn.reshape(num_tokens, -1), layer, "attn_output")
            x = ops.rmsnorm(h, layer["ffn_norm"], a.rms_norm_eps)
            gate = ops.matmul(x, layer["ffn_gate"])
            up = ops.matmul(x, layer["ffn_up"])
            h = h + ops.matmul(ops.swiglu(gate, up), layer["ffn_down"])
        if not all_logits:
            h = h[-1:]
        h = ops.rmsnorm(h, self.output_norm, a.rms_norm_eps)
        return ops.logits(h, self.output)

    def _linear(self, x, layer, name):
        y = self.ops.matmul(x, layer[name])
        bias = layer[f"{name}_bias"]
        return y if bias is None else y + bias
