"""The served model as Ollama's API describes it: GET /api/tags, /api/ps, POST /api/show, GET /api/version (its
family, parameter count, main quantization, context length, template and capabilities)."""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from mistralcli import __version__
from mistralcli.server.base import APIError
from mistralcli.server.ollama import OLLAMA_API_VERSION, OllamaHandler
from mistralcli.server.protocol import _Request


def file_identity(path) -> tuple[int, str]:
    """A model file's (or directory's) size, and a digest of its path, size and time of change: it tells files
    apart as Ollama's digest does, without reading gigabytes at start (it is not the content's sha256)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    return sum(s[1] for s in stats), digest


def model_details(state) -> dict:
    """Ollama's `details` of the served model: its format, family, parameter count and main quantization."""
    model = state.model
    weights = getattr(model, "weights", {})
    params = sum(int(np.prod(t.shape)) for t in weights.values())
    by_type: dict[str, int] = {}
    for tensor in weights.values():
        if len(tensor.shape) == 2:
            by_type[tensor.ggml_type.name] = by_type.get(tensor.ggml_type.name, 0) + int(np.prod(tensor.shape))
    family = getattr(model, "architecture", "unknown")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": _size(params),
        "quantization_level": max(by_type, key=by_type.get) if by_type else "unknown",
    }


def _size(count: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}".replace(".0", "")
    return str(count)


def _model_entry(state) -> dict:
    settings = state.settings
    name = f"{settings.model_name}:latest"
    return {
        "name": name,
        "model": name,
        "modified_at": datetime.fromtimestamp(state.created, UTC).isoformat().replace("+00:00", "Z"),
        "size": settings.model_size,
        "digest": settings.model_digest,
        "details": model_details(state),
    }


class TagsHandler(OllamaHandler):
    route = "/api/tags"

    def get(self):
        self.write_json({"models": [_model_entry(self.state)]})


class PsHandler(OllamaHandler):
    route = "/api/ps"

    def get(self):
        entry = {**_model_entry(self.state), "expires_at": "9999-12-31T23:59:59Z", "size_vram": 0}
        entry["context_length"] = self.state.context_length
        self.write_json({"models": [entry]})


class ShowRequest(_Request):
    model: Annotated[str, Field(min_length=1)] | None = None
    name: str | None = None  # the older clients' field
    verbose: bool = False


class ShowHandler(OllamaHandler):
    route = "/api/show"

    def post(self):
        request = self.parse(ShowRequest)
        name = request.model or request.name
        if not name:
            raise APIError(400, "model: give the model's name")
        self.check_model(name)
        settings, state = self.state.settings, self.state
        details = model_details(state)
        template = settings.chat_template.source if settings.chat_template is not None else ""
        capabilities = ["completion"] if state.engine is not None else []
        if state.embedder is not None:
            capabilities.append("embedding")
        if template and "tools" in template:
            capabilities.append("tools")
        if template and any(marker in template for marker in ("<think>", "enable_thinking")):
            capabilities.append("thinking")
        parameters = "\n".join(f"{k} {v}" for k, v in sorted(settings.sampling_defaults.items()))
        family = details["family"]
        self.write_json(
            {
                "modelfile": f"FROM {settings.model_name}\n",
                "parameters": parameters,
                "template": template,
                "details": details,
                "model_info": {
                    "general.architecture": family,
                    "general.parameter_count": sum(int(np.prod(t.shape)) for t in state.model.weights.values()),
                    f"{family}.context_length": state.context_length,
                },
                "capabilities": capabilities,
                "modified_at": _model_entry(state)["modified_at"],
            }
        )


class VersionHandler(OllamaHandler):
    route = "/api/version"
    needs_key = False

    def get(self):
        self.write_json({"version": OLLAMA_API_VERSION, "mistralcli": __version__})
