"""The decoder-only transformer every architecture here is a case of, and its building blocks.

embeddings (x embed_scale) -> N x [RMSNorm, attention (optional q/k/v biases, per-head q/k RMSNorm,
RoPE from one of two tables, optional sliding window), optional post-norm, residual; RMSNorm, gated
MLP (SwiGLU or GeGLU; or a mixture of experts), optional post-norm, residual] -> RMSNorm -> logits.

An architecture is a file that registers a subclass of DecoderModel (and of DecoderArgs): it says
which of these parts it has, and how its Hugging Face and GGUF configs name them. Weights use GGUF
tensor names (`blk.{i}.attn_q.weight`, ...) whatever file they came from; `hf_names` maps an
architecture's own Hugging Face parameter names. The engine sees only `forward` and the decode step
its ops build for the model (ops.decode_step), so a new architecture does not touch it.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from mistralcli.models.rope import cos_sin, inv_frequencies
from mistralcli.quant_tensor import QuantTensor

SLIDING, FULL = "sliding_attention", "full_attention"


@dataclass
class DecoderArgs:
    """Hyperparameters under their Hugging Face config names (GGUF metadata is mapped onto them)."""

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
    sliding_window: int | None = None  # attention within the last sliding_window positions ...
    layer_types: list[str] | None = None  # ... in the layers marked "sliding_attention" (None: every layer)
    rope_interleaved: bool = False  # True for GGUF llama weights (llama.cpp permutes Q/K rows)
    hidden_act: str = "silu"  # the gate's activation: "silu" or "gelu_pytorch_tanh"
    query_pre_attn_scalar: float | None = None  # attention scale 1/sqrt(this); None: 1/sqrt(head_dim)
    rope_local_base_freq: float | None = None  # the sliding layers' own rope theta (Gemma 3)
    embed_scale: float = 1.0  # embeddings are multiplied by it (Gemma: sqrt(hidden_size))
    norm_offset: float = 0.0  # added to every RMSNorm weight at load (Gemma's HF weights store w - 1)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"{self.num_attention_heads} attention heads are not a multiple of "
                f"{self.num_key_value_heads} key/value heads"
            )
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"{len(self.layer_types)} layer types for {self.num_hidden_layers} layers")
        if self.hidden_act not in ("silu", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {self.hidden_act!r}")

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    def window(self, layer: int) -> int:
        """The layer's sliding window in positions, 0 for full attention."""
        if not self.sliding_window:
            return 0
        if self.layer_types is None or self.layer_types[layer] == SLIDING:
            return int(self.sliding_window)
        return 0

    def rope_table(self, layer: int) -> int:
        """0: the model's rope; 1: the sliding layers' own (rope_local_base_freq)."""
        return 1 if self.rope_local_base_freq is not None and self.window(layer) else 0

    @property
    def attn_scale(self) -> float:
        return 1.0 / math.sqrt(self.query_pre_attn_scalar or self.head_dim)

    @classmethod
    def from_dict(cls, config: dict) -> "DecoderArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        config = dict(config)
        if "hidden_activation" in config and "hidden_act" not in config:  # Gemma's name for it
            config["hidden_act"] = config["hidden_activation"]
        values = {k: v for k, v in config.items() if k in names}
        params = config.get("rope_parameters") or {}  # transformers >= 5 keeps rope settings here
        if FULL in params:  # per layer type (Gemma 3)
            if SLIDING in params and "rope_local_base_freq" not in values:
                values["rope_local_base_freq"] = params[SLIDING]["rope_theta"]
            params = params[FULL]
        if "rope_theta" not in values and "rope_theta" in params:
            values["rope_theta"] = params["rope_theta"]
        if values.get("rope_scaling") is None and params.get("rope_type", "default") != "default":
            values["rope_scaling"] = params
        for optional in ("head_dim", "hidden_act"):
            if values.get(optional) is None:
                values.pop(optional, None)
        return cls(**cls.adapt(values, config))

    @classmethod
    def adapt(cls, values: dict, config: dict) -> dict:
        """An architecture's own reading of its config (values: the fields found so far)."""
        return values

    @classmethod
    def adapt_gguf(cls, config: dict, metadata: dict, arch: str) -> dict:
        """An architecture's own reading of GGUF metadata, on top of loading.gguf_config's."""
        return config


class DecoderModel:
    """forward(token_ids (T,), positions (T,), cache) -> logits."""

    args_class = DecoderArgs
    hf_names: list[tuple[str, str]] = []  # this architecture's Hugging Face names -> GGUF names (regex)
    default_chat_template: str | None = None  # for files that carry none
    has_experts = False  # a mixture of experts decodes op by op (ops.decode_step covers dense MLPs)
    NORMS = ("attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm")

    def __init__(self, args: DecoderArgs, weights: dict[str, QuantTensor], ops):
        self.args = args
        self.ops = ops
        self.weights = weights
        self.embed = weights["token_embd.weight"]
        self.output = weights.get("output.weight", self.embed) if args.tie_word_embeddings else weights["output.weight"]
        self.output_norm = self._norm(weights["output_norm.weight"])
        freq_factors = weights.get("rope_freqs.weight")
        self.inv_freqs = [
            inv_frequencies(
                args.head_dim,
                args.rope_theta,
                args.rope_scaling,
                None if freq_factors is None else freq_factors.dequantize(),
            )
        ]
        if args.rope_local_base_freq is not None:
            self.inv_freqs.append(inv_frequencies(args.head_dim, args.rope_local_base_freq))
        self.layers = [self._layer(i) for i in range(args.num_hidden_layers)]

    def _norm(self, tensor: QuantTensor | None) -> np.ndarray | None:
        if tensor is None:
            return None
        weight = tensor.dequantize().astype(np.float32)
        return weight + np.float32(self.args.norm_offset) if self.args.norm_offset else weight

    def _layer(self, i: int) -> dict:
        w = self.weights
        get = lambda name: w.get(f"blk.{i}.{name}")
        layer = {
            name: get(f"{name}.weight")
            for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
        }
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            bias = get(f"{name}.bias")
            layer[f"{name}_bias"] = None if bias is None else bias.dequantize()
        for name in self.NORMS:
            layer[name] = self._norm(get(f"{name}.weight"))
        for name in ("attn_norm", "ffn_norm"):
            if layer[name] is None:
                raise KeyError(f"blk.{i}.{name}.weight")
        layer["window"] = self.args.window(i)
        layer["rope"] = self.args.rope_table(i)
        return layer

    def forward(self, token_ids: np.ndarray, positions: np.ndarray, cache, all_logits: bool = False) -> np.ndarray:
        """Logits (T, V) if all_logits else (1, V) for the last token. token_ids, positions: (T,) int."""
        return self.ops.logits(self.hidden_states(token_ids, positions, cache, last_only=not all_logits), self.output)

    def hidden_states(self, token_ids: np.ndarray, positions: np.ndarray, cache, last_only: bool = False) -> np.ndarray:
        """The last layer's output after the final norm (T, hidden), or (1, hidden) for the last token: what the
        output projection reads, and what a decoder's embeddings pool."""
        a, ops = self.args, self.ops
        num_tokens = len(token_ids)
        h = ops.embedding(self.embed, np.asarray(token_ids))  # (T, hidden)
        if a.embed_scale != 1.0:
            h = h * np.float32(a.embed_scale)
        angles = [cos_sin(np.asarray(positions), inv) for inv in self.inv_freqs]
        for i, layer in enumerate(self.layers):
            x = ops.rmsnorm(h, layer["attn_norm"], a.rms_norm_eps)
            q, k, v = self._linears(x, layer, ("attn_q", "attn_k", "attn_v"))
            q = self._heads(q, layer, "attn_q", a.num_attention_heads)
            k = self._heads(k, layer, "attn_k", a.num_key_value_heads)
            v = v.reshape(num_tokens, a.num_key_value_heads, a.head_dim)
            cos, sin = angles[layer["rope"]]
            q = ops.rope(q, cos, sin, a.rope_interleaved)
            k = ops.rope(k, cos, sin, a.rope_interleaved)
            attn = cache.attend(i, q, k, v, positions, a.attn_scale, ops, window=layer["window"])
            h = h + self._post(
                self._linear(attn.reshape(num_tokens, -1), layer, "attn_output"), layer, "post_attention_norm"
            )
            x = ops.rmsnorm(h, layer["ffn_norm"], a.rms_norm_eps)
            h = h + self._post(self.mlp(x, layer), layer, "post_ffw_norm")
        if last_only:
            h = h[-1:]
        return ops.rmsnorm(h, self.output_norm, a.rms_norm_eps)

    def mlp(self, x: np.ndarray, layer: dict) -> np.ndarray:
        """The gated MLP (T, hidden) -> (T, hidden); a mixture of experts overrides it."""
        ops = self.ops
        gate, up = ops.matmuls(x, [layer["ffn_gate"], layer["ffn_up"]])
        act = ops.geglu_tanh(gate, up) if self.args.hidden_act == "gelu_pytorch_tanh" else ops.swiglu(gate, up)
        return ops.matmul(act, layer["ffn_down"])

    def _heads(self, y, layer, name, num_heads) -> np.ndarray:
        """A projection's output y (T, heads * D) as (T, heads, D), each head RMSNorm-ed where the layer has
        `{name}_norm`."""
        norm = layer.get(f"{name}_norm")
        if norm is not None:
            y = self.ops.rmsnorm(y.reshape(-1, self.args.head_dim), norm, self.args.rms_norm_eps).reshape(y.shape)
        return y.reshape(len(y), num_heads, self.args.head_dim)

    def _post(self, y, layer, name):
        norm = layer.get(name)
        return y if norm is None else self.ops.rmsnorm(y, norm, self.args.rms_norm_eps)

    def _linear(self, x, layer, name):
        return self._linears(x, layer, (name,))[0]

    def _linears(self, x, layer, names) -> list[np.ndarray]:
        """The projections `names` of the same input x (one quantization of x for them all, where the ops
        share it), each with its bias where the layer has one."""
        ys = self.ops.matmuls(x, [layer[name] for name in names])
        biases = [layer[f"{name}_bias"] for name in names]
        return [y if bias is None else y + bias for y, bias in zip(ys, biases, strict=True)]
