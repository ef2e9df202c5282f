"""load_model(spec): the model, its tokenizer and its chat template, ready to generate."""

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gguf import GGMLQuantizationType as QT

from mistralcli.chat_template import ChatTemplate
from mistralcli.engine.embedder import POOLINGS, EmbeddingConfig
from mistralcli.errors import ModelLoadError
from mistralcli.json_file import read_json
from mistralcli.loading import gguf_config, safetensors_dir
from mistralcli.loading.gguf_file import open_gguf
from mistralcli.loading.resolve import resolve_model
from mistralcli.models import HF_MODEL_TYPES, get_architecture
from mistralcli.ops import get_ops
from mistralcli.sampling import recommended_sampling
from mistralcli.tokenizer import Tokenizer

log = logging.getLogger("mistralcli.loading")


@dataclass
class LoadedModel:
    name: str  # the model's one id, in every output (run --json, bench, /v1/models): see model_id
    path: Path
    model: object
    tokenizer: Tokenizer
    chat_template: ChatTemplate | None
    context_length: int
    sampling_defaults: dict  # the model's recommended SamplingParams values (may be empty)
    embedding: EmbeddingConfig | None = None  # an embedding model's pooling (a decoder's: see with_pooling)

    @property
    def is_encoder(self) -> bool:
        """An encoder embeds and does not generate."""
        return getattr(self.model, "is_encoder", False)

    def with_pooling(self, pooling: str | None) -> "LoadedModel":
        """Embeddings of this model pooled that way (--pooling): a decoder's final hidden states by mean or last
        token, normalised, as llama.cpp's --embedding; an encoder's pooling replaced. None: as it is."""
        if pooling is None:
            return self
        if pooling not in POOLINGS:
            raise ValueError(f"{pooling!r} is not one of {', '.join(POOLINGS)}")
        base = self.embedding or EmbeddingConfig(pooling, True, self.context_length, self.model.args.hidden_size)
        self.embedding = dataclasses.replace(base, pooling=pooling)
        return self


def load_tokenizer(spec: str | None) -> tuple[Tokenizer, Path]:
    """Just the tokenizer (no weights are read) for `mistral tokenize`."""
    path = resolve_model(spec)
    if _is_hf_directory(path):
        return Tokenizer.from_directory(path), path
    gguf = open_gguf(_gguf_in(path))
    return Tokenizer.from_gguf_metadata(gguf.metadata, gguf.path), gguf.path


def load_model(
    spec: str | None, backend: str = "cpu", threads: int | None = None, isq: str | None = None, progress=None
) -> LoadedModel:
    """isq: a type or mix of mistral quantize (Q4_K_M, Q8_0, ...) to quantize the weights to as they load
    (mistralcli.quantize.isq); progress(plan, done, total) after each tensor then."""
    mix = None
    if isq is not None:
        from mistralcli.quantize.policy import mix_named

        mix = mix_named(isq, "--isq")
    path = resolve_model(spec)
    log.info("loading %s from %s", spec or "the default model", path)
    began = time.perf_counter()
    ops = get_ops(backend, threads=threads)
    if _is_hf_directory(path):
        loaded = _load_directory(path, ops, mix, progress)
    else:
        loaded = _load_gguf(_gguf_in(path), ops, mix, progress)
    loaded.name = model_id(spec, loaded.path)
    log.info(
        "loaded %s in %.2f s: %s, context %d, %d threads",
        loaded.name, time.perf_counter() - began, type(loaded.model).__name__, loaded.context_length,
        getattr(ops, "num_threads", 0),
    )  # fmt: skip
    return loaded


def model_id(spec: str | None, path: Path) -> str:
    """The id a model goes by: a GGUF file's name without .gguf (`SmolLM2-135M-Instruct.Q4_1`), a model
    directory's name, or the repo id a hub model was asked for (`org/name`, `org/name/file.gguf`
    without .gguf). Not the GGUF's general.name, which is free text ("Smollm2 135M 8k Lc100K Mix1 Ep2")."""
    if spec and not Path(spec).expanduser().exists():  # a hub repo id
        return spec.removesuffix(".gguf")
    return path.stem if path.is_file() else path.name


def _is_hf_directory(path: Path) -> bool:
    """A Hugging Face model directory (config.json); anything else is, or holds, a GGUF file."""
    return path.is_dir() and (path / "config.json").is_file()


def _gguf_in(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) != 1:
        problem = "no .gguf file and no config.json" if not files else f"{len(files)} .gguf files; name one"
        raise ModelLoadError(path, problem)
    return files[0]


def _build(path: Path, arch: str, config: dict, weights: dict, ops):
    cls = get_architecture(arch)
    if cls is None:
        raise ModelLoadError(path, f"unsupported architecture {arch!r}")
    try:
        args = cls.args_class.from_dict(config)
        return cls(args, weights, ops), args
    except KeyError as exc:
        raise ModelLoadError(path, f"missing tensor {exc.args[0]}") from None
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(path, f"invalid model configuration ({exc})") from None


def _in_situ(mix, tensors, config: dict, arch: str, progress):
    from mistralcli.quantize.isq import InSitu
    from mistralcli.quantize.policy import ModelShape

    return InSitu(mix, tensors, ModelShape.from_config(arch, config), progress)


def _load_gguf(path: Path, ops, mix=None, progress=None) -> LoadedModel:
    gguf = open_gguf(path)
    arch = gguf.architecture
    if gguf.metadata.get("split.count", 1) > 1:
        count = gguf.metadata["split.count"]
        raise ModelLoadError(
            path, f"a split GGUF ({count} files) cannot be loaded yet: merge it with llama-gguf-split --merge"
        )
    if arch == "llama" and gguf.metadata.get("llama.expert_count"):  # Mixtral's GGUFs say llama
        arch = "mixtral"
    if get_architecture(arch) is None:
        raise ModelLoadError(path, f"unsupported architecture {arch!r}")
    config = gguf_config.config_from_gguf(gguf.metadata, gguf.tensors.keys(), path)
    config = get_architecture(arch).args_class.adapt_gguf(config, gguf.metadata, gguf.architecture)
    weights = gguf.tensors
    if mix is not None:
        tensors = [(t.name, t.shape, t.ggml_type) for t in weights.values()]
        isq = _in_situ(mix, tensors, config, gguf.architecture, progress)
        weights = {name: isq(t) for name, t in weights.items()}
    model, args = _build(path, arch, config, weights, ops)
    tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata, path)
    source = gguf.metadata.get("tokenizer.chat_template") or get_architecture(arch).default_chat_template
    template = ChatTemplate(source, tokenizer.bos_token, tokenizer.eos_token) if source else None
    return LoadedModel(
        path.stem, path, model, tokenizer, template, args.context_length, recommended_sampling(metadata=gguf.metadata)
    )


def _load_directory(path: Path, ops, mix=None, progress=None) -> LoadedModel:
    config = safetensors_dir.read_config(path)
    model_type = config.get("model_type") or (config.get("architectures") or [""])[0]
    arch = HF_MODEL_TYPES.get(model_type)
    if arch is None:
        raise ModelLoadError(path, f"unsupported architecture {model_type!r}")
    names = get_architecture(arch).hf_names
    transform = None
    if mix is not None:
        dtypes = {"BF16": QT.BF16, "F16": QT.F16}
        listed = safetensors_dir.tensor_list(path, names)
        tensors = [(name, shape, dtypes.get(dtype, QT.F32)) for name, shape, dtype, _, _ in listed]
        transform = _in_situ(mix, tensors, config, arch, progress)
    weights = safetensors_dir.load_weights(path, names, transform)
    model, args = _build(path, arch, config, weights, ops)
    tokenizer = Tokenizer.from_directory(path)
    template = None
    source = template_source(path) or get_architecture(arch).default_chat_template
    if source:
        template = ChatTemplate(source, tokenizer.bos_token, tokenizer.eos_token)
    generation_config = read_json(path / "generation_config.json")
    embedding = None
    if getattr(model, "is_encoder", False):
        embedding = EmbeddingConfig.of_directory(path, args.hidden_size, args.context_length)
    return LoadedModel(
        path.name,
        path,
        model,
        tokenizer,
        template,
        args.context_length,
        recommended_sampling(generation_config=generation_config),
        embedding,
    )


def template_source(directory: Path) -> str | None:
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = read_json(directory / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: take "default"
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template
