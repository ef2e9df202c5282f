"""Small JSON side files of model directories (config.json, tokenizer_config.json, ...)."""

import json
from pathlib import Path

from mistralcli.errors import ModelLoadError


def read_json(path: Path) -> dict:
    """A JSON file's object, {} when the file is absent; ModelLoadError when it is broken."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(path, f"invalid JSON ({exc})") from None
