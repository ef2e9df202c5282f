"""BERT-family encoders (BERT, MiniLM, the sentence-transformers models built on them): bidirectional attention,
absolute position and token-type embeddings, post-norm LayerNorm, the exact GELU. They embed, they do not
generate: `embed(sequences)` runs many sequences in one forward, packed (each attends to its own tokens, no
padding), and returns their hidden states, which the embedder pools. Weights go by llama.cpp's BERT tensor names."""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from mistralcli.models import register
from mistralcli.quant_tensor import QuantTensor

HF_NAMES = [
    (r"(?:bert\.)?embeddings\.word_embeddings\.weight", "token_embd.weight"),
    (r"(?:bert\.)?embeddings\.position_embeddings\.weight", "position_embd.weight"),
    (r"(?:bert\.)?embeddings\.token_type_embeddings\.weight", "token_types.weight"),
    (r"(?:bert\.)?embeddings\.LayerNorm\.(weight|bias)", r"token_embd_norm.\1"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.query\.(weight|bias)", r"blk.\1.attn_q.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.key\.(weight|bias)", r"blk.\1.attn_k.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.value\.(weight|bias)", r"blk.\1.attn_v.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blk.\1.attn_output.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)", r"blk.\1.attn_output_norm.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blk.\1.ffn_up.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blk.\1.ffn_down.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)", r"blk.\1.layer_output_norm.\2"),
]
_LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down")
_NORMS = ("attn_output_norm", "layer_output_norm")


@dataclass
class BertArgs:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"

    def __post_init__(self):
        if self.hidden_act != "gelu":
            raise ValueError(f"unsupported activation {self.hidden_act!r} (BERT's is the exact gelu)")
        if self.position_embedding_type != "absolute":
            raise ValueError(f"unsupported position embeddings {self.position_embedding_type!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, config: dict) -> "BertArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    @classmethod
    def adapt_gguf(cls, config: dict, metadata: dict, arch: str) -> dict:
        return config


@register("bert")
class BertModel:
    """embed(token_ids (T,), token_types (T,), starts (B + 1,)) -> the last layer's hidden states (T, hidden)."""

    args_class = BertArgs
    hf_names = HF_NAMES
    default_chat_template = None
    is_encoder = True

    def __init__(self, args: BertArgs, weights: dict[str, QuantTensor], ops):
        self.args, self.ops, self.weights = args, ops, weights
        self.embed = weights["token_embd.weight"]
        self.positions = _dense(weights["position_embd.weight"])
        self.token_types = _dense(weights["token_types.weight"])
        self.embed_norm = (_dense(weights["token_embd_norm.weight"]), _dense(weights["token_embd_norm.bias"]))
        self.layers = [self._layer(i) for i in range(args.num_hidden_layers)]

    def _layer(self, i: int) -> dict:
        layer = {}
        for name in _LINEARS:
            layer[name] = self.weights[f"blk.{i}.{name}.weight"]
            layer[name + ".bias"] = _dense(self.weights[f"blk.{i}.{name}.bias"])
        # q, k and v as one product (one larger GEMM runs faster than three)
        qkv = ("attn_q", "attn_k", "attn_v")
        layer["attn_qkv"] = QuantTensor.from_array(
            f"blk.{i}.attn_qkv.weight", np.concatenate([_dense(layer[n]) for n in qkv])
        )
        layer["attn_qkv.bias"] = np.concatenate([layer[n + ".bias"] for n in qkv])
        for name in _NORMS:
            layer[name] = (_dense(self.weights[f"blk.{i}.{name}.weight"]), _dense(self.weights[f"blk.{i}.{name}.bias"]))
        return layer

    def embed_tokens(self, token_ids: np.ndarray, token_types: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The hidden states of packed sequences: token_ids, token_types (T,), starts (B + 1,) their bounds."""
        a, ops = self.args, self.ops
        lengths = np.diff(starts)
        if lengths.max(initial=0) > a.max_position_embeddings:
            raise ValueError(f"a sequence of {lengths.max()} tokens is longer than {a.max_position_embeddings}")
        positions = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.zeros(0, dtype=np.int64)
        h = ops.embedding(self.embed, np.asarray(token_ids)) + self.positions[positions] + self.token_types[token_types]
        h = ops.layernorm(h, *self.embed_norm, a.layer_norm_eps)
        num_tokens, heads, dim = len(token_ids), a.num_attention_heads, a.head_dim
        scale = 1.0 / math.sqrt(dim)
        for layer in self.layers:
            qkv = self._linear(h, layer, "attn_qkv").reshape(num_tokens, 3, heads, dim)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
            attn = ops.encoder_attention(q, k, v, starts, scale).reshape(num_tokens, -1)
            h = ops.layernorm(
                h + self._linear(attn, layer, "attn_output"), *layer["attn_output_norm"], a.layer_norm_eps
            )
            up = ops.gelu(self._linear(h, layer, "ffn_up"))
            h = ops.layernorm(h + self._linear(up, layer, "ffn_down"), *layer["layer_output_norm"], a.layer_norm_eps)
        return h

    def _linear(self, x: np.ndarray, layer: dict, name: str) -> np.ndarray:
        out = self.ops.matmul(x, layer[name])
        out += layer[name + ".bias"]
        return out


def _dense(tensor: QuantTensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.dequantize(), dtype=np.float32)
