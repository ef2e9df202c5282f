"""Which type each tensor gets: llama.cpp's per-tensor policy (llama-quant.cpp, llama_tensor_get_type), so a
Q4_K_M of ours holds the types llama-quantize's would.

A target names a mix: a default type and a llama.cpp file type. Then, tensor by tensor, in file order:
- vectors (norms, biases) and the tensors llama.cpp never quantizes (an MoE router) keep a float type;
- `--token-embedding-type` and `--output-tensor-type` win for those two tensors;
- otherwise a `--tensor-type REGEX=TYPE` (the first that matches) or, without `--pure`, the mix's rules: the
  output matrix (and a token embedding tied to it) at Q6_K, attn_v and ffn_down raised in the _M and _L mixes
  (the first and last eighth of the layers and every third between: `_more_bits`), attn_output raised in
  the Q2_K and Q3_K mixes;
- last, a type whose blocks do not divide the rows falls back as llama.cpp's does (Q4_K to Q5_0, Q6_K to Q8_0,
  ..., and F16 when no block divides them).
Left out: the rules for the 70B Llama shape (from its layer count) and the IQ1/IQ2/IQ3 mixes we do not write."""

import re
from dataclasses import dataclass, field

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from mistralcli.errors import MistralError

Q = GGMLQuantizationType
F = LlamaFileType


@dataclass(frozen=True)
class Mix:
    name: str
    default: GGMLQuantizationType
    file_type: LlamaFileType


MIXES = {
    m.name: m
    for m in (
        Mix("Q4_0", Q.Q4_0, F.MOSTLY_Q4_0),
        Mix("Q4_1", Q.Q4_1, F.MOSTLY_Q4_1),
        Mix("Q5_0", Q.Q5_0, F.MOSTLY_Q5_0),
        Mix("Q5_1", Q.Q5_1, F.MOSTLY_Q5_1),
        Mix("Q8_0", Q.Q8_0, F.MOSTLY_Q8_0),
        Mix("Q2_K", Q.Q2_K, F.MOSTLY_Q2_K),
        Mix("Q3_K_S", Q.Q3_K, F.MOSTLY_Q3_K_S),
        Mix("Q3_K_M", Q.Q3_K, F.MOSTLY_Q3_K_M),
        Mix("Q3_K_L", Q.Q3_K, F.MOSTLY_Q3_K_L),
        Mix("Q4_K_S", Q.Q4_K, F.MOSTLY_Q4_K_S),
        Mix("Q4_K_M", Q.Q4_K, F.MOSTLY_Q4_K_M),
        Mix("Q5_K_S", Q.Q5_K, F.MOSTLY_Q5_K_S),
        Mix("Q5_K_M", Q.Q5_K, F.MOSTLY_Q5_K_M),
        Mix("Q6_K", Q.Q6_K, F.MOSTLY_Q6_K),
        Mix("IQ4_NL", Q.IQ4_NL, F.MOSTLY_IQ4_NL),
        Mix("IQ4_XS", Q.IQ4_XS, F.MOSTLY_IQ4_XS),
        Mix("F16", Q.F16, F.MOSTLY_F16),
        Mix("BF16", Q.BF16, F.MOSTLY_BF16),
    )
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # as llama-quantize reads them
TENSOR_TYPES = {t.name: t for t in (Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)} | {
    t.name: t for t in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_NL, Q.IQ4_XS)
}
FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0, Q.IQ4_XS: Q.IQ4_NL}
NEVER_QUANTIZED = ("ffn_gate_inp.weight", "_norm.weight", "attn_rel_b.weight", "position_embd", "token_types")


def mix_named(name: str, flag: str = "--type") -> Mix:
    key = ALIASES.get(name.upper(), name.upper())
    if key not in MIXES:
        names = ", ".join([*MIXES, *ALIASES])
        raise MistralError(f"{flag} {name!r}: not a type this quantizes to (it takes: {names})")
    return MIXES[key]


def tensor_type_named(name: str, what: str) -> GGMLQuantizationType:
    key = name.upper()
    if key not in TENSOR_TYPES:
        raise MistralError(f"{what} {name!r}: not a tensor type (it takes: {', '.join(TENSOR_TYPES)})")
    return TENSOR_TYPES[key]


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # rows first, as numpy has it
    source: GGMLQuantizationType
    target: GGMLQuantizationType
    why: str  # "mix", "Q4_K_M rule", "vector", "rows do not divide Q4_K", "--tensor-type ...", ...

    @property
    def size_before(self) -> int:
        return _nbytes(self.source, self.shape)

    @property
    def size_after(self) -> int:
        return _nbytes(self.target, self.shape)


def _nbytes(qtype, shape) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


@dataclass
class ModelShape:
    """What the rules read of the model (its GGUF metadata, or its config.json)."""

    architecture: str
    layers: int
    heads: int = 1
    kv_heads: int = 1
    experts: int = 0

    @property
    def gqa(self) -> int:
        return self.heads // max(self.kv_heads, 1)

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ModelShape":
        arch = metadata.get("general.architecture", "")

        def value(key, default):
            v = metadata.get(f"{arch}.{key}", default)
            return int(max(v) if isinstance(v, list) else v)

        heads = value("attention.head_count", 1)
        return cls(
            arch, value("block_count", 0), heads, value("attention.head_count_kv", heads), value("expert_count", 0)
        )

    @classmethod
    def from_config(cls, architecture: str, config: dict) -> "ModelShape":
        """From a Hugging Face style config (config.json, or the one our loader makes of a GGUF's metadata)."""
        heads = int(config.get("num_attention_heads") or 1)
        return cls(
            architecture,
            int(config.get("num_hidden_layers") or 0),
            heads,
            int(config.get("num_key_value_heads") or heads),
            int(config.get("num_local_experts") or config.get("num_experts") or 0),
        )


@dataclass
class Options:
    overrides: list[tuple[re.Pattern, GGMLQuantizationType]] = field(default_factory=list)
    output_type: GGMLQuantizationType | None = None
    token_embedding_type: GGMLQuantizationType | None = None
    pure: bool = False
    has_imatrix: bool = False


def plan(tensors, mix: Mix, model: ModelShape, options: Options) -> list[TensorPlan]:
    """tensors: (name, shape rows first, source type) in file order. The type of each, and why, in that order.

    The rules count attn_v and ffn_down tensors as llama.cpp meets them: by layer, then by name (its loader's
    order), whatever the order of the file."""
    state = _Counters([t[0] for t in tensors])
    chosen = {}
    for name, shape, source in sorted(tensors, key=lambda t: (_layer(t[0]), t[0])):
        chosen[name] = _choose(name, shape, source, mix, model, options, state)
    return [TensorPlan(name, shape, source, *chosen[name]) for name, shape, source in tensors]


def _layer(name: str) -> int:
    found = re.match(r"blk\.(\d+)\.", name)
    return int(found.group(1)) if found else -1


class _Counters:
    def __init__(self, names: list[str]):
        self.n_attn_v = sum(_category(n) == "attn_v" for n in names)
        self.tied = "output.weight" not in names
        self.i_attn_v = 0
        self.i_ffn_down = 0


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, category in (
        ("attn_qkv.weight", "attn_v"),
        ("attn_kv_b.weight", "attn_v"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if key in name:
            return category
    return "other"


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _choose(name, shape, source, mix: Mix, model: ModelShape, options: Options, state: _Counters):
    dense = source if source in (Q.F32, Q.F16, Q.BF16) else Q.F32
    if len(shape) < 2:
        return Q.F32, "vector"
    if any(key in name for key in NEVER_QUANTIZED) or not name.endswith("weight"):
        return dense, "never quantized"
    category = _category(name)
    if options.token_embedding_type is not None and category == "token_embd":
        return options.token_embedding_type, "--token-embedding-type"
    if options.output_type is not None and category == "output":
        return options.output_type, "--output-tensor-type"
    qtype, why = mix.default, "mix"
    if qtype in (Q.F16, Q.BF16):
        return qtype, why
    for pattern, forced in options.overrides:
        if pattern.search(name):
            qtype, why = forced, f"--tensor-type {pattern.pattern}"
            break
    else:
        if not options.pure:
            chosen = _rule(name, shape, category, mix, model, options, state)
            if chosen != qtype:
                qtype, why = chosen, f"{mix.name} rule"
    return _fallback(qtype, why, shape[-1])


def _fallback(qtype, why, columns):
    if columns % GGML_QUANT_SIZES[qtype][0]:
        fallback = FALLBACK.get(qtype, qtype)
        if columns % GGML_QUANT_SIZES[fallback][0]:
            fallback = Q.F16
        return fallback, f"{why}: {qtype.name}, but rows of {columns} do not divide into its blocks"
    return qtype, why


def _rule(name, shape, category, mix: Mix, model: ModelShape, options: Options, state: _Counters):
    """llama_tensor_get_type_impl, for the mixes we write."""
    m, new = mix.name, mix.default
    falcon = model.architecture == "falcon"
    if category == "output" or (state.tied and category == "token_embd"):
        if falcon or shape[-1] % GGML_QUANT_SIZES[new][0]:
            return Q.Q8_0
        return Q.Q6_K if new != Q.Q8_0 else new
    if category == "attn_v":
        i, n = state.i_attn_v, state.n_attn_v
        state.i_attn_v += 1
        if m == "Q2_K":
            new = Q.Q4_K if model.gqa >= 4 else Q.Q3_K
        elif m == "Q3_K_M":
            new = Q.Q5_K if i < 2 else Q.Q4_K
        elif m == "Q3_K_L":
            new = Q.Q5_K
        elif m in ("IQ4_NL", "IQ4_XS") and model.gqa >= 4:
            new = Q.Q5_K
        elif m in ("Q4_K_M", "Q5_K_M") and _more_bits(i, n):
            new = Q.Q6_K
        elif m == "Q4_K_S" and i < 4:
            new = Q.Q5_K
        if model.experts == 8:
            new = Q.Q8_0
        return new
    if category == "attn_k":
        return Q.Q8_0 if model.experts == 8 else new
    if category == "ffn_down":
        i, n = state.i_ffn_down, model.layers
        if model.experts > 1:
            i = _layer(name)
            if not 0 <= i < n:
                raise MistralError(f"{name}: cannot tell its layer (of {n})")
        state.i_ffn_down += 1
        if m == "Q2_K":
            return Q.Q3_K
        if m == "Q3_K_M":
            return Q.Q5_K if i < n // 16 else Q.Q4_K if not falcon or _more_bits(i, n) else Q.Q3_K
        if m == "Q3_K_L":
            return Q.Q4_K if falcon else Q.Q5_K
        if m == "Q4_K_M":
            if falcon:
                return Q.Q6_K if i < n // 16 else Q.Q5_K if _more_bits(i, n) else Q.Q4_K
            return Q.Q6_K if _more_bits(i, n) else new
        if i < n // 8 and m in ("IQ4_NL", "IQ4_XS") and not options.has_imatrix:
            return Q.Q5_K
        if m == "Q5_K_M":
            return Q.Q6_K if _more_bits(i, n) else new
        if m == "Q4_K_S" and not falcon and i < n // 8:
            return Q.Q5_K
        if m in ("Q4_0", "Q5_0") and options.has_imatrix and i < n // 8:
            return Q.Q4_1 if m == "Q4_0" else Q.Q5_1
        return new
    if category == "attn_output":
        if falcon:
            return Q.Q4_K if m == "Q3_K_L" else new
        if model.experts == 8:
            raised = ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ4_XS")
            return Q.Q5_K if m in raised else new
        return {"Q2_K": Q.Q3_K, "Q3_K_M": Q.Q4_K, "Q3_K_L": Q.Q5_K}.get(m, new)
    return new


def bits_per_weight(plans: list[TensorPlan]) -> float:
    weights = sum(int(np.prod(p.shape)) for p in plans)
    return round(sum(p.size_after for p in plans) * 8 / weights, 3) if weights else 0.0
