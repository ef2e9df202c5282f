"""mistralcli: run, serve and chat with language models from one command."""

__version__ = "0.1.0"
