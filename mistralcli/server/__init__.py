"""The OpenAI-compatible server: `make_app(engine, settings)` gives a tornado Application."""

from mistralcli.server.app import APIError, ServerSettings, ServerState, make_app, routes

__all__ = ["APIError", "ServerSettings", "ServerState", "make_app", "routes"]
