"""Models from the Hugging Face hub, through huggingface_hub (its cache, resumable downloads, HF_TOKEN).

A spec is `org/name` (a GGUF repo: the GGUF of the default quant, Q4_K_M, when it has several; a safetensors repo:
its weights, config and tokenizer), `org/name:QUANT` (the GGUF of that quant, as `llama.cpp -hf` reads it), or
`org/name/path/file.gguf`. A split GGUF (`...-00001-of-00003.gguf`) is fetched whole. Offline (HF_HUB_OFFLINE=1,
or the hub out of reach) the files come from the cache, or the error says what is missing from it."""

import fnmatch
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from mistralcli.errors import MistralError

DEFAULT_QUANT = "Q4_K_M"
SAFETENSORS_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model"]
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
_QUANT = re.compile(
    r"(?<![A-Z0-9])(I?Q\d_K_(?:XXS|XS|S|M|L)|IQ\d_(?:XXS|XS|S|M|NL)|I?Q\d_K|Q\d_\d|TQ\d_\d|BF16|F16|F32|MXFP4)"
    r"(?![A-Z0-9])",
)


@dataclass(frozen=True)
class HubSpec:
    repo: str
    quant: str | None = None  # "Q4_K_M"; None: the default
    filename: str | None = None  # a file in the repo

    def __str__(self) -> str:
        if self.filename:
            return f"{self.repo}/{self.filename}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


def parse_spec(spec: str) -> HubSpec | None:
    """The hub spec `spec` reads as, or None when it is not one (a local path)."""
    if spec.startswith((".", "/", "~")) or "\\" in spec:
        return None
    base, _, quant = spec.partition(":")
    parts = base.split("/")
    if len(parts) < 2 or not all(parts) or (quant and len(parts) > 2):
        return None
    if not all(re.fullmatch(r"[\w.-]+", p) for p in parts[:2]) or (quant and not re.fullmatch(r"[\w.-]+", quant)):
        return None
    return HubSpec("/".join(parts[:2]), quant.upper() or None, "/".join(parts[2:]) or None)


def quant_of(filename: str) -> str | None:
    """The quant name in a GGUF file's name (Q4_K_M, IQ4_XS, Q8_0, BF16, ...), or None."""
    found = _QUANT.findall(Path(filename).name.upper())
    return found[-1] if found else None


def gguf_files(files: list[str]) -> list[str]:
    """The model GGUFs among a repo's files (not the multimodal projectors)."""
    return sorted(f for f in files if f.endswith(".gguf") and "mmproj" not in Path(f).name.lower())


def choose(files: list[str], spec: HubSpec, pattern: str | None = None) -> list[str]:
    """The files to fetch for spec from a repo's file list: the GGUF (every shard of a split one) or the
    safetensors model's files. Raises MistralError naming what the repo has."""
    ggufs = gguf_files(files)
    if pattern is not None:
        matched = [f for f in files if fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(Path(f).name, pattern)]
        if not matched:
            raise MistralError(f"{spec.repo}: no file matches {pattern!r} (it has {_listing(files)})")
        return _with_shards(matched, files)
    if spec.filename is not None:
        if spec.filename not in files:
            raise MistralError(f"{spec.repo}: no file {spec.filename!r} (it has {_listing(files)})")
        return _with_shards([spec.filename], files)
    if spec.quant is None and (not ggufs or any(f.endswith(".safetensors") for f in files)):
        if not any(f.endswith(".safetensors") for f in files):
            raise MistralError(f"{spec.repo}: no GGUF and no safetensors weights (it has {_listing(files)})")
        return [f for f in files if any(fnmatch.fnmatch(Path(f).name, p) for p in SAFETENSORS_PATTERNS)]
    if not ggufs:
        raise MistralError(f"{spec.repo}: no GGUF files, so no {spec.quant} (it has {_listing(files)})")
    wanted = spec.quant or DEFAULT_QUANT
    picked = [f for f in ggufs if quant_of(f) == wanted]
    if not picked and spec.quant is None:
        picked = ggufs[:1]  # as llama.cpp's -hf: without Q4_K_M, the first GGUF
    if not picked:
        raise MistralError(f"{spec.repo}: no {wanted} GGUF; it has {', '.join(quants(files)) or _listing(ggufs)}")
    first = [f for f in picked if not _SHARD.search(f) or _SHARD.search(f)[1] == "00001"][:1] or picked[:1]
    return _with_shards(first, files)


def quants(files: list[str]) -> list[str]:
    """The quants a repo's GGUFs come in."""
    return sorted({q for q in map(quant_of, gguf_files(files)) if q})


def _with_shards(chosen: list[str], files: list[str]) -> list[str]:
    out = []
    for name in chosen:
        match = _SHARD.search(name)
        if match is None:
            out.append(name)
            continue
        stem = name[: match.start()]
        out += sorted(f for f in files if f.startswith(stem) and _SHARD.search(f) and len(f) == len(name))
    return sorted(set(out), key=out.index)


def _listing(files: list[str], most: int = 8) -> str:
    names = sorted(files)
    shown = ", ".join(names[:most]) + (f", and {len(names) - most} more" if len(names) > most else "")
    return shown or "no files"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_files(repo: str, revision: str | None = None) -> list[str] | None:
    """The files of repo's cached snapshot (the revision's, else the newest), or None when it is not cached."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return None
    for cached in cache.repos:
        if cached.repo_id != repo or cached.repo_type != "model" or not cached.revisions:
            continue
        revisions = list(cached.revisions)
        if revision is not None:
            revisions = [r for r in revisions if r.commit_hash.startswith(revision) or revision in r.refs]
            if not revisions:
                return None
        newest = max(revisions, key=lambda r: r.last_modified)
        snapshot = Path(newest.snapshot_path)
        return sorted(str(Path(f.file_path).relative_to(snapshot)) for f in newest.files)
    return None


def pull(spec: HubSpec, revision: str | None = None, pattern: str | None = None, token: str | None = None) -> Path:
    """The local path of spec's model (a GGUF file, its first shard, or a snapshot directory), downloaded into the
    hub cache where it is not there (progress on stderr). Raises MistralError."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    reason = "HF_HUB_OFFLINE is set" if offline() else None
    files = None
    if reason is None:
        try:
            files = HfApi().list_repo_files(spec.repo, revision=revision, token=token)
        except GatedRepoError:
            raise MistralError(
                f"{spec.repo}: gated repository; accept its terms on huggingface.co and set HF_TOKEN (or mistral login)"
            ) from None
        except RepositoryNotFoundError:
            raise MistralError(
                f"{spec.repo}: no such repository on the Hugging Face hub (or it is private: set HF_TOKEN)"
            ) from None
        except RevisionNotFoundError:
            raise MistralError(f"{spec.repo}: no revision {revision!r}") from None
        except (OfflineModeIsEnabled, HfHubHTTPError, *_network_errors()) as exc:
            reason = f"the hub could not be reached ({type(exc).__name__})"
    if files is None:  # offline: what the cache has
        files = cached_files(spec.repo, revision)
        if files is None:
            where = f" at revision {revision}" if revision else ""
            raise MistralError(f"{spec}: {spec.repo}{where} is not in the Hugging Face cache and {reason}")
        try:
            chosen = choose(files, spec, pattern)
        except MistralError as exc:
            raise MistralError(f"{exc} in the Hugging Face cache, and {reason}") from None
    else:
        chosen = choose(files, spec, pattern)
    paths = []
    bar = _progress_class()
    for name in chosen:
        try:
            paths.append(
                Path(
                    hf_hub_download(
                        spec.repo,
                        name,
                        revision=revision,
                        token=token,
                        local_files_only=reason is not None,
                        tqdm_class=bar,
                    )
                )
            )
        except LocalEntryNotFoundError:
            raise MistralError(f"{spec.repo}/{name}: not in the Hugging Face cache and {reason}") from None
        except GatedRepoError:
            raise MistralError(f"{spec.repo}: gated repository; accept its terms and set HF_TOKEN") from None
        except (HfHubHTTPError, *_network_errors()) as exc:
            raise MistralError(f"{spec.repo}/{name}: download failed ({exc}); run it again to resume") from None
    if not any(n.endswith(".gguf") for n in chosen):
        return paths[0].parent if paths else Path()
    return paths[0]


def _network_errors() -> tuple:
    """The errors of a connection that failed, from whichever HTTP client this huggingface_hub uses (httpx2 in
    2.x, httpx in 1.x, requests before: its errors are OSErrors)."""
    import importlib

    errors = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _progress_class():
    """A rich progress bar for huggingface_hub's downloads on a terminal (stderr; none with NO_COLOR's colours),
    else its own bars off (a log on a pipe is no place for them)."""
    if not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
        return None
    from rich.console import Console
    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm_rich

    class RichBar(tqdm_rich):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("options", {"console": Console(stderr=True, no_color="NO_COLOR" in os.environ)})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TqdmExperimentalWarning)
                super().__init__(*args, **kwargs)

    return RichBar
