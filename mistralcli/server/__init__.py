"""The OpenAI-compatible server: `make_app(engine, settings)` gives a tornado Application."""

from mistralcli.server.app import APIError, ServerSettings, make_app, routes

__all__ = ["APIError", "ServerSettings", "make_app", "routes"]
