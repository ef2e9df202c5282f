"""The OpenAI-compatible server: `make_app(engine, settings)` gives a tornado Application."""

from mistralcli.server.app import make_app, routes
from mistralcli.server.base import APIError, ServerSettings, ServerState

__all__ = ["APIError", "ServerSettings", "ServerState", "make_app", "routes"]
