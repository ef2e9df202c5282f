"""The served model as Ollama's API describes it: GET /api/tags, /api/ps, POST /api/show, GET /api/version (its
family, parameter count, main quantization, context length, template and capabilities)."""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from mistralcli import __version__
from mistralcli.loading.discovery import file_identity
from mistralcli.server.base import APIError
from mistralcli.server.ollama import OLLAMA_API_VERSION, OllamaHandler
from mistralcli.server.protocol import _Request


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
    return _entry(settings.model_name, state.created, settings.model_size, settings.model_digest, model_details(state))


def _entry(model_name: str, created: int, size: int, digest: str, details: dict) -> dict:
    name = f"{model_name}:latest"
    return {
        "name": name,
        "model": name,
        "modified_at": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
        "size": size,
        "digest": digest,
        "details": details,
    }


def _unloaded_entry(slot, created: int) -> dict:
    """A model not loaded, as its file describes it (architecture and quantization from its metadata)."""
    from mistralcli.loading.discovery import describe

    size, digest, family, quantization = 0, "", "unknown", "unknown"
    if slot.path and Path(slot.path).exists():
        size, digest = file_identity(slot.path)
        info = describe(Path(slot.path), slot.name, "")
        if info is not None:
            family, quantization = info.architecture or family, info.quantization or quantization
    details = {
        "parent_model": "",
        "format": "gguf" if slot.path.endswith(".gguf") else "safetensors",
        "family": family,
        "families": [family],
        "parameter_size": "",
        "quantization_level": quantization,
    }
    return _entry(slot.name, created, size, digest, details)


class TagsHandler(OllamaHandler):
    """Every model the server serves, loaded or not."""

    route = "/api/tags"

    def get(self):
        created = self.state.created
        entries = [
            _model_entry(s.state) if s.status == "loaded" else _unloaded_entry(s, created)
            for s in self.state.models.slots.values()
        ]
        self.write_json({"models": entries})


class PsHandler(OllamaHandler):
    """The models loaded, with when each will be unloaded (a year from now for one kept loaded, as Ollama writes
    it for keep_alive -1)."""

    route = "/api/ps"

    def get(self):
        out = []
        for slot in self.state.models.loaded():
            left = slot.expires_in()
            expires = time.time() + (left if left is not None else 365 * 86400.0)
            entry = _model_entry(slot.state)
            entry["expires_at"] = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")
            entry["size"], entry["size_vram"] = slot.memory, 0
            entry["context_length"] = slot.state.context_length
            out.append(entry)
        self.write_json({"models": out})


class ShowRequest(_Request):
    model: Annotated[str, Field(min_length=1)] | None = None
    name: str | None = None  # the older clients' field
    verbose: bool = False


class ShowHandler(OllamaHandler):
    route = "/api/show"

    async def post(self):
        request = self.parse(ShowRequest)
        name = request.model or request.name
        if not name:
            raise APIError(400, "model: give the model's name")
        await self.use_model(name)
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
