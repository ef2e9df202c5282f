"""A Hugging Face checkpoint (config.json, *.safetensors in F32/F16/BF16, tokenizer.json) as a source for
mistral quantize, laid out as llama.cpp's convert_hf_to_gguf.py lays it out, so the file we write is the one
llama.cpp would convert and then quantize:

- the tensors under their GGUF names (mistralcli.loading.safetensors_dir), a llama's Q and K rows permuted
  into the adjacent-pair rope order its converter writes (lazily, a tensor at a time);
- the architecture's metadata from config.json, through the gguf package's writer methods (their key names
  and value types);
- the tokenizer as the converter writes a byte-level BPE one: every id's token (`[PADi]` where the vocabulary
  has a hole), its type (added special tokens, and added ones that look special such as `<|...|>`, CONTROL;
  other added ones USER_DEFINED), the merges, special token ids, add-BOS flags and chat template through
  gguf's SpecialVocab; and `tokenizer.ggml.pre`, the llama.cpp pre-tokenizer whose split of a probe text is
  the tokenizer.json's own (we detect it by behaviour; llama.cpp's converter by a hash of token ids).

Left out: SentencePiece tokenizers (Llama 2, Gemma), rope scaling other than linear, architectures beyond
the dense llama / mistral / qwen2 / qwen3 ones: each a clear error."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, RopeScalingType, SpecialVocab

from mistralcli.errors import MistralError, ModelLoadError
from mistralcli.loading import safetensors_dir
from mistralcli.quant_tensor import QuantTensor

# config.json model_type -> (GGUF architecture, our model class's architecture name)
ARCHITECTURES = {"llama": ("llama", "llama"), "mistral": ("llama", "mistral"), "qwen2": ("qwen2", "qwen2")}
ARCHITECTURES["qwen3"] = ("qwen3", "qwen3")
PROBE = (
    "Hello world! It's 2024: 12345 apples, 3.14159 pies.\n\n  Indented\tTabbed  \r\n"
    "naïve café 東京 🚀 I've you'll we'RE don't ----====++++ <tag>x</tag> a  b   c\n"
)
CONTROL, USER_DEFINED, NORMAL, UNUSED = 3, 4, 1, 5


@dataclass
class HFSource:
    """What mistral quantize reads of a source: metadata, each key's value type, the tensors (GGUF names)."""

    path: Path
    metadata: dict
    value_types: dict = field(repr=False)
    tensors: dict = field(repr=False)

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]


class _Permuted:
    """A llama Q or K matrix whose rows are permuted when read (llama.cpp's converter's permute)."""

    def __init__(self, tensor: QuantTensor, heads: int):
        self.name, self.ggml_type, self.shape, self.data = tensor.name, tensor.ggml_type, tensor.shape, tensor.data
        self._tensor, self._heads = tensor, heads

    def dequantize(self) -> np.ndarray:
        w = self._tensor.dequantize()
        h = self._heads
        return w.reshape(h, 2, w.shape[0] // h // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def is_hf_source(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def open_hf(directory: Path) -> HFSource:
    config = safetensors_dir.read_config(directory)
    model_type = config.get("model_type", "")
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            directory,
            f"architecture {model_type!r}: not one this quantizes from safetensors (it takes: "
            f"{', '.join(ARCHITECTURES)})",
        )
    arch, ours = ARCHITECTURES[model_type]
    from mistralcli.models import get_architecture

    weights = safetensors_dir.load_weights(directory, get_architecture(ours).hf_names)
    if "token_embd.weight" not in weights:
        raise ModelLoadError(directory, "no model.embed_tokens.weight among its tensors")
    if arch == "llama":
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads", heads)
        for name in list(weights):
            if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
                weights[name] = _Permuted(weights[name], heads if "attn_q" in name else kv_heads)
    writer = GGUFWriter(None, arch)
    _architecture(writer, arch, config, directory)
    _tokenizer(writer, directory, config)
    metadata, types = {}, {}
    for key, value in writer.kv_data[0].items():
        metadata[key] = value.value
        types[key] = [int(value.type), None if value.sub_type is None else int(value.sub_type)]
    return HFSource(directory, metadata, types, weights)


def _architecture(writer: GGUFWriter, arch: str, config: dict, directory: Path) -> None:
    def need(key):
        if key not in config:
            raise ModelLoadError(directory / "config.json", f"no {key!r} in it")
        return config[key]

    heads = need("num_attention_heads")
    writer.add_type("model")
    writer.add_name(directory.name)
    writer.add_block_count(need("num_hidden_layers"))
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(need("hidden_size"))
    writer.add_feed_forward_length(need("intermediate_size"))
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    rope = config.get("rope_parameters") or {}  # transformers 5 keeps rope_theta there
    writer.add_rope_freq_base(float(config.get("rope_theta", rope.get("rope_theta", 1e4))))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(need("vocab_size"))
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    scaling = config.get("rope_scaling") or rope
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif kind not in (None, "default"):
        raise ModelLoadError(directory / "config.json", f"rope scaling {kind!r}: not one this converts yet")
    if config.get("sliding_window") and config.get("use_sliding_window", True) and arch != "qwen2":
        writer.add_sliding_window(config["sliding_window"])


def _tokenizer(writer: GGUFWriter, directory: Path, config: dict) -> None:
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(directory, "no tokenizer.json (the GGUF needs the tokenizer)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelLoadError(path, f"not a tokenizer this reads ({exc})") from None
    spec = tok.to_str()
    if '"ByteLevel"' not in spec or '"type":"BPE"' not in spec.replace(" ", ""):
        raise ModelLoadError(path, "not a byte-level BPE tokenizer (SentencePiece ones are not converted yet)")
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(int(config.get("vocab_size", 0)), max(vocab.values()) + 1)
    by_id = {i: t for t, i in vocab.items()}
    added = tok.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = by_id[i]
        tokens.append(token)
        if i in added:
            types.append(CONTROL if added[i].special or _looks_special(token) else USER_DEFINED)
        else:
            types.append(NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tok, path))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = SpecialVocab(directory, load_merges=True, n_vocab=size)
    special.add_to_gguf(writer, quiet=True)
    if "tokenizer.ggml.add_bos_token" not in writer.kv_data[0]:  # as our loader reads a directory: BOS if the
        bos = special.special_token_ids.get("bos")  # post-processor puts it first
        writer.add_add_bos_token(bool(bos is not None and tok.encode("a").ids[:1] == [bos]))
    template = directory / "chat_template.jinja"
    if "tokenizer.chat_template" not in writer.kv_data[0] and template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))


def _looks_special(token: str) -> bool:
    """The converter's does_token_look_special: added tokens some models leave unmarked."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _pre_tokenizer(tok, path: Path) -> str:
    """The llama.cpp pre-tokenizer (tokenizer.ggml.pre) that splits a probe text as this tokenizer does."""
    from mistralcli.tokenizer.gguf_vocab import BPE_PRE_TOKENIZERS

    if tok.pre_tokenizer is None:
        raise ModelLoadError(path, "no pre-tokenizer in it")
    theirs = [piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(PROBE)]
    ignore_merges = '"ignore_merges":true' in tok.to_str().replace(" ", "")
    for name in ("smollm", "gpt-2", "qwen2", "llama-bpe"):  # one name each of the families llama.cpp knows
        make, ignores = BPE_PRE_TOKENIZERS[name]
        if ignores == ignore_merges and [p for p, _ in make().pre_tokenize_str(PROBE)] == theirs:
            return name
    raise MistralError(f"{path}: its pre-tokenizer is none of those llama.cpp knows (GPT-2, SmolLM, Qwen2, Llama 3)")
